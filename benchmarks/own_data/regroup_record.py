"""Re-group a verified dedup run offline from its record (``run.py --verify`` writes
``--work/verify_record_<n>.npz``): the score choice, the calibration and the grouping re-run on the saved
pair scores, scored against the generator's manifest; nothing is verified again.

    PYTHONPATH=$PWD python benchmarks/own_data/regroup_record.py /work/own10k/verify_record_10000.npz \
        --images /work/own10k/images [--fixed 0.95 0.97]

Pairs the run did not check for a local colour change (those under its tail start) count as unchanged: a rule
that sets a lower threshold than the run's reads them as colour-clean (the figures say how many).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1]), str(HERE)]


def load(path: str) -> dict:
    d = dict(np.load(path, allow_pickle=False))
    d["synthetic"] = {k[4:]: d[k] for k in list(d) if k.startswith("syn_")}
    d["synthetic"]["sigmas"] = tuple(d["synthetic"].get("sigmas", ()))
    side = Path(path).with_suffix(".json")
    d["synthetic"]["floor"] = (json.loads(side.read_text()).get("floor") if side.exists() else None) or 0.0
    return d


def replay_verifiable(d: dict, seed: int) -> np.ndarray:
    """``copyverify.verifiable`` of a record written before it was kept (run33 and older): the synthetic
    copies re-drawn as ``synthetic_scores`` drew them (``synthetic_draw``: same seed, same sampled rows)."""
    from curator import copyverify as cv

    syn = d["synthetic"]
    images = cv.ImageFiles([str(u) for u in d["uris"]])  # read when drawn: the sampled rows only
    pos, q, kinds = cv.synthetic_draw(images, cv.working_side(images), seed=seed, samples=len(syn["positions"]))
    if not np.array_equal(pos, syn["positions"]):
        raise SystemExit("replay_verifiable: the record's sampled rows are not this seed's; pass --seed")
    return cv.copies_verifiable(q, kinds)[1]


def groups_of(n: int, i, j, compared=None) -> list[np.ndarray]:
    """The groups ``find_copies`` makes of the kept pairs (``find_duplicates``' centre rule; with
    ``compared`` = (i, j, margin) of every judged pair, average linkage as find_copies since run31)."""
    from curator.dedup import find_duplicates

    E = np.random.default_rng(0).normal(size=(n, 8)).astype(np.float32)  # unused with pairs=, but checked
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    return find_duplicates(E, 1.0, pairs=(i, j), compared=compared)


def regroup(d: dict, calibration: dict, s: np.ndarray, *, threshold: float | None = None):
    """The keep mask of the pairs at ``calibration``'s threshold (or ``threshold``), with the grey
    rows' own threshold, the chroma and the local colour checks as ``find_copies`` applies them, and
    every pair's margin over its threshold (``compared``, -inf where a colour check failed)."""
    from types import SimpleNamespace

    from curator import copyverify as cv

    i, j = d["i"], d["j"]
    n = len(d["uris"])
    t = calibration["threshold"] if threshold is None else threshold
    p = SimpleNamespace(chroma=d["row_chroma"])
    pair_t = np.full(len(i), float(t))
    if threshold is None:
        syn = cv.chosen_synthetic(d["synthetic"], n, (i, j), d["table"], calibration["score"])
        pair_t, _ = cv.grey_thresholds(p, i, j, s, syn, t)
    ok = (cv.chroma_distance(p, i, j) <= calibration["chroma_tolerance"]) \
        & (d["colour"] <= calibration["colour_tolerance"])
    keep = (s >= pair_t) & ok
    return keep, (i, j, np.where(ok, s - pair_t, -np.inf))


def main():
    from curator import copyverify as cv
    from run import score_dedup

    ap = argparse.ArgumentParser()
    ap.add_argument("record")
    ap.add_argument("--images", required=True, help="the generator's folder (manifest.jsonl)")
    ap.add_argument("--fixed", type=float, nargs="*", default=[], help="also these thresholds on the chosen score")
    ap.add_argument("--single-linkage", action="store_true",
                    help="group as find_copies did before run31: a row joins a centre it has a kept edge to")
    ap.add_argument("--every-score", action="store_true",
                    help="also every score tried (blur x level weight) at its own calibrated threshold, and the "
                         "best recall any threshold on it gives with precision >= 0.99 (an oracle: a diagnosis)")
    ap.add_argument("--seed", type=int, default=None, help="the run's seed (default: the record's)")
    args = ap.parse_args()
    d = load(args.record)
    n, uris = len(d["uris"]), [str(u) for u in d["uris"]]
    if "verifiable" not in d["synthetic"]:  # a record from before run34: re-draw the synthetic copies
        side = Path(args.record).with_suffix(".json")
        seed = args.seed if args.seed is not None else \
            ((json.loads(side.read_text()).get("calibration") or {}).get("seed", 0) if side.exists() else 0)
        d["synthetic"]["verifiable"] = replay_verifiable(d, seed)
    cal, s = cv.calibrate_score(d["synthetic"], n, (d["i"], d["j"]), d["table"])
    runs = [("calibrated", None)] + [(f"fixed {t}", t) for t in args.fixed]
    for name, t in runs:
        keep, compared = regroup(d, cal, s, threshold=t)
        out = score_dedup(groups_of(n, d["i"][keep], d["j"][keep], None if args.single_linkage else compared),
                          uris, Path(args.images))
        print(json.dumps({"rule": name, "linkage": "single" if args.single_linkage else "average", "score": cal["score"], "threshold": t if t is not None else cal["threshold"],
                          "expected_false_rows": cal["expected_false_rows"], "kept_pairs": int(keep.sum()),
                          "same_as_run": bool(np.array_equal(keep, d["keep"])) if t is None else None, **out}))

    if args.every_score:
        every_score(d, uris, Path(args.images), single=args.single_linkage)


def every_score(d: dict, uris, images: Path, *, single: bool = False) -> None:
    from curator import copyverify as cv
    from run import score_dedup

    i, j, n = d["i"], d["j"], len(uris)
    syn = d["synthetic"]
    for sigma, w, s, c in cv.scores_tried(syn, n, (i, j), d["table"]):
        cal = cv.calibrate({**syn, "scores": c}, n, (i, j), s)
        cal["score"] = {"sigma": sigma, "level_weight": w}
        rows = []
        for t in [None] + list(np.round(np.arange(0.85, 0.996, 0.005), 3)):
            keep, compared = regroup(d, cal, s, threshold=t)
            r = score_dedup(groups_of(n, i[keep], j[keep], None if single else compared), uris, images)
            rows.append((t, r["precision"], r["recall"]))
        ok = [r for r in rows[1:] if r[1] >= 0.99]
        top = max(ok, key=lambda r: r[2]) if ok else (None, None, None)
        print(json.dumps({"sigma": sigma, "level_weight": w, "threshold": cal["threshold"],
                          "expected_cost": round(cal["expected_cost"], 5),
                          "expected_false_rows": cal["expected_false_rows"],
                          "precision": round(rows[0][1], 4), "recall": round(rows[0][2], 4),
                          "best_fixed_with_p99": {"threshold": top[0], "precision": top[1], "recall": top[2]}}))


if __name__ == "__main__":
    main()
