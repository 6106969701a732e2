"""The loop with no ground truth: its validation-estimated curve beside the true test error.

A pool is ingested WITHOUT labels, with its classes declared; its labels go to an answers
file that only the loop's ``answers`` labeler reads (as people would answer). A held-aside
test set with ground truth lives in another dataset the loop never sees; after the loop,
every model the curve recorded is scored on it: the estimate the loop reports against the
error it estimates.

    nice -n 10 python benchmarks/nolabels/run.py --data mnist --pool 5000 --seed 0
    nice -n 10 python benchmarks/nolabels/run.py --data digits --seed 0   # scikit-learn's 8x8 digits (UCI)
    nice -n 10 python benchmarks/nolabels/run.py --data procedural --pool 1500 --test 500 --seed 0
        # datasets/procedural_rgb: 8 classes of RGB shapes, 10 % planted copies; the class is the truth
    nice -n 10 python benchmarks/nolabels/run.py --data procedural --pool 2000 --test 500 --rounds 6 \
        --budget 40 --initial 40 --model shape_model:factory --seed 0   # the user's own model (shape_model.py)

Appends one JSON line per curve point to results.jsonl beside this file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # shape_model:factory (the user's own model of the procedural set)
MNIST = HERE.parents[1] / ".." / "shared" / "datasets" / "mnist"


def mnist(n_pool: int, n_test: int):
    from curator.ingest.idx import iter_images, read_labels

    _, pool = next(iter_images(MNIST / "train-images-idx3-ubyte.gz", batch_size=n_pool))
    _, test = next(iter_images(MNIST / "t10k-images-idx3-ubyte.gz", batch_size=n_test))
    return (pool, read_labels(MNIST / "train-labels-idx1-ubyte.gz")[:n_pool],
            test, read_labels(MNIST / "t10k-labels-idx1-ubyte.gz")[:n_test])


def digits(n_test: int):
    """scikit-learn's copy of the UCI optical digits (1,797 images, 8x8, other writers than MNIST's),
    scaled to 16x16 uint8; a seeded split into pool and test."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    big = np.stack([np.asarray(Image.fromarray((im * 255 / 16).astype(np.uint8)).resize((16, 16), Image.BILINEAR))
                    for im in d.images])
    order = np.random.default_rng(12345).permutation(len(big))
    test, pool = order[:n_test], order[n_test:]
    return big[pool], d.target[pool], big[test], d.target[test]


def procedural(n_pool: int, n_test: int, seed: int, side: int = 32, workers: int = 2, cache: str | None = None):
    """The procedural RGB set (datasets/procedural_rgb, 8 classes, mixed sizes and formats, 10 % planted
    copies, look-alikes, recoloured twins) drawn with ``seed``, each file decoded as curator decodes it
    (EXIF turned upright, RGB) and brought to ``side`` x ``side``; a seeded split into pool and test.
    The generator's class is the ground truth, which only the answers file and the test set hold."""
    import importlib.util

    from PIL import Image, ImageOps

    spec = importlib.util.spec_from_file_location("procedural_rgb", HERE.parents[1] / "datasets/procedural_rgb/generate.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    out = Path(cache) if cache else Path(tempfile.mkdtemp(prefix="procedural-"))  # the generator resumes in it
    rows = gen.generate(out, n=n_pool + n_test, seed=seed, workers=workers)
    classes = list(gen.CLASSES)
    imgs, ys = [], []
    for r in rows:
        with Image.open(out / r["file"]) as im:
            im = ImageOps.exif_transpose(im).convert("RGB").resize((side, side), Image.Resampling.BILINEAR)
            imgs.append(np.asarray(im))
        ys.append(classes.index(r["class"]))
    imgs, ys = np.stack(imgs), np.array(ys)
    order = np.random.default_rng(12345 + seed).permutation(len(imgs))
    test, pool = order[:n_test], order[n_test:]
    return imgs[pool], ys[pool], imgs[test], ys[test], classes


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", choices=["mnist", "digits", "procedural"], default="mnist")
    ap.add_argument("--pool", type=int, default=5000)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--budget", type=int, default=20)
    ap.add_argument("--initial", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=20, help="training recipe per model (None: the built-in one)")
    ap.add_argument("--model", default=None,
                    help="a model spec for the loop (e.g. shape_model:factory, in this folder); default the built-in CNN")
    ap.add_argument("--images", default=None, help="procedural: folder of the generated files, reused across runs")
    ap.add_argument("--out", default=str(HERE / "results.jsonl"))
    args = ap.parse_args()

    from curator import rounds
    from curator.ingest import ingest_arrays
    from curator.loop import LoopConfig, run_loop
    from curator.settings import Settings
    from curator.steps import run_step
    from curator.store import rounds as store_rounds
    from curator.store import samples as store_samples
    from curator.store.queries import agreed_labels, dataset_id

    if args.data == "procedural":
        pool, pool_y, test, test_y, names = procedural(args.pool, args.test, args.seed, cache=args.images)
    else:
        pool, pool_y, test, test_y = mnist(args.pool, args.test) if args.data == "mnist" else digits(min(args.test, 500))
        names = [str(c) for c in range(10)]
    classes = list(names)
    if args.data == "procedural":  # labels are class names, as people would answer
        pool_y = np.array(names)[pool_y]
        test_y = np.array(names)[test_y]
    with tempfile.TemporaryDirectory(prefix="nolabels-") as tmp:
        settings = Settings(workspace=Path(tmp) / "ws")
        t0 = time.time()
        ingest_arrays(pool, None, dataset="pool", split="train", name="pool", settings=settings, classes=classes)
        ingest_arrays(test, test_y, dataset="heldout", split="test", name="test", settings=settings)
        answers = Path(tmp) / "answers.csv"
        answers.write_text("".join(f"{i:07d}.png,{y}\n" for i, y in enumerate(pool_y.tolist())))
        cfg = LoopConfig(dataset="pool", rounds=args.rounds, budget=args.budget, initial=args.initial,
                         seed=args.seed, labeler="answers", answers=str(answers), epochs=args.epochs,
                         model=args.model)
        result = run_loop(settings, cfg, plots=False)
        wall = time.time() - t0

        def read(s):
            ds = dataset_id(s, "pool")
            seed_round = store_rounds.get(s, ds, 0)
            return (store_rounds.evaluations(s, ds), store_rounds.sample_ids(s, seed_round).tolist(),
                    seed_round.policy, agreed_labels(s, ds), store_samples.truth(s, ds).labels.count(None))

        evals, seed_ids, seed_policy, labels, no_truth = run_step(settings, read)
        assert no_truth == len(pool), "the pool must have no ground truth"
        seed_classes = len({labels[int(i)][0] for i in seed_ids})
        rows = []
        for p in evals:
            true = rounds.test_error(settings, "heldout", p.model_id, split="test")
            rows.append({"data": args.data, "pool": len(pool), "test": len(test), "seed": args.seed,
                         "round": p.number, "n_labels": p.n_labels, "metric": p.metric,
                         "estimate": round(p.value, 4), "true_test_error": round(true, 4),
                         "epochs": args.epochs, "budget": args.budget, "model": args.model or "built-in CNN", "seed_policy": seed_policy,
                         "seed_classes": seed_classes, "n_classes": len(classes), "loop_wall_s": round(wall, 1),
                         "machine": f"{platform.node()} {os.cpu_count()} cpu, load {os.getloadavg()[0]:.1f}"})
            print(rows[-1], flush=True)
    with open(args.out, "a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    print(result)


if __name__ == "__main__":
    main()
