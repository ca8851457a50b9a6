"""Keep only the sm90 cubins (and, for sgl_kernel's FA3 module, only bf16 kernels with equal q/k and v head dims,
no softcap) in a CUDA extension's .nv_fatbin. Uses bench/offline/vllm_bundle/trim.py (its fatbin rewrite and TU names).
Unlike vLLM's FA3, sgl_kernel's flash_ops stores its biggest cubins zstd-compressed: those are decompressed
(zstd CLI) only to read their TU names. Usage: trim_sgl.py SRC DST arch|fa3"""
import os, re, subprocess, sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'vllm_bundle'))
from trim import payload, rewrite, tu_names  # noqa: E402

ZSTD = bytes.fromhex('28b52ffd')
FA3_DROP = re.compile(r'_(fp16|e4m3)_|softcap|hdimdiff|hdim\d+_\d+')


def payload_tus(b):
    if b[:4] == ZSTD:
        # the payload is padded after the zstd frame, so zstd exits 1 after writing the whole frame
        b = subprocess.run(['zstd', '-dcq'], input=b, capture_output=True).stdout
        assert b, 'zstd could not decompress a cubin'
    return tu_names(b)


def sgl_keep(mode):
    def keep(c, e, data):
        k = e['kind'] == 2 and e['arch'] == 90  # sm90/sm90a cubins only, no PTX
        return k and not (mode == 'fa3' and any(FA3_DROP.search(t) for t in payload_tus(payload(data, e))))
    return keep


if __name__ == '__main__':
    rewrite(sys.argv[1], sys.argv[2], sgl_keep(sys.argv[3]))
