"""Keep only the sm90 cubins (and, for sgl_kernel's FA3 module, only bf16 kernels with equal q/k and v head dims,
no softcap) in a CUDA extension's .nv_fatbin. Uses bench/vllm_bundle/fatbin2.py (parser) and trim.py (TU names).
Unlike vLLM's FA3, sgl_kernel's flash_ops stores its biggest cubins zstd-compressed: those are decompressed
(zstd CLI) only to read their TU names. Usage: trim_sgl.py SRC DST arch|fa3"""
import os, re, struct, subprocess, sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'vllm_bundle'))
from fatbin2 import sect, containers  # noqa: E402
from trim import tu_names  # noqa: E402

ZSTD = bytes.fromhex('28b52ffd')
FA3_DROP = re.compile(r'_(fp16|e4m3)_|softcap|hdimdiff|hdim\d+_\d+')


def payload_tus(b):
    if b[:4] == ZSTD:
        # the payload is padded after the zstd frame, so zstd exits 1 after writing the whole frame
        b = subprocess.run(['zstd', '-dcq'], input=b, capture_output=True).stdout
        assert b, 'zstd could not decompress a cubin'
    return tu_names(b)


def trim(src, dst, mode):
    data = bytearray(open(src, 'rb').read())
    off, size = sect(src, '.nv_fatbin')
    cs = containers(data, off, size)
    before = after = emptied = 0
    for c in cs:
        keep = []
        for e in c['ents']:
            k = e['kind'] == 2 and e['arch'] == 90  # sm90/sm90a cubins only, no PTX
            if k and mode == 'fa3':
                b = bytes(data[e['off'] + e['ehsz']:e['off'] + e['ehsz'] + e['psz']])
                k = not any(FA3_DROP.search(t) for t in payload_tus(b))
            keep.append(k)
        new = b''.join(bytes(data[e['off']:e['off'] + e['ehsz'] + e['psz']]) for e, k in zip(c['ents'], keep) if k)
        before += c['fsz']; after += len(new); emptied += not new
        start = c['off'] + c['hsz']; end = start + c['fsz']
        assert len(new) <= c['fsz'] and len(new) % 8 == 0
        data[start:start + len(new)] = new
        data[start + len(new):end] = bytes(end - start - len(new))
        struct.pack_into('<Q', data, c['off'] + 8, len(new))
    open(dst, 'wb').write(data)
    print(os.path.basename(src), mode, 'containers', len(cs), 'emptied', emptied, 'fatbin MiB', before >> 20, '->', after >> 20)


if __name__ == '__main__':
    trim(*sys.argv[1:4])
