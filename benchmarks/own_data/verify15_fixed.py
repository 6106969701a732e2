"""Pair P/R of the groups at the calibrated threshold (of the code that scored) and at fixed thresholds, one pool threshold for every pair, from pairs saved by verify_pairs.py:
    python verify15_fixed.py STEM WORK T1 T2 ..."""
import json, sys, numpy as np
sys.path[:0] = [str(__import__("pathlib").Path(__file__).resolve().parents[2]), str(__import__("pathlib").Path(__file__).resolve().parent)]
from pathlib import Path
from run import score_dedup
from curator.dedup import find_duplicates
stem = sys.argv[1]; work = Path(sys.argv[2])
z = np.load(stem + ".npz"); cal = json.load(open(stem + ".json"))["calibration"]
uris = z["uris"].tolist(); n = len(uris)
for t in [cal["threshold"]] + [float(x) for x in sys.argv[3:]]:
    keep = (z["s"] >= t) & (z["chroma"] <= cal["chroma_tolerance"])
    E = np.eye(1, dtype=np.float32).repeat(n, 0)
    g = find_duplicates(np.random.default_rng(0).standard_normal((n, 8)).astype(np.float32), t, pairs=(z["i"][keep], z["j"][keep]))
    r = score_dedup(g, uris, work / "images")
    print(round(t, 4), json.dumps(r))
