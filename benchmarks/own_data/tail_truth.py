"""How right the calibration's two estimates were on a generated pool, against the generator's manifest: for
every score it tries (blur x level weight), the distinct rows it expects above its threshold and the rows
there whose best candidate is really distinct; and, for one score, the rows' best scores by bin, split into
distinct rows and copy rows, beside the copy rows the synthetic copies' shape predicts there. A diagnosis
(it reads the truth), not part of curator.

    PYTHONPATH=$PWD python benchmarks/own_data/tail_truth.py /work/own30k/verify_record_30000.npz \
        --images /work/own30k/images [--seed 0] [--histogram 0]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1]), str(HERE)]

EDGES = (0.8, 0.85, 0.9, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.985, 0.99, 0.995, 0.998, 1.0001)


def origins(uris, images: Path) -> np.ndarray:
    at = {u: i for i, u in enumerate(uris)}
    out = np.full(len(uris), -1, np.int64)
    with open(images / "manifest.jsonl") as fh:
        for line in fh:
            r = json.loads(line)
            k = at.get(str((images / r["file"]).resolve()))
            if k is not None:
                out[k] = r["of"] if r["role"] == "copy" else r["id"]
    return out


def best_rows(n: int, i, j, s, same):
    """Each row's best score and whether that best pair is a true copy pair."""
    best, is_copy = np.full(n, -1.0), np.zeros(n, bool)
    o = np.argsort(s, kind="stable")
    for a, b, v, q in zip(i[o], j[o], s[o], same[o]):
        best[a], is_copy[a], best[b], is_copy[b] = v, q, v, q
    return best, is_copy


def main():
    from curator import copyverify as cv
    from regroup_record import load, replay_verifiable

    ap = argparse.ArgumentParser()
    ap.add_argument("record")
    ap.add_argument("--images", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--histogram", type=int, default=None, help="this blur's column (0, 1, 2): rows by bin")
    args = ap.parse_args()
    d = load(args.record)
    uris = [str(u) for u in d["uris"]]
    n, i, j, syn = len(uris), d["i"], d["j"], d["synthetic"]
    if "verifiable" not in syn:
        syn["verifiable"] = replay_verifiable(d, args.seed)
    origin = origins(uris, Path(args.images))
    same = origin[i] == origin[j]
    for sigma, w, s, c in cv.scores_tried(syn, n, (i, j), d["table"]):
        cal = cv.calibrate({**syn, "scores": c}, n, (i, j), s)
        t = cal["threshold"]
        best, is_copy = best_rows(n, i, j, s, same)
        kept = s >= t
        print(json.dumps({"sigma": float(sigma), "level_weight": w, "threshold": t, "window_top": cal["tail"]["to"],
                          "expected_cost": round(cal["expected_cost"], 4),
                          "expected_false_rows": cal["expected_false_rows"],
                          "distinct_rows_above": int(((best >= t) & ~is_copy).sum()),
                          "false_pairs_kept": int((kept & ~same).sum()), "copy_pairs_kept": int((kept & same).sum()),
                          "pool_copies_below_share": cal["pool_copies_below_share"]}), flush=True)
    if args.histogram is not None:
        k = args.histogram
        best, is_copy = best_rows(n, i, j, d["table"][:, k], same)
        c = syn["score_table"][:, k]
        for lo, hi in zip(EDGES[:-1], EDGES[1:]):
            sel = (best >= lo) & (best < hi)
            print(json.dumps({"sigma": float(syn["sigmas"][k]), "bin": [lo, min(hi, 1.0)], "rows": int(sel.sum()),
                              "distinct_rows": int((sel & ~is_copy).sum()), "copy_rows": int((sel & is_copy).sum()),
                              "copy_rows_by_synthetic_shape": round(float(is_copy.sum() * np.mean((c >= lo) & (c < hi))), 1)}))


if __name__ == "__main__":
    main()
