"""Pool-aware label efficiency (issue 16): the policy picks the first labels, the pool trains the model.

Protocol (MNIST, shared copy): the 60,000 training images are the pool, all of
them available unlabeled; the 10,000 test images give the error. A label-free
embedding is fitted on the pool (``curator.semihead.EMBEDDINGS``, named by
``--embedding``; the self-supervised encoder registers there). Runs:

* ``typical``: the first 20 labels chosen by the ``typical`` policy (TypiClust)
  on the embedding, no seed set drawn; then 10 per round by ``typical`` again
  (labeled points count as covered);
* ``balanced``: 2 labels per class drawn by the seed, then as ``typical``;
* ``random``: 20 random, then 10 random per round: the same semi-supervised
  training, so the share of the gain that comes from selection shows.
* ``typical+curator``: the first 20 as ``typical``, then 10 per round by the
  default ``curator`` policy on the semi-supervised head's probabilities (its
  switch rule: typicality while a class has fewer than 3 labels, then
  uncertainty (margin) with one pick per k-means cluster as the diversity guard).

* ``--self-train``: each run above as ``<run>+selftrain`` (the same picks: the
  same selection and seeds): after the head, ``curator.semihead.self_train``
  trains the built-in CNN on the whole pool's propagated labels and propagates
  again over the kNN graph of its embedding; ``test_error`` is then that
  stage's, ``lp_test_error`` the head's. ``--self-train-at`` limits the stage
  to some label counts (it costs about 5 CPU minutes per MNIST round); other
  rounds record the head's error with ``self_trained: false``. With a
  ``deskew-*`` embedding the CNN sees the deskewed images too.

Every round the semi-supervised head (``curator.semihead.fit_head``: label
propagation over the pool's kNN graph, test images by the weighted vote of their
nearest pool rows) is fitted on the labels and the whole pool, and its test
error recorded. The kNN graphs (pool-pool, test-pool) do not depend on the
labels and are built once per data set.

One JSON line per finished round (``pool_aware.jsonl``); a rerun skips the
rounds already there (the labeled set is replayed from the recorded picks).

    nice -n 10 python benchmarks/label_efficiency/pool_aware.py --data mnist --seeds 0 1 2
    nice -n 10 python benchmarks/label_efficiency/pool_aware.py --data digits --seeds 0 1 2
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
MNIST = Path(os.environ.get("MNIST", "/work/shared/datasets/mnist"))


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def load(data: str):
    """(pool images, pool labels, test images, test labels); images (n, H, W) in [0, 1]."""
    if data == "mnist":
        from curator.ingest.idx import iter_images, read_labels

        def part(prefix):
            X = np.concatenate([b for _, b in iter_images(MNIST / f"{prefix}-images-idx3-ubyte.gz")])
            y = read_labels(MNIST / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
            return X.reshape(len(X), 28, 28).astype(np.float32) / 255.0, y

        return (*part("train"), *part("t10k"))
    if data == "digits":  # sklearn's 1,797 8x8 handwritten digits (UCI): a fixed 1,297 / 500 split
        from sklearn.datasets import load_digits

        d = load_digits()
        X = d.images.astype(np.float32) / 16.0
        order = np.random.default_rng(12345).permutation(len(X))
        tr, te = order[:1297], order[1297:]
        return X[tr], d.target[tr].astype(np.int64), X[te], d.target[te].astype(np.int64)
    raise SystemExit(f"unknown data set {data!r}: mnist or digits")


def done_rounds(out: Path, key: dict) -> list[dict]:
    if not out.exists():
        return []
    rows = []
    for line in out.read_text().splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        if all(r.get(k) == v for k, v in key.items()):
            rows.append(r)
    return sorted(rows, key=lambda r: r["n_labels"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="mnist")
    ap.add_argument("--embedding", default="deskew-pca")
    ap.add_argument("--runs", nargs="+", default=["typical", "balanced", "random"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--initial", type=int, default=20)
    ap.add_argument("--budget", type=int, default=10)
    ap.add_argument("--max-labels", type=int, default=100)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--out", default=str(HERE / "pool_aware.jsonl"))
    ap.add_argument("--self-train", action="store_true",
                    help="add the self-training stage (run names get '+selftrain')")
    ap.add_argument("--self-train-at", nargs="+", type=int, default=None,
                    help="label counts at which to self-train (default: every round)")
    ap.add_argument("--self-train-steps", type=int, default=None, help="default: SELF_TRAIN_STEPS")
    args = ap.parse_args()

    import faiss

    faiss.omp_set_num_threads(2)
    import torch

    torch.set_num_threads(2)
    from curator import Pool, policies
    from curator.index import search
    from curator.semihead import SELF_TRAIN_STEPS, deskew, embed_pool, fit_head, self_train
    from curator.semisupervised import _unit, knn_graph

    out = Path(args.out)
    args.self_train_steps = args.self_train_steps or SELF_TRAIN_STEPS
    machine = f"{platform.node()} {os.cpu_count()} cores (shared; load {os.getloadavg()[0]:.1f} at start)"
    t0, c0 = time.time(), cpu_s()
    Xp, yp, Xt, yt = load(args.data)
    Ip, It = Xp, Xt  # the images the self-training CNN sees
    if args.self_train and args.embedding.startswith("deskew-"):
        Ip, It = deskew(Xp), deskew(Xt)  # deskew once: "deskew-pca" is "pca" of the deskewed images
        E, Et = embed_pool(args.embedding[len("deskew-"):], Ip, It)
    else:
        E, Et = embed_pool(args.embedding, Xp, Xt)
    U, Ut = _unit(E), _unit(Et)
    graph = knn_graph(U, args.k)
    test_nbrs = search(U, Ut, args.k)
    prep_wall, prep_cpu = time.time() - t0, cpu_s() - c0
    classes = int(max(yp.max(), yt.max())) + 1
    purity = float((yp[graph[1]] == yp[:, None]).mean())
    print(f"{args.data}: pool {len(Xp)}, test {len(Xt)}, embedding {args.embedding} {E.shape[1]}-d, "
          f"kNN purity {purity:.4f}; prep {prep_wall:.1f} s wall, {prep_cpu:.1f} s CPU", flush=True)

    # level by level (every run and seed to 20 labels, then every one to 30, ...): a stop keeps the
    # small-budget points of every run, which matter most
    state = {}
    suffix = "+selftrain" if args.self_train else ""
    for base in args.runs:
        run = base + suffix
        for seed in args.seeds:
            key = {"data": args.data, "embedding": args.embedding, "run": run, "seed": seed}
            prev = done_rounds(out, key)
            state[(run, seed)] = {
                "key": key, "labeled": [i for r in prev for i in r["picked"]],
                "wall": sum(r["round_wall_s"] for r in prev) + prep_wall,
                "cpu": sum(r["round_cpu_s"] for r in prev) + prep_cpu,
                "rng": np.random.default_rng([seed, len(prev)])}
    for level in range(args.initial, args.max_labels + 1, args.budget):
        for (run, seed), st in state.items():
            labeled, key = st["labeled"], st["key"]
            run = run.removesuffix(suffix) if suffix else run  # the selection is the base run's
            if len(labeled) >= level:
                continue
            t, c = time.time(), cpu_s()
            if run == "typical+curator" and labeled and "head" not in st:  # resumed: the head of the recorded labels
                y = np.full(len(yp), -1, np.int64)
                y[labeled] = yp[labeled]
                st["head"] = fit_head(E, y, classes=classes, k=args.k, neighbours=graph)
            budget = level - len(labeled)
            taken = np.array(labeled, np.int64)
            free = np.setdiff1d(np.arange(len(yp)), taken)
            if run == "balanced" and not labeled:
                per = budget // classes
                picked = np.concatenate([np.random.default_rng(seed).choice(np.flatnonzero(yp == c), per,
                                                                            replace=False)
                                         for c in range(classes)])
            elif run == "random":
                picked = st["rng"].choice(free, budget, replace=False)
            elif run == "typical+curator" and labeled:
                pool = Pool(embeddings=E[free], probs=st["head"].probs[free], labeled_embeddings=E[taken])
                picked = free[policies.get("curator").select(pool, budget=budget, seed=seed * 1000 + len(labeled))]
            else:
                pool = Pool(embeddings=E[free], labeled_embeddings=E[taken] if len(taken) else None)
                picked = free[policies.get("typical").select(pool, budget=budget, seed=seed * 1000 + len(labeled))]
            t_sel = time.time() - t
            labeled.extend(int(i) for i in picked)
            y = np.full(len(yp), -1, np.int64)
            y[labeled] = yp[labeled]
            head = st["head"] = fit_head(E, y, classes=classes, k=args.k, neighbours=graph)
            test_err = float((head.predict_proba(neighbours=test_nbrs).argmax(1) != yt).mean())
            pool_err = float((head.probs.argmax(1) != yp).mean())
            extra = {}
            if args.self_train:
                lp_test, lp_pool = test_err, pool_err
                done = args.self_train_at is None or len(labeled) in args.self_train_at
                extra = {"self_trained": done, "lp_test_error": round(lp_test, 5), "lp_pool_error": round(lp_pool, 5)}
                if done:
                    cs = cpu_s()
                    stt = self_train(Ip, head, y, k=args.k, seed=seed * 1000 + len(labeled), steps=args.self_train_steps)
                    tn2 = search(stt.head.embeddings, _unit(stt.embed(It)), args.k)
                    test_err = float((stt.predict_proba(neighbours=tn2).argmax(1) != yt).mean())
                    pool_err = float((stt.head.probs.argmax(1) != yp).mean())
                    extra["selftrain_cpu_s"] = round(cpu_s() - cs, 1)
            wall, cpu = time.time() - t, cpu_s() - c
            st["wall"] += wall
            st["cpu"] += cpu
            row = {**key, "n_labels": len(labeled), "test_error": round(test_err, 5),
                   "pool_error": round(pool_err, 5), **extra, "classes_covered": int(len(np.unique(yp[labeled]))),
                   "picked": [int(i) for i in picked], "select_s": round(t_sel, 2),
                   "round_wall_s": round(wall, 2), "round_cpu_s": round(cpu, 2),
                   "run_wall_s": round(st["wall"], 1), "run_cpu_s": round(st["cpu"], 1),
                   "prep_wall_s": round(prep_wall, 1), "prep_cpu_s": round(prep_cpu, 1),
                   "knn_purity": round(purity, 5), "k": args.k, "machine": machine,
                   "load1": round(os.getloadavg()[0], 2)}
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{run} seed {seed} labels {len(labeled)}: test error {test_err:.4f} "
                  f"(pool {pool_err:.4f}) {wall:.1f} s wall {cpu:.1f} s CPU", flush=True)

if __name__ == "__main__":
    main()
