import time, sys, os, json
import numpy as np
sys.path.insert(0, "/work/wt/semi16")
import faiss; faiss.omp_set_num_threads(1)
from curator.semihead import PcaEmbedding, fit_head
from curator.semisupervised import knn_graph, _unit
from curator import Pool, policies
from curator.ingest.idx import iter_images, read_labels
from pathlib import Path
import scipy.sparse as sp
from scipy.sparse.linalg import eigsh
M=Path("/work/shared/datasets/mnist")
X = np.concatenate([b for _, b in iter_images(M / "train-images-idx3-ubyte.gz")])[:12000].reshape(-1,28,28).astype(np.float32)/255
y = read_labels(M / "train-labels-idx1-ubyte.gz")[:12000].astype(np.int64)
E=PcaEmbedding(deskew=True).fit(X).transform(X)
U=_unit(E); s,nb=knn_graph(U,10)
n=len(U); rows=np.repeat(np.arange(n),10); W=sp.csr_matrix((np.maximum(s.ravel(),0)**3,(rows,nb.ravel())),shape=(n,n)); W=W+W.T
d=np.asarray(W.sum(1)).ravel(); Dm=sp.diags(1/np.sqrt(d)); S=Dm@W@Dm
t=time.time(); vals,vecs=eigsh(S,k=31,which="LA"); print("eigsh",time.time()-t,vals[-5:],flush=True)
order=np.argsort(-vals); vecs=vecs[:,order]; vals=vals[order]
def ev(name,Emb):
    for seed in (0,1):
        idx=policies.get("typical").select(Pool(embeddings=Emb),budget=20,seed=seed)
        lab=np.full(n,-1); lab[idx]=y[idx]
        for gname,G in (("pca-graph",(s,nb)),("own-graph",None)):
            h=fit_head(Emb if G is None else E,lab,classes=10,neighbours=G)
            print(name,seed,gname,"classes",len(set(y[idx])),"pool_err",round(float((h.probs.argmax(1)!=y).mean()),4),flush=True)
ev("dsk-pca",E)
for k in (10,20,30):
    Z=vecs[:,1:k+1]*(1/np.sqrt(d))[:,None]  # random-walk eigenvectors
    ev(f"spectral{k}",Z.astype(np.float32))
