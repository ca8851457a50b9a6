#!/usr/bin/env bash
# On the GPU machine: join SGLang's bundle from the parts that earlier calls copied to /tmp/parts-sgl and unpack
# it into /tmp/site-sgl (once per machine). Use: source bench/sglang_bundle/unpack.sh (after bench/gpu_setup.sh).
# Call k of the series carries only ".gpu-sgl/pk" and begins with
#   mkdir -p /tmp/parts-sgl && cp .gpu-sgl/p*/* /tmp/parts-sgl/
# (the folders and their count come from bench/sglang_bundle/build.sh; make the calls back to back: a reply with
# warm: false means the machine was given back and /tmp/parts-sgl is gone, so start over).
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
