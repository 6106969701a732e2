"""How verified pairs become groups, compared on the pairs a run saved (``copies28/*_pairs.npz``): every
score tried (3 blurs x 5 level weights) at its own calibrated threshold, grouped three ways by
``curator.dedup.find_duplicates``:

- ``single``: a row joins a centre it has a kept edge to (find_copies before run31);
- ``veto``: ... unless any judged pair with a member scored below its threshold (complete linkage);
- ``average``: ... unless its mean margin over the members it was judged with is < 0 (find_copies now).

    PYTHONPATH=$PWD python benchmarks/dedup_quality/linkage.py copies28/mnist_pairs.npz ... > copies28/linkage_every_score.txt
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
KINDS = ("rotate", "zoom", "crop", "colour", "jpeg", "noise", "combo")


def main():
    from curator import copyverify
    from curator.dedup import find_duplicates
    from run import scores

    for path in sys.argv[1:]:
        d = dict(np.load(path, allow_pickle=True))
        syn = {k[4:]: v for k, v in d.items() if k.startswith("syn_")}
        syn.update(floor=0.0, score_table=d["syn_score_table"], sigmas=tuple(d["syn_sigmas"]))
        n, i, j, ch = len(d["origin"]), d["i"], d["j"], d["chroma"]
        E = np.random.default_rng(0).normal(size=(n, 16)).astype(np.float32)
        E /= np.linalg.norm(E, axis=1, keepdims=True)
        name, met = Path(path).stem.replace("_pairs", ""), {"single": 0, "veto": 0, "average": 0}
        for k, sigma in enumerate(syn["sigmas"]):
            level = copyverify.row_levels(n, (i, j), d["table"][:, k])
            for w in copyverify.LEVEL_WEIGHTS:
                s = copyverify.relative(d["table"][:, k], (level[i] + level[j]) / 2, w)
                c = copyverify.relative(syn["score_table"][:, k], level[syn["positions"]], w)
                cal = copyverify.calibrate({**syn, "scores": c}, n, (i, j), s)
                ok = np.linalg.norm(ch[i] - ch[j], axis=-1) <= cal["chroma_tolerance"]
                keep = (s >= cal["threshold"]) & ok
                margin = np.where(ok, s - cal["threshold"], -np.inf)
                ways = {"single": None, "veto": (i, j, np.where(margin < 0, -np.inf, margin)),
                        "average": (i, j, margin)}
                cells = []
                for way, compared in ways.items():
                    g = find_duplicates(E, min(max(cal["threshold"], 1e-6), 1.0), pairs=(i[keep], j[keep]),
                                        compared=compared)
                    r = scores(g, d["origin"], d["kind"])
                    mp, mr = min(r[f"precision_{q}"] for q in KINDS), min(r[f"recall_{q}"] for q in KINDS)
                    met[way] += mp >= 0.99 and mr >= 0.95
                    cells.append(f"{way} P {r['precision']:.3f} R {r['recall']:.3f} min {mp:.3f}/{mr:.3f}")
                print(f"{name} blur {sigma} w {w} t={cal['threshold']:.4f}: " + " | ".join(cells), flush=True)
        print(f"{name}: scores meeting P >= 0.99 and R >= 0.95 for every kind: {met}", flush=True)


if __name__ == "__main__":
    main()
