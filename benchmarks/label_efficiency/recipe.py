"""The built-in recipe with and without the pool: the CNN's test error, supervised only vs semi-supervised.

Same labeled sets, same seeds, same CNN and steps rule; the semi-supervised
recipe adds confident pseudo-labels of the unlabeled pool (``curator.semihead.
pool_pseudo_labels`` on the cold-start embedding, exactly what
``curator.rounds.train_model(semi=...)`` does in the loop). Also reported: the
head alone (label propagation + kNN vote on the same embedding, no CNN).

Data: the bundled demo sample (datasets/mnist1989: 7,291 16x16 digits, 2,007
test) and sklearn's 8x8 digits (1,297 / 500). Labeled sets: ``n`` per run,
balanced (n / 10 per class) and drawn by the seed.

    nice -n 10 python benchmarks/label_efficiency/recipe.py --data demo digits --labels 20 50 100 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def load(data: str):
    if data == "demo":
        from curator.ingest.idx import iter_images, read_labels

        d = ROOT / "datasets" / "mnist1989"

        def part(prefix):
            X = np.concatenate([b for _, b in iter_images(d / f"{prefix}-images-idx3-ubyte.gz")])
            return X, read_labels(d / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)

        return (*part("train"), *part("test"))
    if data == "digits":
        from pool_aware import load as pa_load

        Xp, yp, Xt, yt = pa_load("digits")
        return (Xp * 255).astype(np.uint8), yp, (Xt * 255).astype(np.uint8), yt
    raise SystemExit(f"unknown data set {data!r}: demo or digits")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", nargs="+", default=["demo", "digits"])
    ap.add_argument("--labels", nargs="+", type=int, default=[20, 50, 100])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--out", default=str(HERE / "recipe.jsonl"))
    args = ap.parse_args()

    import torch

    torch.set_num_threads(2)
    from curator import coldstart
    from curator.models import train_classifier
    from curator.semihead import SemiConfig, fit_head, pool_pseudo_labels, pool_vectors

    out = Path(args.out)
    done = set()
    if out.exists():
        for line in out.read_text().splitlines():
            r = json.loads(line)
            done.add((r["data"], r["n_labels"], r["seed"]))
    semi = SemiConfig()
    machine = f"{platform.node()} {os.cpu_count()} cores (shared)"
    for data in args.data:
        Xp, yp, Xt, yt = load(data)
        cold = coldstart.embed_images(Xp)
        for n in args.labels:
            for seed in args.seeds:
                if (data, n, seed) in done:
                    continue
                rng = np.random.default_rng(seed)
                lab = np.concatenate([rng.choice(np.flatnonzero(yp == c), n // 10, replace=False) for c in range(10)])
                rest = np.setdiff1d(np.arange(len(yp)), lab)
                row = {"data": data, "n_labels": int(len(lab)), "seed": seed, "machine": machine}
                t, c = time.time(), cpu_s()
                sup = train_classifier(Xp[lab], yp[lab], num_classes=10, seed=seed)
                row["supervised_error"] = float((sup.predict_proba(Xt).argmax(1) != yt).mean())
                row["supervised_wall_s"], row["supervised_cpu_s"] = round(time.time() - t, 1), round(cpu_s() - c, 1)
                t, c = time.time(), cpu_s()
                vec = np.vstack([cold[lab], cold[rest]])
                pos, ypl, w, info = pool_pseudo_labels(vec, yp[lab], 10, semi)
                X = np.concatenate([Xp[lab], Xp[rest[pos]]])
                y = np.concatenate([yp[lab], ypl])
                wt = np.concatenate([np.ones(len(lab), np.float32), w])
                model = train_classifier(X, y, num_classes=10, seed=seed, sample_weight=wt)
                row["semi_error"] = float((model.predict_proba(Xt).argmax(1) != yt).mean())
                row["semi_wall_s"], row["semi_cpu_s"] = round(time.time() - t, 1), round(cpu_s() - c, 1)
                row["pseudo_labels"] = int(len(pos))
                row["pseudo_label_error"] = float((ypl != yp[rest[pos]]).mean()) if len(pos) else None
                # the head alone on the same embedding, test images by the kNN vote
                labels = np.concatenate([yp[lab], np.full(len(rest), -1)])
                head = fit_head(pool_vectors(semi.embedding, vec), labels, classes=10, k=semi.k)
                row["head_error"] = float((head.predict_proba(coldstart.embed_images(Xt)).argmax(1) != yt).mean())
                row["load1"] = round(os.getloadavg()[0], 2)
                with out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
