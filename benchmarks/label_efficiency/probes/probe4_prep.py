import os, sys, time, resource
os.environ.setdefault("OMP_NUM_THREADS","2")
sys.path.insert(0, "/work/wt/semi18/benchmarks/label_efficiency")
import numpy as np
import faiss; faiss.omp_set_num_threads(2)
from pool_aware import load
from curator.semihead import deskew, PcaEmbedding
from curator.semisupervised import _unit, knn_graph
from curator.index import search
t=time.time()
Xp,yp,Xt,yt = load(sys.argv[1])
Dp = deskew(Xp); Dt = deskew(Xt)
print("deskew", time.time()-t, flush=True)
np.savez(f"/tmp/semi18/{sys.argv[1]}_raw.npz", Xp=Xp, yp=yp, Xt=Xt, yt=yt, Dp=Dp, Dt=Dt)
emb = PcaEmbedding(dims=50)
src=(Dp,Dt) if sys.argv[2]=="deskew-pca" else (Xp,Xt)
emb.fit(src[0]); E = emb.transform(src[0]); Et = emb.transform(src[1])
U, Ut = _unit(E), _unit(Et)
g = knn_graph(U, 30); tn = search(U, Ut, 30)
np.savez(f"/tmp/semi18/{sys.argv[1]}_{sys.argv[2]}.npz", E=E, Et=Et, gs=g[0], gn=g[1], ts=tn[0], tn=tn[1])
r=resource.getrusage(resource.RUSAGE_SELF)
print("done", time.time()-t, r.ru_utime+r.ru_stime, flush=True)
