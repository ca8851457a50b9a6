#!/usr/bin/env bash
# Sourced by bench/run.sh before each run, with the run's needs (bench/catalogue.py), where bench/offline/gpu_setup.sh
# set BENCH_BEFORE_RUN: puts what the run needs from the carried bundles on its path. A bundle may be unpacked after
# the queue starts (its parts come by a later transfer), so a run that needs it waits for it.
for need in "$@"; do
  case $need in
    vllm)  # vLLM's bundle has its own folder, first on the path of vllm runs only (its fastapi and starlette win)
      until [ -f /tmp/site-vllm/.unpacked ]; do sleep 10; done; export PYTHONPATH=/tmp/site-vllm:$PYTHONPATH ;;
    sglang)  # SGLang's likewise (bench/offline/sglang_bundle/unpack.sh); never beside vLLM's
      until [ -f /tmp/site-sgl/.unpacked ]; do sleep 10; done; export PYTHONPATH=/tmp/site-sgl:$PYTHONPATH ;;
    transferqueue)  # verl's V1 trainer imports it; last on the path, as verl's bundle lacks it
      [ -f /tmp/site-tq/.unpacked ] && export PYTHONPATH=$PYTHONPATH:/tmp/site-tq ;;
    smollm2)  # the real SmolLM2's GGUF comes in two parts (bench/offline/make_carry.sh)
      until python -c "from kit.setup.models import resolve_model_path; resolve_model_path('embedded:smollm2')" 2> /dev/null
      do sleep 10; done ;;
  esac
done
# TRL sees its own bundle and the machine's torch and transformers, never verl (last: the smollm2 check needs the kit)
[[ " $* " == *" trl "* ]] && export PYTHONPATH=/tmp/trl
