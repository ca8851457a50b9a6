#!/usr/bin/env bash
# Rebuild .gpu-vllm/vllm.tar.xz: vLLM 0.24.0 slimmed for sm90/bf16 as README.md here describes (this folder holds
# the pieces: final_reqs.txt, trim.py + fatbin2.py, sampler.patch; this script strings them together).
# bench/offline/gpu_setup.sh unpacks it into /tmp/site-vllm. Run from the project root; WORK=/dir keeps the wheels.
set -euo pipefail
root=$(git rev-parse --show-toplevel); v=$root/bench/offline/vllm_bundle; cd "$root"
work=${WORK:-$(mktemp -d)}; mkdir -p "$work"
[ -n "${WORK:-}" ] || trap 'rm -rf "$work"' EXIT
unset PIP_FIND_LINKS PIP_INDEX_URL PIP_EXTRA_INDEX_URL; export PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1
plat=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
      --platform manylinux_2_24_x86_64 --platform manylinux_2_31_x86_64 --platform manylinux_2_5_x86_64
      --platform manylinux1_x86_64 --platform any)
python3 -m pip download -q --no-deps "${plat[@]}" -d "$work/wheels" vllm==0.24.0 -r "$v/final_reqs.txt"
s=$work/site; rm -rf "$s"
python3 -m pip install -q --no-deps --ignore-requires-python "${plat[@]}" --target "$s" --no-index --find-links "$work/wheels" vllm==0.24.0 -r "$v/final_reqs.txt"
m=$s/vllm
rm -rf "$s/bin" "$m/vllm_flash_attn/_vllm_fa2_C.abi3.so" "$m/_moe_C_stable_libtorch.abi3.so" "$m/_qutlass_C.abi3.so" \
       "$m/_flashmla_C.abi3.so" "$m/_flashmla_extension_C.abi3.so" "$m/_rust_tool_parser.abi3.so" "$m/vllm-rs" \
       "$m/third_party/deep_gemm" "$m/third_party/fmha_sm100"
find "$s" -name __pycache__ -type d -prune -exec rm -rf {} +
python3 "$v/trim.py" "$m/_C_stable_libtorch.abi3.so" "$m/_C_stable_libtorch.abi3.so" arch
python3 "$v/trim.py" "$m/vllm_flash_attn/_vllm_fa3_C.abi3.so" "$m/vllm_flash_attn/_vllm_fa3_C.abi3.so" fa3
patch -s -p0 -d "$m" < "$v/sampler.patch"
mkdir -p .gpu-vllm
tar -cf - -C "$s" --sort=name --owner=0 --group=0 . | xz -T0 -6 > .gpu-vllm/vllm.tar.xz
ex=$(git rev-parse --git-path info/exclude); grep -qx '/.gpu-vllm/' "$ex" 2>/dev/null || echo '/.gpu-vllm/' >> "$ex"
ls -la .gpu-vllm/vllm.tar.xz
