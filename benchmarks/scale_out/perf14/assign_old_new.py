"""perf14: streamed cell assignment (_assign) old vs new at a given centroid count on rows of the 10M pool.

    git show bb789be:curator/index.py > /tmp/index_old.py
    PYTHONPATH=. python benchmarks/scale_out/perf14/assign_old_new.py 3130 524288 old,new,old,new
"""
import time, sys, importlib.util, numpy as np, faiss
sys.path.insert(0, ".")
from curator import index as new
spec = importlib.util.spec_from_file_location("index_old", "/tmp/index_old.py")
old = importlib.util.module_from_spec(spec); spec.loader.exec_module(old)
x = np.load("/tmp/curator_scale_out/10000000/x.npy", mmap_mode="r")
nc = int(sys.argv[1]); n = int(sys.argv[2])
xs = x[:n]
km = faiss.Kmeans(128, nc, niter=8, spherical=True, seed=0, max_points_per_centroid=256, verbose=False)
km.train(new._read(x, new._sample(10_000_000, nc * 40, 0)))
cent = km.centroids; gram = cent @ cent.T
quant = faiss.IndexFlatIP(128); quant.add(cent)
t = 0.99 - 1e-5
res = {}
for which in sys.argv[3].split(","):
    c0, w0 = time.process_time(), time.perf_counter()
    if which == "old":
        r = old._assign(quant, xs, 8, gram, t, nc, keep_probes=True, self_join=True)
    else:
        r = new._assign(cent, xs, 8, gram, t, nc, keep_probes=True, self_join=True)
    print(which, f"cpu {time.process_time()-c0:.2f} wall {time.perf_counter()-w0:.2f}", open("/proc/loadavg").read().split()[:3], flush=True)
    res[which] = r
if len(res) == 2:
    a, b = res["old"], res["new"]
    print("home eq", (a[0] == b[0]).mean(), "open subset", not (b[5] & ~a[5]).any(), "norms maxdiff", np.abs(a[1]-b[1]).max(), "truncated", a[6], b[6], "open", a[5].sum(), b[5].sum(), (a[5]!=b[5]).sum())
    ka = np.unique(a[2]*4*nc + a[3].astype(np.int64)*4 + a[4]); kb = np.unique(b[2]*4*nc + b[3].astype(np.int64)*4 + b[4])
    print("probe entries", len(ka), len(kb), "same", np.array_equal(ka, kb), "symdiff", len(np.setxor1d(ka, kb)))
