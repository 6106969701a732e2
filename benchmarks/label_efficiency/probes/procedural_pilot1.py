import sys, time, json, os
import numpy as np, torch
torch.set_num_threads(1)
sys.path.insert(0, "benchmarks/label_efficiency")
from run import load_procedural
from curator.models import train_classifier
t=time.time(); c=time.process_time()
Xtr,ytr,Xte,yte = load_procedural(32, 20000, 10000)
print("load", round(time.time()-t,1), round(time.process_time()-c,1), flush=True)
rng=np.random.default_rng(0)
perm=rng.permutation(len(ytr))
for n in [16, 56, 96, 160, 320, 640]:
    t=time.time(); c=time.process_time()
    m=train_classifier(Xtr[perm[:n]], ytr[perm[:n]], num_classes=8, seed=0, steps=600, channels=(8,16), augment=True, device="cpu", average=0.5)
    tt=time.time()-t; ct=time.process_time()-c
    err=m.evaluate(Xte,yte)
    print(json.dumps({"n":n,"err":err,"train_wall":round(tt,1),"train_cpu":round(ct,1),"eval_wall":round(time.time()-t-tt,1),"cpu":round(time.process_time()-c,1),"load":open("/proc/loadavg").read().split()[0]}), flush=True)
