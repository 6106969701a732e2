"""perf14: in-cell search of one 10M-sized cell (triangle + full probes), old vs new code, CPU ms."""
import time, sys, importlib.util, numpy as np
sys.path.insert(0, ".")
from curator import index as new
spec = importlib.util.spec_from_file_location("index_old", "/tmp/index_old.py")
old = importlib.util.module_from_spec(spec); spec.loader.exec_module(old)
x = np.load("/tmp/curator_scale_out/10000000/x.npy", mmap_mode="r")
rng = np.random.default_rng(0)
# a realistic cell: rows near one row (same cluster) — take rows by similarity to a seed among a sample
samp = new._read(x, np.sort(rng.choice(10_000_000, 400_000, replace=False)))
cell = samp[np.argsort(-(samp @ samp[0]))[:3200]].copy()
q = samp[np.argsort(-(samp @ samp[1]))[:2200]].copy()
t = 0.99 - 1e-5
for which, m in (("old", old), ("new", new), ("old", old), ("new", new)):
    c0 = time.process_time()
    for _ in range(5):
        a = m._block_self(cell, t); b = m._block_range(cell, q, t)
    print(which, f"{(time.process_time()-c0)/5*1000:.0f} ms", len(a[0]), len(b[0]), flush=True)
idx = np.sort(rng.choice(10_000_000, 3200, replace=False))
c0 = time.process_time(); new._read(x, idx); print("gather 3200 rows", (time.process_time()-c0)*1000, "ms")
print(open("/proc/loadavg").read())
