"""Probe (session 18): label propagation on cached embeddings; selection after the first 20 (margin+k-means "diverse", the curator policy, random); optional CNN self-training on the pool's pseudo-labels (--cnn N: at N labels), then propagation on the CNN embedding. Needs probe4_prep.py <data> <embedding> first (writes /tmp/semi18/*.npz)."""
import os, sys, time, json, resource, argparse
os.environ.setdefault("OMP_NUM_THREADS","2")
import numpy as np
import torch; torch.set_num_threads(2)
import faiss; faiss.omp_set_num_threads(2)
from curator.semihead import fit_head, Head
from curator.semisupervised import _unit, knn_graph
from curator.index import search
def cpu(): r=resource.getrusage(resource.RUSAGE_SELF); return r.ru_utime+r.ru_stime
ap=argparse.ArgumentParser(); ap.add_argument("--seed",type=int,default=0); ap.add_argument("--k",type=int,default=10)
ap.add_argument("--sel",default="margin"); ap.add_argument("--max",type=int,default=100); ap.add_argument("--cnn",default="")
ap.add_argument("--data",default="mnist"); ap.add_argument("--emb",default="deskew-pca")
a=ap.parse_args()
R=np.load(f"/tmp/semi18/{a.data}_raw.npz"); P=np.load(f"/tmp/semi18/{a.data}_{a.emb}.npz" if a.emb!="deskew-pca" or a.data!="mnist" else "/tmp/semi18/mnist_pca.npz")
yp,yt=R["yp"],R["yt"]; E=P["E"]
R=dict(R)
if a.data=="digits":
    from scipy import ndimage
    R["Up"]=ndimage.zoom(R["Xp"],(1,2,2),order=1); R["Ut"]=ndimage.zoom(R["Xt"],(1,2,2),order=1)
g=(P["gs"][:,:a.k],P["gn"][:,:a.k]); tn=(P["ts"][:,:a.k],P["tn"][:,:a.k])
rows=[json.loads(l) for l in open("/work/wt/semi18/benchmarks/label_efficiency/pool_aware.jsonl")]
first=[r for r in rows if r["data"]==a.data and r["embedding"]==a.emb and r["run"]=="typical" and r["seed"]==a.seed and r["n_labels"]==20][0]["picked"]
labeled=list(first); C=10
def head_of(labeled, graph=g, Emb=E):
    y=np.full(len(yp),-1); y[labeled]=yp[labeled]
    return fit_head(Emb,y,classes=C,k=a.k,neighbours=graph)
def select(h, labeled, budget, rng):
    p=np.sort(h.probs,1); unc=1-(p[:,-1]-p[:,-2]); unc[labeled]=-1
    if a.sel=="random": 
        free=np.setdiff1d(np.arange(len(yp)),labeled); return rng.choice(free,budget,replace=False)
    if a.sel=="curator":
        from curator import Pool, policies
        free=np.setdiff1d(np.arange(len(yp)),labeled)
        pool=Pool(embeddings=E[free], probs=h.probs[free], labeled_embeddings=E[labeled])
        return free[policies.get("curator").select(pool, budget=budget, seed=a.seed*1000+len(labeled))]
    cand=np.argsort(-unc)[:budget*20]
    if a.sel=="margin": return cand[:budget]
    # diversity: kmeans on candidates, most uncertain per cluster
    km=faiss.Kmeans(E.shape[1],budget,niter=20,seed=1); X=_unit(E[cand]); km.train(X)
    _,asg=km.index.search(X,1); asg=asg[:,0]; out=[]
    for c in range(budget):
        m=cand[asg==c]
        if len(m): out.append(m[np.argmax(unc[m])])
    rest=[i for i in cand if i not in out]; out+=rest[:budget-len(out)]
    return np.array(out)
rng=np.random.default_rng(a.seed)
t0,c0=time.time(),cpu()
while True:
    h=head_of(labeled)
    te=float((h.predict_proba(neighbours=tn).argmax(1)!=yt).mean()); pe=float((h.probs.argmax(1)!=yp).mean())
    print(json.dumps({"seed":a.seed,"sel":a.sel,"k":a.k,"n":len(labeled),"lp_test":round(te,4),"lp_pool":round(pe,4),"cpu":round(cpu()-c0,1),"wall":round(time.time()-t0,1)}),flush=True)
    if a.cnn and len(labeled) in [int(x) for x in a.cnn.split(",")]:
        from curator.models.cnn import train_classifier
        for it in range(int(os.environ.get("ITERS","2"))):
            n=len(yp); w=h.confidence.astype(np.float32).copy(); lab=h.probs.argmax(1); lab[labeled]=yp[labeled]; w[labeled]=w.mean()*50/ max(1,len(labeled)/20)
            tc=cpu()
            m=train_classifier(R[os.environ.get("IMG","Dp")], lab, num_classes=C, seed=a.seed, steps=int(os.environ.get("STEPS","900")), augment=bool(int(os.environ.get("AUG","1"))), batch_size=128, sample_weight=w, average=0.3)
            print("cnn trained",round(cpu()-tc,1),flush=True)
            Pp=np.asarray(m.predict_proba(R[os.environ.get("IMG","Dp")])); Pt=np.asarray(m.predict_proba(R[os.environ.get("IMG","Dp").replace("p","t")]))
            ce=float((Pt.argmax(1)!=yt).mean()); cpe=float((Pp.argmax(1)!=yp).mean())
            # re-propagate on CNN features (embedding)
            Fp=np.asarray(m.embed(R[os.environ.get("IMG","Dp")])); Ft=np.asarray(m.embed(R[os.environ.get("IMG","Dp").replace("p","t")]))
            Up,Ut=_unit(Fp),_unit(Ft); g2=knn_graph(Up,a.k); tn2=search(Up,Ut,a.k)
            h2=head_of(labeled,g2,Fp)
            te2=float((h2.predict_proba(neighbours=tn2).argmax(1)!=yt).mean()); pe2=float((h2.probs.argmax(1)!=yp).mean())
            print(json.dumps({"seed":a.seed,"n":len(labeled),"it":it,"cnn_test":ce,"cnn_pool":cpe,"lp2_test":te2,"lp2_pool":pe2,"purity2":float((yp[g2[1]]==yp[:,None]).mean()),"cpu":round(cpu()-c0,1)}),flush=True)
            h=h2
    if len(labeled)>=a.max: break
    labeled+= [int(i) for i in select(h,labeled,10,rng)]
