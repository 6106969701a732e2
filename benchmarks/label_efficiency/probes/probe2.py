import time, sys, os, json
import numpy as np
sys.path.insert(0, "/work/wt/semi16")
import faiss; faiss.omp_set_num_threads(2)
from curator.semihead import PcaEmbedding, _gray
from curator.semisupervised import knn_graph, _unit
from curator.ingest.idx import iter_images, read_labels
from pathlib import Path
M=Path("/work/shared/datasets/mnist")
X = np.concatenate([b for _, b in iter_images(M / "train-images-idx3-ubyte.gz")])[:12000].reshape(-1,28,28).astype(np.float32)/255
y = read_labels(M / "train-labels-idx1-ubyte.gz")[:12000]
from sklearn.datasets import load_digits
d=load_digits(); DX=d.images.astype(np.float32)/16; Dy=d.target
for dname,(XX,yy) in {"mnist12k":(X,y),"digits":(DX,Dy)}.items():
    for name,kw in [("pca",dict()),("pca-w05",dict(whiten=0.5)),("dsk-pca",dict(deskew=True)),("dsk-pca-w05",dict(deskew=True,whiten=0.5)),("dsk-pca30-w05",dict(deskew=True,whiten=0.5,dims=30)),("dsk-pca-w03",dict(deskew=True,whiten=0.3))]:
        t=time.time()
        E=PcaEmbedding(**kw).fit(XX).transform(XX)
        s,nb=knn_graph(_unit(E),10)
        print(dname,name, "purity10", round(float((yy[nb]==yy[:,None]).mean()),4), "1nn", round(float((yy[nb[:,0]]==yy).mean()),4), round(time.time()-t,1), flush=True)
