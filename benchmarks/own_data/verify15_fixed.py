"""Pair precision / recall of the groups from pairs saved by ``verify_pairs.py``, one threshold for every pair:
the calibrated one of the code that scored them (its .json), then each threshold given.

    PYTHONPATH=$PWD python benchmarks/own_data/verify15_fixed.py /work/own10k/vp_base /work/own10k 0.96 0.97
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1]), str(HERE)]


def main(argv=None):
    from curator.dedup import find_duplicates
    from run import score_dedup

    argv = sys.argv[1:] if argv is None else argv
    stem, work = argv[0], Path(argv[1])
    z = np.load(stem + ".npz")
    cal = json.load(open(stem + ".json"))["calibration"]
    uris = z["uris"].tolist()
    n = len(uris)
    E = np.random.default_rng(0).standard_normal((n, 8)).astype(np.float32)  # not searched: pairs given
    for t in [cal["threshold"]] + [float(x) for x in argv[2:]]:
        keep = (z["s"] >= t) & (z["chroma"] <= cal["chroma_tolerance"])
        groups = find_duplicates(E, t, pairs=(z["i"][keep], z["j"][keep]))
        print(round(t, 4), json.dumps(score_dedup(groups, uris, work / "images")), flush=True)


if __name__ == "__main__":
    main()
