import struct, subprocess
def sect(path, name):
    out = subprocess.check_output(['readelf','-SW',path]).decode()
    for line in out.splitlines():
        line=line.replace('[ ','[')
        p=line.split()
        if len(p)>6 and p[1]==name:
            return int(p[4],16), int(p[5],16)
def containers(data, off, size):
    pos=off; end=off+size; res=[]
    while pos<end:
        magic,ver,hsz,fsz=struct.unpack_from('<IHHQ',data,pos)
        if magic!=0xBA55ED50:
            pos+=8; continue
        e=pos+hsz; eend=e+fsz; ents=[]
        while e<eend:
            kind,ever,ehsz,psz=struct.unpack_from('<HHIQ',data,e)
            arch=struct.unpack_from('<I',data,e+28)[0]
            ents.append(dict(off=e,kind=kind,arch=arch,ehsz=ehsz,psz=psz))
            e+=ehsz+psz
        assert e==eend
        res.append(dict(off=pos,hsz=hsz,fsz=fsz,ents=ents))
        pos=eend
    return res
