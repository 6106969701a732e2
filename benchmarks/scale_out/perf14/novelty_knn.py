"""perf14: novelty kNN of one 262,144-row chunk against the 1,000 labeled rows, FAISS flat vs matrix product."""
import time, sys, numpy as np, faiss
sys.path.insert(0, ".")
from curator import index
x = np.load("/tmp/curator_scale_out/10000000/x.npy", mmap_mode="r")
ref = index.normalize(np.load("/tmp/curator_scale_out/10000000/labeled.npy"))
def T(name, f):
    c0 = time.process_time(); r = f(); print(f"{name:20s} cpu {time.process_time()-c0:.2f}", flush=True); return r
chunk = T("read", lambda: index._read(x, slice(0, 1 << 18)))
ix = faiss.IndexFlatIP(128); ix.add(ref)
a = T("faiss k1", lambda: ix.search(chunk, 1))
def np1():
    out = np.empty((8192, len(ref)), np.float32); s_ = np.empty(len(chunk), np.float32); p_ = np.empty(len(chunk), np.int64)
    for s in range(0, len(chunk), 8192):
        b = np.matmul(chunk[s:s+8192], ref.T, out=out[:len(chunk[s:s+8192])])
        p = b.argmax(1); p_[s:s+8192] = p; s_[s:s+8192] = b[np.arange(len(b)), p]
    return s_, p_
b = T("numpy k1", np1)
print((a[1][:,0] == b[1]).mean(), np.abs(a[0][:,0]-b[0]).max())
T("check finite", lambda: np.isfinite(np.asarray(x[:1<<18], dtype=np.float32)).all(axis=1))
print(open("/proc/loadavg").read())
