"""Choose the default near-duplicate threshold of the cold-start embedding, then check it elsewhere.

Tune: 2,000 MNIST *training* digits (positions 0-1999) plus 1,800 planted
copies of every kind in ``planted.KINDS``. The threshold maximising pair F1
on a grid is printed; ``curator.dedup.DEFAULT_THRESHOLD`` is set from it.
Check (not tuned on): 2,000 MNIST *test* digits (different writers) and 600
synthetic colour images (random shapes over gradients, 48 x 48), each with
planted copies drawn with other seeds.

    python benchmarks/dedup_scale/threshold.py > benchmarks/dedup_scale/threshold.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import planted  # noqa: E402

from curator import coldstart  # noqa: E402
from curator.dedup import find_duplicates  # noqa: E402

MNIST = HERE.parents[1].parent / "shared" / "datasets" / "mnist"
GRID = [0.95, 0.96, 0.97, 0.975, 0.98, 0.985, 0.99, 0.995]


def evaluate(images, copies, seed, thresholds):
    rng = np.random.default_rng(seed)
    rows, origin, kind = planted.plant(images, copies, list(planted.KINDS), rng)
    E = coldstart.embed_images(rows)
    n = len(images)
    sims = (E[n:] * E[origin[n:]]).sum(axis=1)
    out = []
    for t in thresholds:
        groups = find_duplicates(E, t)
        scores = planted.pair_scores(groups, origin)
        same = np.full(len(rows), -1)
        for g_id, grp in enumerate(groups):
            same[grp] = g_id
        found = (same[n:] >= 0) & (same[n:] == same[origin[n:]])
        per_kind = {k: float(found[kind[n:] == k].mean()) for k in planted.KINDS}
        distinct_dropped = 0
        for grp in groups:  # originals dropped although no copy of them is in the group
            origins = origin[grp]
            for r in grp[1:]:
                if r < n and (origins == r).sum() == 1 and origin[grp[0]] != r:
                    distinct_dropped += 1
        f1 = 2 * scores["precision"] * scores["recall"] / max(1e-12, scores["precision"] + scores["recall"])
        out.append({"threshold": t, **scores, "f1": f1, "recall_by_kind": per_kind,
                    "distinct_originals_dropped": distinct_dropped, "originals": n})
    copy_sims = {k: [float(np.quantile(sims[kind[n:] == k], q)) for q in (0.0, 0.01, 0.5)] for k in planted.KINDS}
    return out, copy_sims


def main():
    train = planted.read_idx_images(MNIST / "train-images-idx3-ubyte.gz", 2000, 0)
    tune, tune_sims = evaluate(train, 1800, 0, GRID)
    best = max(tune, key=lambda r: r["f1"])
    t = best["threshold"]
    test = planted.read_idx_images(MNIST / "t10k-images-idx3-ubyte.gz", 2000, 0)
    check_mnist, _ = evaluate(test, 1800, 1, sorted({t, *GRID}))
    synth = planted.synthetic_images(600, np.random.default_rng(2))
    check_synth, synth_sims = evaluate(synth, 540, 3, sorted({t, *GRID}))
    print(json.dumps({
        "chosen_threshold": t,
        "rule": "max pair F1 over the grid on the tuning set",
        "tune_mnist_train": tune,
        "tune_copy_similarity_min_q01_median": tune_sims,
        "check_mnist_test": check_mnist,
        "check_synthetic": check_synth,
        "synthetic_copy_similarity_min_q01_median": synth_sims,
    }, indent=1))


if __name__ == "__main__":
    main()
