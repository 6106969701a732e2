import sys, time, json, importlib.util
import numpy as np, torch
torch.set_num_threads(1)
from curator.models import train_classifier
spec = importlib.util.spec_from_file_location("g", "datasets/procedural_rgb/generate.py")
g = importlib.util.module_from_spec(spec); spec.loader.exec_module(g)
def draw(n, seed, variant):
    rng=np.random.default_rng(seed); y=np.arange(n)%8; X=np.empty((n,32,32,3),np.uint8)
    for i,c in enumerate(y):
        p=g._random_params(rng, g.CLASSES[c]); p["size"]=[32,32]
        if variant=="plain": p["bg"]["kind"]="gradient"; p["bg"]["c1"]=p["bg"]["c0"]
        if variant=="gradient": p["bg"]["kind"]="gradient"
        X[i]=np.asarray(g.render(p))
    return X,y
for variant in sys.argv[1:]:
    Xtr,ytr=draw(3000,1,variant); Xte,yte=draw(2000,2,variant)
    for n in [56, 160, 320]:
        t=time.time(); c=time.process_time()
        m=train_classifier(Xtr[:n], ytr[:n], num_classes=8, seed=0, device="cpu", average=0.5, steps=600, channels=(8,16), augment=True)
        print(json.dumps({"v":variant,"n":n,"err":m.evaluate(Xte,yte),"wall":round(time.time()-t,1),"cpu":round(time.process_time()-c,1),"load":open("/proc/loadavg").read().split()[0]}), flush=True)
