#!/usr/bin/env bash
# Build .gpu-sgl/sglang.tar.xz (SGLang 0.5.14 slimmed for sm90/bf16, see README.md) and split it into
# .gpu-sgl/p1, p2, ... (at most 60 MiB each, one folder per transfer to the GPU machine).
# Run from the project root on an x86-64 machine with pip, binutils (readelf), zstd, xz and patch.
# WORK=/some/dir keeps the downloaded wheels there between runs (default: a temporary folder).
set -euo pipefail
root=$(git rev-parse --show-toplevel); here=$root/bench/offline/sglang_bundle; cd "$root"
work=${WORK:-$(mktemp -d)}; mkdir -p "$work"
[ -n "${WORK:-}" ] || trap 'rm -rf "$work"' EXIT
unset PIP_FIND_LINKS PIP_INDEX_URL PIP_EXTRA_INDEX_URL; export PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1
plat=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
      --platform manylinux_2_24_x86_64 --platform manylinux_2_31_x86_64 --platform manylinux_2_34_x86_64
      --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 --platform any)
python3 -m pip download -q --no-deps "${plat[@]}" -d "$work/wheels" -r "$here/reqs.txt"
s=$work/site; rm -rf "$s"
python3 -m pip install -q --no-deps --ignore-requires-python "${plat[@]}" --target "$s" --no-index --find-links "$work/wheels" -r "$here/reqs.txt"

# --- drop what the text-only serving path never imports -------------------------------------------------
rm -rf "$s/bin" "$s/share" "$s/test" "$s/tools" "$s/sglang/multimodal_gen" "$s/sglang/test" "$s/sglang/benchmark" "$s/sglang/jit_kernel/benchmark" \
       "$s/sglang/jit_kernel/diffusion" "$s/sglang/srt/grpc" \
       "$s/sgl_kernel/sm100" "$s/sgl_kernel/testing" \
       "$s/xgrammar/lib" "$s/pycountry/locales" "$s/mistral_common/data" "$s"/torch_memory_saver_hook_mode_*_cu12.abi3.so
rm -f "$s/torch_memory_saver_hook_mode_preload.abi3.so" "$s/torch_memory_saver_hook_mode_torch.abi3.so"  # ROCm builds
find "$s" -name __pycache__ -type d -prune -exec rm -rf {} +
find "$s" -name '*.a' -delete
# host-only extensions ship DWARF (xgrammar, nvtx, ...): strip it; CUDA extensions (with .nv_fatbin) stay as built
find "$s" -name '*.so*' -type f | while read -r f; do
  readelf -SW "$f" 2>/dev/null | grep -q nv_fatbin || strip --strip-debug "$f" 2>/dev/null || true
done

# --- sm90 only: sgl_kernel's FA3 module keeps bf16 kernels with equal q/k and v head dims, no softcap -----
k=$s/sgl_kernel
python3 "$here/trim_sgl.py" "$k/flash_ops.abi3.so" "$k/flash_ops.abi3.so" fa3
python3 "$here/trim_sgl.py" "$k/sm90/common_ops.abi3.so" "$k/sm90/common_ops.abi3.so" arch
python3 "$here/trim_sgl.py" "$k/flashmla_ops.abi3.so" "$k/flashmla_ops.abi3.so" arch

# --- transformers 5.17 (the device's) already registers qwen3_asr: sglang's register() must not raise ------
patch -s -p0 -d "$s" < "$here/sglang.patch"

mkdir -p .gpu-sgl
tar -cf - -C "$s" --sort=name --owner=0 --group=0 . | xz -T0 -6 > .gpu-sgl/sglang.tar.xz
rm -rf .gpu-sgl/p[0-9]*
split -b 60M -d -a 2 .gpu-sgl/sglang.tar.xz .gpu-sgl/sglang.tar.xz.part-
i=0; for p in .gpu-sgl/sglang.tar.xz.part-*; do i=$((i+1)); mkdir -p .gpu-sgl/p$i; mv "$p" .gpu-sgl/p$i/; done
sha256sum .gpu-sgl/sglang.tar.xz | cut -d' ' -f1 > .gpu-sgl/p$i/sglang.tar.xz.sha256  # unpack.sh checks the joined parts
ex=$(git rev-parse --git-path info/exclude)
for d in /.gpu-sgl/ /.gpu-vllm/; do grep -qx "$d" "$ex" 2>/dev/null || echo "$d" >> "$ex"; done
ls -la .gpu-sgl/sglang.tar.xz .gpu-sgl/p*/
