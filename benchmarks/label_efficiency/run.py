"""Label efficiency on MNIST, after Gal, Islam & Ghahramani (2017).

Protocol: 20 class-balanced initial labels; each round, a random subset of
the unlabeled training pool (2,000 images) is scored and 10 images are
acquired with the policy; the model is trained and its error measured on the
10,000 MNIST test images after every round. Same model and training recipe for
every policy; the initial labels and pool subsets depend only on the seed.

One JSON line per (policy, seed, round) is appended to the results file as it
goes, so partial results survive; a run that finished writes a ``done`` line
and is skipped when the script is started again.

    nice -n 10 python benchmarks/label_efficiency/run.py --policies random bald curator --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import uuid
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
#: The shared MNIST files, read in place (see ../shared/datasets/README.md).
MNIST = Path(os.environ.get("CURATOR_MNIST", HERE.parents[2] / "shared" / "datasets" / "mnist"))


def load_mnist(split: str):
    from curator.ingest.idx import iter_images, read_labels

    prefix = "train" if split == "train" else "t10k"
    X = np.concatenate([b for _, b in iter_images(MNIST / f"{prefix}-images-idx3-ubyte.gz", 10_000)])
    y = read_labels(MNIST / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    return X, y


def load_digits_16(test: int = 500):
    """scikit-learn's handwritten digits (UCI optical recognition set: 1,797 8x8 images from 43
    writers, not MNIST), upsampled to 16x16 for the CNN; a fixed split: the last ``test`` images
    (in a permutation by seed 0) are the test set, the rest the pool."""
    from sklearn.datasets import load_digits

    d = load_digits()
    X = (d.images / 16.0 * 255.0).astype(np.float32)
    X = np.kron(X, np.ones((1, 2, 2), np.float32)).astype(np.uint8)  # 8x8 -> 16x16, pixel replication
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(0).permutation(len(y))
    tr, te = perm[:-test], perm[-test:]
    return X[tr], y[tr], X[te], y[te]


#: The procedural RGB generator (datasets/ is not a package: loaded by path).
PROCEDURAL = HERE.parents[1] / "datasets" / "procedural_rgb" / "generate.py"


def load_procedural(size: int = 32, pool: int = 20_000, test: int = 10_000):
    """The procedural RGB shapes (datasets/procedural_rgb: 8 classes, balanced, the true class
    of every image known), drawn directly at ``size`` x ``size`` px in memory: a second data set
    whose test split is large enough to measure a 2 % crossing (one image = 0.01 points of error
    at 10,000). Pool and test are separate draws (generator seeds 1 and 2), deterministic."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("procedural_rgb_generate", PROCEDURAL)
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)

    def draw(n: int, seed: int):
        rng = np.random.default_rng(seed)
        y = np.arange(n) % len(gen.CLASSES)
        X = np.empty((n, size, size, 3), np.uint8)
        for i, c in enumerate(y):
            p = gen._random_params(rng, gen.CLASSES[c])
            p["size"] = [size, size]
            X[i] = np.asarray(gen.render(p))
        return X, y.astype(np.int64)

    return (*draw(pool, 1), *draw(test, 2))


