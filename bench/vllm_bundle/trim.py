import sys, re, struct
sys.path.insert(0,'/tmp/work')
from fatbin2 import sect, containers
def tu_names(b):
    return set(m.decode() for m in re.findall(rb'_INTERNAL_[0-9a-f]{8}_\d+_([A-Za-z0-9_]+?)_cu_', b))
def trim(src, dst, mode):
    data = bytearray(open(src,'rb').read())
    off,size = sect(src,'.nv_fatbin')
    cs = containers(data, off, size)
    before=after=0; emptied=0
    for c in cs:
        ents=c['ents']
        has_c90 = any(e['kind']==2 and e['arch']==90 for e in ents)
        keep=[]
        for e in ents:
            if mode=='arch':
                if e['kind']==2: k = e['arch']==90
                else: k = (not has_c90) and e['arch']<=90
            elif mode=='fa3':
                b=bytes(data[e['off']+e['ehsz']:e['off']+e['ehsz']+e['psz']])
                tus=tu_names(b)
                k = not any(('_fp16_' in t or '_e4m3_' in t) for t in tus)
            keep.append(k)
        blobs=[bytes(data[e['off']:e['off']+e['ehsz']+e['psz']]) for e,k in zip(ents,keep) if k]
        new=b''.join(blobs)
        before+=c['fsz']; after+=len(new)
        if not blobs: emptied+=1
        start=c['off']+c['hsz']; end=start+c['fsz']
        assert len(new)<=c['fsz'] and len(new)%8==0
        data[start:start+len(new)]=new
        data[start+len(new):end]=bytes(end-start-len(new))
        struct.pack_into('<Q', data, c['off']+8, len(new))
    open(dst,'wb').write(data)
    print(src, 'containers',len(cs),'emptied',emptied,'fatbin bytes',before,'->',after)
if __name__=='__main__':
    trim(sys.argv[1], sys.argv[2], sys.argv[3])
