"""Re-score the near pairs a run saved (run.py --pairs-out) with candidate copy scores, offline: the pool is
rebuilt from its seed (run.py's pools and planted copies, copyverify's synthetic copies), only the pairs above
--above are re-verified (the rest keep their saved score), and each candidate feature is saved per pair.

    PYTHONPATH=$PWD nice -n 10 python benchmarks/dedup_quality/features.py copies19/mnist_pairs.npz --data mnist \
        --originals 4000 --per-kind 80 --above 0.98 --out F.npz
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

SIGMAS = (0.6, 1.0, 1.5, 2.0)


def features(p, i, j, floor):
    """Per pair: for each blur sigma, the best (over the alignments pair_score tries) plain/detrended NCC."""
    from curator import copyverify as cv

    cv2 = cv._cv2()
    S = p.side
    a, b = p.full[i], p.full[j]
    tries = [(a, b, None)]
    for W in cv._align(p, i, j, floor):
        tries.append((cv2.warpAffine(a, W, (S, S), flags=cv2.INTER_LINEAR, borderValue=np.nan).reshape(S, S, -1), b, 1))
        tries.append((cv2.warpAffine(b, W, (S, S), flags=cv2.INTER_LINEAR + cv2.WARP_INVERSE_MAP,
                                     borderValue=np.nan).reshape(S, S, -1), a, 1))
    best = np.full(len(SIGMAS), -1.0)
    for warped, other, m in tries:
        valid = None
        if m is not None:
            valid = np.isfinite(warped).all(axis=2)
            valid = cv2.erode(valid.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
            if valid.mean() < 0.5:
                continue
            warped = np.where(np.isfinite(warped), warped, other).astype(np.float32)
        for k, sg in enumerate(SIGMAS):
            bl = lambda x: cv2.GaussianBlur(x, (0, 0), sg).reshape(x.shape)  # noqa: E731
            best[k] = max(best[k], cv._ncc(bl(warped), bl(other), valid))
    return best


def main():
    from curator import copyverify as cv
    from curator import seeds
    import run

    ap = argparse.ArgumentParser()
    ap.add_argument("npz")
    ap.add_argument("--data", required=True)
    ap.add_argument("--originals", type=int, required=True)
    ap.add_argument("--per-kind", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--above", type=float, required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    d = dict(np.load(args.npz, allow_pickle=True))
    rng = np.random.default_rng(args.seed)
    if args.data == "mnist":
        X0, _ = run.load_mnist("train")
        X0 = X0[: args.originals]
    else:
        X0, _ = run.load_procedural(args.originals, args.seed)
    X, origin, kind = run.plant(X0, args.per_kind, rng)
    assert (origin == d["origin"]).all() and (kind == d["kind"]).all(), "pool differs from the saved one"
    images = list(X)
    p = cv.Prepared(images)
    # the synthetic copies, as copyverify.synthetic_scores draws them
    srng = np.random.default_rng(seeds.derive(args.seed, stage="ssl-calibrate", shard=7))
    pos = np.sort(srng.choice(len(X), size=min(cv.CALIBRATION_SAMPLES, len(X)), replace=False))
    copies, kinds = zip(*(cv.synthetic_copy(np.asarray(images[r]), srng) for r in pos))
    assert (pos == d["syn_positions"]).all()
    q = cv.Prepared([images[r] for r in pos] + list(copies), side=p.side)
    m = len(pos)
    t0, c0 = time.time(), time.process_time()
    syn = np.array([features(q, k, k + m, -2.0) for k in range(m)])
    sel = np.flatnonzero(d["s"] >= args.above)
    floor = float(min(cv.GRID_FLOOR_MAX, np.quantile(d["syn_grid"], 0.01) - cv.GRID_FLOOR_MARGIN))
    pf = np.array([features(p, int(d["i"][k]), int(d["j"][k]), floor) for k in sel])
    cpu = time.process_time() - c0
    print(f"{m} synthetic + {len(sel)} pairs in {cpu:.1f} CPU s, {time.time() - t0:.1f} s wall; "
          f"check: sigma {cv.SCORE_SIGMA} syn max|diff| {np.abs(syn[:, 0] - d['syn_scores']).max():.2e}, "
          f"pairs {np.abs(pf[:, 0] - d['s'][sel]).max():.2e}")
    np.savez_compressed(args.out, sel=sel, syn=syn, pairs=pf, sigmas=np.array(SIGMAS), cpu_s=cpu)


if __name__ == "__main__":
    main()