def balanced_start(y: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    classes = np.unique(y)
    return np.concatenate([rng.choice(np.flatnonzero(y == c), per_class, replace=False) for c in classes])


def parse_policy(spec: str):
    """``name`` or ``name:key=value,key=value`` (values read as JSON where they parse) -> (name, params)."""
    name, _, rest = spec.partition(":")
    params = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return name, params


def run_one(policy_spec, seed, data, args, out):
    import torch

    from curator import Pool, policies
    from curator.models import train_classifier

    Xtr, ytr, Xte, yte = data
    num_classes = int(ytr.max()) + 1
    rng = np.random.default_rng([seed, 7])  # initial set + pool subsets: same for every policy
    labeled = list(balanced_start(ytr, 2, rng))
    is_labeled = np.zeros(len(ytr), bool)
    is_labeled[labeled] = True
    name, params = parse_policy(policy_spec)
    policy = policies.get(name, **params)
    policy_name = policy_spec + args.tag
    run_id = uuid.uuid4().hex[:8]
    model = None
    reached = None
    rnd = 0
    torch.set_num_threads(args.threads)
    while True:
        t0, c0 = time.time(), time.process_time()
        idx = np.array(labeled)
        if model is None or not args.warm_start:
            model = train_classifier(Xtr[idx], ytr[idx], num_classes=num_classes, seed=seed, steps=args.first_steps,
                                     channels=tuple(args.channels), augment=args.augment, device="cpu",
                                     average=args.average)
        else:
            model = train_classifier(Xtr[idx], ytr[idx], num_classes=num_classes, seed=seed * 1000 + rnd,
                                     steps=args.steps, augment=args.augment, init=model, device="cpu",
                                     average=args.average)
        t_train = time.time() - t0
        err = model.evaluate(Xte, yte)
        t_eval = time.time() - t0 - t_train
        n = len(labeled)
        if reached is None and err <= args.stop_error:
            reached = n
        done = n >= args.max_labels or (reached is not None and n >= reached + args.margin)
        t1 = time.time()
        phase = None
        if not done:
            unl = np.flatnonzero(~is_labeled)
            sub = np.sort(rng.choice(unl, size=min(args.subset, len(unl)), replace=False))
            pred = model.predict(Xtr[sub], mc_samples=args.mc, seed=seed * 1000 + rnd)
            lab = model.predict(Xtr[idx]).embeddings
            pool = Pool(embeddings=pred.embeddings, probs=pred.probs, mc_probs=pred.mc_probs,
                        labeled_embeddings=lab)
            phase = policy.phase(pool) if hasattr(policy, "phase") else None
            pos = policy.select(pool, budget=args.acquire, seed=seed * 1000 + rnd)
            new = sub[pos]
            labeled.extend(int(i) for i in new)
            is_labeled[new] = True
        t_select = time.time() - t1
        line = {"policy": policy_name, "seed": seed, "round": rnd, "labels": n, "test_error": err,
                "run": run_id, "t_train": round(t_train, 2), "t_eval": round(t_eval, 2),
                "t_select": round(t_select, 2), "cpu_s": round(time.process_time() - c0, 2),
                "load1": round(os.getloadavg()[0], 2), **({"phase": phase} if phase else {})}
        out.write(json.dumps(line) + "\n")
        out.flush()
        print(json.dumps(line), flush=True)
        if done:
            out.write(json.dumps({"policy": policy_name, "seed": seed, "run": run_id, "done": True,
                                  "reached_5": reached}) + "\n")
            out.flush()
            return
        rnd += 1


def finished(path: Path) -> set[tuple[str, int]]:
    if not path.exists():
        return set()
    out = set()
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("done"):
            out.add((rec["policy"], rec["seed"]))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policies", nargs="+", default=["random", "bald", "variation_ratio", "entropy", "curator"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=HERE / "results.jsonl")
    ap.add_argument("--max-labels", type=int, default=600)
    ap.add_argument("--stop-error", type=float, default=0.05)
    ap.add_argument("--margin", type=int, default=40, help="labels to keep going after reaching --stop-error")
    ap.add_argument("--subset", type=int, default=2000)
    ap.add_argument("--acquire", type=int, default=10)
    ap.add_argument("--mc", type=int, default=20, help="MC-dropout passes")
    ap.add_argument("--first-steps", type=int, default=300)
    ap.add_argument("--steps", type=int, default=60, help="warm-start steps per later round")
    ap.add_argument("--warm-start", type=int, default=1)
    ap.add_argument("--augment", type=int, default=0)
    ap.add_argument("--channels", type=int, nargs=2, default=[8, 16])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--average", type=float, default=0.0,
                    help="share of the last training steps whose weights are averaged (train_classifier(average=))")
    ap.add_argument("--data", choices=["mnist", "digits", "procedural"], default="mnist",
                    help="mnist (the shared files), digits (scikit-learn's 8x8 digits, 16x16, 1,297 pool / 500 test) "
                         "or procedural (datasets/procedural_rgb shapes, 8 classes, RGB, see --size/--pool/--test)")
    ap.add_argument("--size", type=int, default=32, help="procedural: image side in pixels")
    ap.add_argument("--pool", type=int, default=20_000, help="procedural: pool images")
    ap.add_argument("--test", type=int, default=None,
                    help="test images: digits (default 500; the rest of the 1,797 is the pool), procedural (default 10,000)")
    ap.add_argument("--tag", default="", help="appended to the policy name in the results (a recipe variant)")
    args = ap.parse_args(argv)
    os.environ.setdefault("CURATOR_PROGRESS", "0")

    if args.data == "digits":
        data = load_digits_16(args.test or 500)
    elif args.data == "procedural":
        data = load_procedural(args.size, args.pool, args.test or 10_000)
    else:
        Xtr, ytr = load_mnist("train")
        Xte, yte = load_mnist("test")
        data = (Xtr, ytr, Xte, yte)
    done = finished(args.out)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as out:
        out.write(json.dumps({"config": {k: v if not isinstance(v, Path) else str(v) for k, v in vars(args).items()},
                              "machine": f"{platform.machine()} {os.cpu_count()} CPUs, {platform.python_version()}",
                              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n")
        for seed in args.seeds:
            for name in args.policies:
                if (name + args.tag, seed) in done:
                    continue
                run_one(name, seed, data, args, out)


if __name__ == "__main__":
    main()
