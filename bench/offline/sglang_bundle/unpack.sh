#!/usr/bin/env bash
# On the GPU machine: join SGLang's bundle from the parts that earlier transfers copied to /tmp/parts-sgl and unpack
# it into /tmp/site-sgl (once per machine). Use: source bench/offline/sglang_bundle/unpack.sh (after
# bench/offline/gpu_setup.sh). Transfer k of the series carries only ".gpu-sgl/pk" and begins with
#   mkdir -p /tmp/parts-sgl && cp .gpu-sgl/p*/* /tmp/parts-sgl/
# (the folders and their count come from bench/offline/sglang_bundle/build.sh; /tmp/parts-sgl lives only as long as
# the machine: on a fresh one, start over).
# SGLang runs then put /tmp/site-sgl first: PYTHONPATH=/tmp/site-sgl:/tmp/site:$PWD (like /tmp/site-vllm for vLLM).
if [ ! -f /tmp/site-sgl/.unpacked ]; then
  (
    set -e
    cd /tmp/parts-sgl
    if [ -f sglang.tar.xz.sha256 ]; then
      got=$(cat sglang.tar.xz.part-* | sha256sum | cut -d' ' -f1)
      [ "$got" = "$(cut -d' ' -f1 sglang.tar.xz.sha256)" ] || { echo "sglang bundle: parts missing or corrupt: $(ls)" >&2; exit 1; }
    fi
    rm -rf /tmp/site-sgl && mkdir -p /tmp/site-sgl
    cat sglang.tar.xz.part-* | xz -dc -T0 | tar -x -C /tmp/site-sgl
    touch /tmp/site-sgl/.unpacked
  ) && rm -rf /tmp/parts-sgl
fi
if [ -f /tmp/site-sgl/.unpacked ]; then
  case ":${PYTHONPATH:-}:" in *:/tmp/site-sgl:*) ;; *) export PYTHONPATH=/tmp/site-sgl${PYTHONPATH:+:$PYTHONPATH} ;; esac
fi
