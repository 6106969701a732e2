import sys, time, json
import numpy as np, torch
torch.set_num_threads(1)
sys.path.insert(0, "benchmarks/label_efficiency")
from run import load_procedural
from curator.models import train_classifier
Xtr,ytr,Xte,yte = load_procedural(32, 4000, 2000)
rng=np.random.default_rng(0); perm=rng.permutation(len(ytr))
n=320
for name, kw in [("steps2000", dict(steps=2000, channels=(8,16))), ("ch16_32", dict(steps=600, channels=(16,32))), ("noaug", dict(steps=600, channels=(8,16), augment=False))]:
    kw.setdefault("augment", True)
    t=time.time(); c=time.process_time()
    m=train_classifier(Xtr[perm[:n]], ytr[perm[:n]], num_classes=8, seed=0, device="cpu", average=0.5, **kw)
    print(json.dumps({"v":name,"n":n,"train_err":m.evaluate(Xtr[perm[:n]], ytr[perm[:n]]),"err":m.evaluate(Xte,yte),"wall":round(time.time()-t,1),"cpu":round(time.process_time()-c,1),"load":open("/proc/loadavg").read().split()[0]}), flush=True)
