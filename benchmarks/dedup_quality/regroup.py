"""Re-group the verified pairs a run saved (run.py --pairs-out) under calibration rules or fixed
thresholds, without verifying again: pair precision / recall per copy kind, one line per rule.

    PYTHONPATH=$PWD python benchmarks/dedup_quality/regroup.py pairs.npz [--fixed 0.9 0.95]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
KINDS = ("rotate", "zoom", "crop", "colour", "jpeg", "noise", "combo")
SINGLE_LINKAGE = False  # --single-linkage: group as find_copies did before run31 (any kept edge to the centre)


def fence_rule(d) -> float:
    """The rule before copies19 (dedup18): the sampled rows' best candidate, a neighbour above the
    fence 1 - 2 x (1 - q01 of the synthetic copies) taken as a real copy (at most half of them)."""
    from curator.dedup import calibrate_threshold

    c, pos = d["syn_scores"], d["syn_positions"]
    best = best_per_row(d)
    fence = float(1.0 - 2.0 * (1.0 - np.quantile(c, 0.01)))
    out = calibrate_threshold(np.clip(c, 1e-6, 1.0), np.clip(best[pos], 1e-6, 1.0), copy_like=fence,
                              max_pool_copy_share=0.5)
    z = -np.log1p(-np.clip(out["best_range"], 0.0, 1.0 - 1e-9))
    return float(-np.expm1(-z.mean()))


def best_per_row(d):
    n = len(d["origin"])
    best = np.full(n, -1.0)
    np.maximum.at(best, d["i"], d["s"])
    np.maximum.at(best, d["j"], d["s"])
    return best


def regroup(d, t: float, tol: float) -> dict:
    from curator.dedup import find_duplicates
    from run import scores

    n = len(d["origin"])
    E = np.random.default_rng(0).normal(size=(n, 16)).astype(np.float32)
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    ch = d["chroma"]
    colour_ok = np.linalg.norm(ch[d["i"]] - ch[d["j"]], axis=-1) <= tol
    keep = (d["s"] >= t) & colour_ok
    # every judged pair's margin, as find_copies passes it (average linkage; --single-linkage: before run31)
    compared = None if SINGLE_LINKAGE else (d["i"], d["j"], np.where(colour_ok, d["s"] - t, -np.inf))
    groups = find_duplicates(E, min(max(t, 0.0), 1.0), pairs=(d["i"][keep], d["j"][keep]), compared=compared)
    return scores(groups, d["origin"], d["kind"])


def choose(d, f):
    """copyverify.calibrate_score on the saved score table (or a features.py table): the chosen score,
    every score tried and the grouping at the chosen one."""
    from curator import copyverify

    if f is not None:
        table = np.repeat(d["s"][:, None], len(f["sigmas"]), 1)
        table[f["sel"]] = f["pairs"]
        syn_table, sigmas = f["syn"], tuple(f["sigmas"])
    else:
        table, syn_table, sigmas = d["table"], d["syn_score_table"], tuple(d["syn_sigmas"])
    keep = [k for k, sg in enumerate(sigmas) if sg in copyverify.SCORE_SIGMAS]
    syn = {k[4:]: v for k, v in d.items() if k.startswith("syn_")}
    syn.update(floor=0.0, score_table=syn_table[:, keep], sigmas=tuple(sigmas[k] for k in keep))
    cal, s = copyverify.calibrate_score(syn, len(d["origin"]), (d["i"], d["j"]), table[:, keep])
    print(json.dumps({k: cal[k] for k in ("threshold", "score", "expected_cost", "expected_missed",
                                          "expected_false_rows", "pool_copy_share")}))
    n = len(d["origin"])
    for k, sigma in enumerate(syn["sigmas"]):  # every score tried, re-grouped at its own threshold (a diagnosis)
        level = copyverify.row_levels(n, (d["i"], d["j"]), table[:, keep[k]])
        for w in copyverify.LEVEL_WEIGHTS:
            sk = copyverify.relative(table[:, keep[k]], (level[d["i"]] + level[d["j"]]) / 2, w)
            ck = copyverify.relative(syn["score_table"][:, k], level[syn["positions"]], w)
            ck_cal = copyverify.calibrate({**syn, "scores": ck}, n, (d["i"], d["j"]), sk)
            r = regroup({**d, "s": sk}, ck_cal["threshold"], ck_cal["chroma_tolerance"])
            print(f"  blur {sigma} level x {w}: t={ck_cal['threshold']:.4f} expected cost {ck_cal['expected_cost']:.4f} | "
                  f"P={r['precision']:.3f} R={r['recall']:.3f} min P/R per kind "
                  f"{min(r[f'precision_{q}'] for q in KINDS):.3f}/{min(r[f'recall_{q}'] for q in KINDS):.3f}")
    r = regroup({**d, "s": s}, cal["threshold"], cal["chroma_tolerance"])
    cells = " | ".join(f"{r[f'precision_{k}']:.3f} / {r[f'recall_{k}']:.3f}" for k in
                       ("rotate", "zoom", "crop", "colour", "jpeg", "noise", "combo"))
    print(f"| chosen (sigma {cal['score']['sigma']}, level x {cal['score']['level_weight']}) | {cal['threshold']:.4f} | "
          f"{cells} | {r['precision']:.3f} | {r['recall']:.3f} | {r['distinct_originals_dropped']} |")


def main():
    from curator import copyverify

    ap = argparse.ArgumentParser()
    ap.add_argument("npz")
    ap.add_argument("--fixed", type=float, nargs="*", default=[])
    ap.add_argument("--single-linkage", action="store_true",
                    help="group as before run31: a row joins a centre it has a kept edge to, whatever its other verdicts")
    ap.add_argument("--features", help="features.py's output for these pairs: choose the score as well "
                    "(copyverify.calibrate_score; pairs it did not re-score keep their saved score at every blur)")
    args = ap.parse_args()
    global SINGLE_LINKAGE
    SINGLE_LINKAGE = args.single_linkage
    d = dict(np.load(args.npz, allow_pickle=True))
    if args.features or "table" in d:
        choose(d, np.load(args.features) if args.features else None)
        return
    syn = {k[4:]: v for k, v in d.items() if k.startswith("syn_")}
    syn["floor"] = 0.0
    cal = copyverify.calibrate(syn, len(d["origin"]), (d["i"], d["j"]), d["s"])
    tol = cal["chroma_tolerance"]
    rules = [("tail (copies19)", cal["threshold"]), ("fence (dedup18)", fence_rule(d))]
    rules += [(f"fixed {t}", t) for t in args.fixed]
    print(json.dumps({k: cal[k] for k in ("threshold", "pool_copy_share", "expected_missed", "expected_false_rows", "tail",
                                          "copy_similarity", "neighbour_similarity")}))
    for name, t in rules:
        r = regroup(d, t, tol)
        kinds = " ".join(f"{k} {r[f'precision_{k}']:.3f}/{r[f'recall_{k}']:.3f}" for k in
                         ("rotate", "zoom", "crop", "colour", "jpeg", "noise", "combo"))
        print(f"{name:22s} t={t:.4f} P={r['precision']:.3f} R={r['recall']:.3f} dropped={r['distinct_originals_dropped']} | {kinds}")
        cells = " | ".join(f"{r[f'precision_{k}']:.3f} / {r[f'recall_{k}']:.3f}" for k in
                           ("rotate", "zoom", "crop", "colour", "jpeg", "noise", "combo"))
        print(f"| {name} | {t:.4f} | {cells} | {r['precision']:.3f} | {r['recall']:.3f} | "
              f"{r['distinct_originals_dropped']} |")


if __name__ == "__main__":
    main()
