"""Issue 16 groundwork: 20 labels chosen by typical / coverage / random, then label propagation.

MNIST (shared copy): the pool is the 60,000 training images, unlabeled; each
policy picks 20 of them (3 seeds); their true labels are propagated over the
pool's kNN graph (curator.semisupervised.propagate) and extended to the 10,000
test images by a weighted kNN vote (extend). Also reported: 1-NN error from
the 20 labels alone, and how many of the 10 classes the 20 picks hold.

Embedding: PCA of the pixels (fitted on the pool, no labels, no training),
``--dims`` components. Run:
    PYTHONPATH=$PWD python benchmarks/coldstart16/measure.py [--dims 50] [--out results.jsonl]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from curator import Pool, policies
from curator.index import search
from curator.ingest.idx import iter_images, read_labels
from curator.semisupervised import extend, propagate

MNIST = Path(os.environ.get("MNIST", "/work/shared/datasets/mnist"))


def load(prefix):
    X = np.concatenate([b for _, b in iter_images(MNIST / f"{prefix}-images-idx3-ubyte.gz")])
    y = read_labels(MNIST / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    return X.reshape(len(X), -1).astype(np.float32) / 255.0, y


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dims", type=int, default=50)
    ap.add_argument("--budget", type=int, default=20)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--policies", default="typical,coverage,random")
    ap.add_argument("--out", default=str(Path(__file__).with_name("results.jsonl")))
    args = ap.parse_args()
    t0 = time.time()
    Xtr, ytr = load("train")
    Xte, yte = load("t10k")
    mu = Xtr.mean(0)
    _, _, Vt = np.linalg.svd(Xtr[::6] - mu, full_matrices=False)  # PCA basis from 10,000 pool images
    P = Vt[: args.dims].T
    Etr, Ete = (Xtr - mu) @ P, (Xte - mu) @ P
    print(f"embedding PCA-{args.dims}: {time.time() - t0:.1f} s", flush=True)
    rows = []
    for name in args.policies.split(","):
        for seed in range(args.seeds):
            t = time.time()
            pol = policies.get(name)
            idx = pol.select(Pool(embeddings=Etr), budget=args.budget, seed=seed)
            t_sel = time.time() - t
            lab = ytr[idx]
            _, nn = search(Etr[idx] / np.linalg.norm(Etr[idx], axis=1, keepdims=True),
                           Ete / np.linalg.norm(Ete, axis=1, keepdims=True), 1)
            err_1nn = float((lab[nn[:, 0]] != yte).mean())
            t = time.time()
            res = propagate(Etr, idx, lab, classes=10)
            pool_err = float((res.predictions != ytr).mean())
            test_err = float((extend(res, Etr, Ete).argmax(1) != yte).mean())
            t_lp = time.time() - t
            row = {"policy": name, "seed": seed, "budget": args.budget, "embedding": f"pca{args.dims}",
                   "classes_covered": int(len(np.unique(lab))), "test_error_1nn": err_1nn,
                   "pool_error_lp": pool_err, "test_error_lp": test_err, "cg_iterations": res.iterations,
                   "select_s": round(t_sel, 2), "propagate_s": round(t_lp, 2),
                   "delta": getattr(pol, "last_delta", None)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    meta = {"machine": f"{platform.node()} {os.cpu_count()} cores (shared by other jobs)",
            "wall_s": round(time.time() - t0, 1)}
    with open(args.out, "w") as f:
        for r in rows:
            f.write(json.dumps({**r, **meta}) + "\n")
    for name in args.policies.split(","):
        rs = [r for r in rows if r["policy"] == name]
        print(name, "1-NN", [round(r["test_error_1nn"], 3) for r in rs], "LP", [round(r["test_error_lp"], 3) for r in rs],
              "mean LP", round(float(np.mean([r["test_error_lp"] for r in rs])), 4))


if __name__ == "__main__":
    main()
