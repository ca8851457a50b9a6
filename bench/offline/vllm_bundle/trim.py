"""Slim a CUDA extension's .nv_fatbin for the H200: trim.py SRC DST arch|fa3. `arch` keeps the sm90 cubins (or,
in a container without one, the PTX for sm90 and below); `fa3` keeps vLLM's FA3 kernels other than fp16 and fp8
(e4m3). rewrite() is shared with bench/offline/sglang_bundle/trim_sgl.py, which brings its own rule."""
import re, struct, sys
from fatbin2 import sect, containers


def tu_names(b):
    return set(m.decode() for m in re.findall(rb'_INTERNAL_[0-9a-f]{8}_\d+_([A-Za-z0-9_]+?)_cu_', b))


def payload(data, e):
    return bytes(data[e['off'] + e['ehsz']:e['off'] + e['ehsz'] + e['psz']])


def rewrite(src, dst, keep):
    """DST: SRC with, in each fatbin container, only the entries keep(container, entry, data) accepts; the freed
    bytes of each container are zeroed (its size field shrinks, the ELF layout stays)."""
    data = bytearray(open(src, 'rb').read())
    off, size = sect(src, '.nv_fatbin')
    cs = containers(data, off, size)
    before = after = emptied = 0
    for c in cs:
        flags = [keep(c, e, data) for e in c['ents']]
        new = b''.join(bytes(data[e['off']:e['off'] + e['ehsz'] + e['psz']]) for e, k in zip(c['ents'], flags) if k)
        before += c['fsz']; after += len(new); emptied += not new
        start = c['off'] + c['hsz']; end = start + c['fsz']
        assert len(new) <= c['fsz'] and len(new) % 8 == 0
        data[start:start + len(new)] = new
        data[start + len(new):end] = bytes(end - start - len(new))
        struct.pack_into('<Q', data, c['off'] + 8, len(new))
    open(dst, 'wb').write(data)
    print(src, 'containers', len(cs), 'emptied', emptied, 'fatbin bytes', before, '->', after)


def vllm_keep(mode):
    def keep(c, e, data):
        if mode == 'fa3':
            return not any(('_fp16_' in t or '_e4m3_' in t) for t in tu_names(payload(data, e)))
        if e['kind'] == 2:
            return e['arch'] == 90
        return not any(x['kind'] == 2 and x['arch'] == 90 for x in c['ents']) and e['arch'] <= 90
    return keep


if __name__ == '__main__':
    rewrite(sys.argv[1], sys.argv[2], vllm_keep(sys.argv[3]))
