"""Copy detection with a calibrated threshold: self-supervised encoder vs today's thumbnail.

For each data set: a pool of alike-but-distinct originals (MNIST training digits; procedural RGB
originals with look-alikes and recoloured twins) plus planted copies of each KIND (made here with
PIL, not with the training augmentations' code). The encoder is trained on that pool
(``curator.selfsupervised.train_encoder``, no labels), the threshold calibrated on the pool
(``curator.selfsupervised.calibrate``: synthetic copies vs nearest other sample), then
``curator.dedup.find_duplicates`` groups it. Pair precision and recall per copy kind, for:
``thumb@0.99`` (today's default), ``thumb-calibrated`` (the same rule on the thumbnail) and
``ssl-calibrated``. On MNIST also (issue 16 item 1): how well classes separate on each
embedding: 1-NN test error from 20 / 100 random pool labels (3 seeds) and label propagation
(``curator.semisupervised``) on the SSL embedding.

One JSON line per finished unit goes to --out (a stop loses nothing):

    PYTHONPATH=$PWD nice -n 10 python benchmarks/dedup_quality/run.py --data mnist --steps 1000
    PYTHONPATH=$PWD nice -n 10 python benchmarks/dedup_quality/run.py --data procedural --steps 600
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

THREADS = int(os.environ.get("BENCH_THREADS", "2"))
os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
import torch  # noqa: E402

torch.set_num_threads(THREADS)

from curator import coldstart, selfsupervised  # noqa: E402
from curator.dedup import DEFAULT_THRESHOLD, find_duplicates  # noqa: E402

HERE = Path(__file__).resolve().parent
MNIST = Path(os.environ.get("MNIST", "/work/shared/datasets/mnist"))
KINDS = {
    "rotate": "rotation U(-10, 10) deg",
    "zoom": "zoom U(0.9, 1.1) about the centre",
    "crop": "crop of 85-95 % of each side at a random place, resized back",
    "colour": "brightness and contrast x U(0.8, 1.2); RGB: also saturation x U(0.7, 1.3)",
    "jpeg": "JPEG quality U(50, 90)",
    "noise": "Gaussian noise sigma U(4, 10) of 255",
    "combo": "rotation U(-5, 5) + zoom U(0.95, 1.05) + brightness U(0.9, 1.1) + JPEG 75",
}


def _pil(a):
    from PIL import Image

    return Image.fromarray(a)


def _jpeg(a, q):
    from PIL import Image

    buf = io.BytesIO()
    _pil(a).save(buf, format="JPEG", quality=int(q))
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())))


def _fill(a):
    edge = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    return tuple(int(v) for v in np.median(edge, axis=0).ravel()) if a.ndim == 3 else int(np.median(edge))


def _rotate(a, deg):
    from PIL import Image

    return np.asarray(_pil(a).rotate(deg, resample=Image.Resampling.BILINEAR, fillcolor=_fill(a)))


def _zoom(a, z):
    from PIL import Image

    h, w = a.shape[:2]
    big = _pil(a).resize((max(1, round(w * z)), max(1, round(h * z))), Image.Resampling.BILINEAR)
    out = Image.new(big.mode, (w, h), _fill(a))
    out.paste(big, ((w - big.width) // 2, (h - big.height) // 2))
    return np.asarray(out)


def make_copy(a: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image, ImageEnhance

    if kind == "rotate":
        return _rotate(a, rng.uniform(-10, 10))
    if kind == "zoom":
        return _zoom(a, rng.uniform(0.9, 1.1))
    if kind == "crop":
        h, w = a.shape[:2]
        ch, cw = round(h * rng.uniform(0.85, 0.95)), round(w * rng.uniform(0.85, 0.95))
        y0, x0 = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        return np.asarray(_pil(np.ascontiguousarray(a[y0:y0 + ch, x0:x0 + cw])).resize((w, h), Image.Resampling.BILINEAR))
    if kind == "colour":
        im = ImageEnhance.Brightness(_pil(a)).enhance(rng.uniform(0.8, 1.2))
        im = ImageEnhance.Contrast(im).enhance(rng.uniform(0.8, 1.2))
        if a.ndim == 3:
            im = ImageEnhance.Color(im).enhance(rng.uniform(0.7, 1.3))
        return np.asarray(im)
    if kind == "jpeg":
        return _jpeg(a, rng.integers(50, 91))
    if kind == "noise":
        return np.clip(a + rng.normal(0, rng.uniform(4, 10), a.shape), 0, 255).astype(np.uint8)
    if kind == "combo":
        b = _zoom(_rotate(a, rng.uniform(-5, 5)), rng.uniform(0.95, 1.05))
        b = np.asarray(ImageEnhance.Brightness(_pil(b)).enhance(rng.uniform(0.9, 1.1)))
        return _jpeg(b, 75)
    raise ValueError(kind)


def plant(originals: np.ndarray, per_kind: int, rng):
    n = len(originals)
    rows, origin, kind = [originals], list(range(n)), [""] * n
    copies = []
    for k in KINDS:
        for s in rng.choice(n, per_kind, replace=False).tolist():
            copies.append(make_copy(originals[s], k, rng))
            origin.append(s)
            kind.append(k)
    return np.concatenate([originals, np.stack(copies)]), np.asarray(origin), np.asarray(kind)


def scores(groups, origin, kind) -> dict:
    """Pair precision / recall overall and per copy kind (pairs that hold a copy of that kind)."""
    n_orig = int((kind == "").sum())
    gid = np.full(len(origin), -1)
    for g, grp in enumerate(groups):
        gid[grp] = g
    out = {}
    pred = hit = 0
    per = {k: [0, 0] for k in KINDS}  # predicted pairs with a kind-k copy, true ones among them
    for grp in groups:
        o, kd = origin[grp], kind[grp]
        for a in range(len(grp)):
            for b in range(a + 1, len(grp)):
                same = o[a] == o[b]
                pred += 1
                hit += same
                for k in {kd[a], kd[b]} - {""}:
                    per[k][0] += 1
                    per[k][1] += same
    from collections import Counter

    truth = sum(c * (c - 1) // 2 for c in Counter(origin.tolist()).values())
    out["precision"] = hit / pred if pred else 1.0
    out["recall"] = hit / truth if truth else 1.0
    out["predicted_pairs"], out["true_pairs"] = int(pred), int(truth)
    merged_originals = sum(1 for grp in groups for r in grp if r < n_orig and (origin[grp] == r).sum() == 1
                           and (gid[r] >= 0) and grp[0] != r)
    out["distinct_originals_dropped"] = int(merged_originals)
    for k in KINDS:
        rows = np.flatnonzero(kind == k)
        found = (gid[rows] >= 0) & (gid[rows] == gid[origin[rows]])
        out[f"recall_{k}"] = float(found.mean())
        out[f"precision_{k}"] = per[k][1] / per[k][0] if per[k][0] else 1.0
    return out


def load_mnist(prefix):
    from curator.ingest.idx import iter_images, read_labels

    X = np.concatenate([b for _, b in iter_images(MNIST / f"{prefix}-images-idx3-ubyte.gz")])
    return X, read_labels(MNIST / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)


def load_procedural(n, seed):
    import importlib.util

    from curator.images import decode

    spec = importlib.util.spec_from_file_location("gen", HERE.parents[1] / "datasets" / "procedural_rgb" / "generate.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    tmp = Path(tempfile.mkdtemp(prefix="dedupq-"))
    rows = gen.generate(tmp, n=n, seed=seed, copies=0.0, lookalikes=0.15, recolours=0.10)
    X = np.stack([decode(str(tmp / r["file"]), "RGB", (64, 64)) for r in rows])
    roles = np.array([r["role"] for r in rows])
    return X, roles


def emit(out, row):
    row = {**row, "load": os.getloadavg()[0], "machine": f"{platform.node()} {os.cpu_count()} cores (shared)"}
    print(json.dumps(row), flush=True)
    with open(out, "a") as f:
        f.write(json.dumps(row) + "\n")


def timed(fn):
    t, c = time.time(), time.process_time()
    r = fn()
    return r, round(time.time() - t, 1), round(time.process_time() - c, 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", choices=["mnist", "procedural"], required=True)
    ap.add_argument("--originals", type=int, default=None)
    ap.add_argument("--per-kind", type=int, default=300)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(HERE / "results.jsonl"))
    ap.add_argument("--pairs-out", default=None, help="save the verified candidate pairs, their scores and the "
                    "synthetic copies' scores here (.npz), to re-group at other thresholds offline")
    ap.add_argument("--no-ssl", action="store_true", help="skip the SSL encoder (train, calibrate, kNN): "
                    "thumbnail and verified rows only")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    base = {"data": args.data, "seed": args.seed, "steps": args.steps}
    if args.data == "mnist":
        X0, y0 = load_mnist("train")
        if args.originals:
            X0, y0 = X0[: args.originals], y0[: args.originals]
        extra = {}
    else:
        X0, roles = load_procedural(args.originals or 3000, args.seed)
        extra = {"lookalikes": int((roles == "lookalike").sum()), "recolours": int((roles == "recolour").sum())}
    X, origin, kind = plant(X0, args.per_kind, rng)
    base.update(pool=len(X), originals=len(X0), per_kind=args.per_kind, **extra)
    E_th, wall, cpu = timed(lambda: coldstart.embed_images(X))
    if args.no_ssl:
        base["steps"] = 0
        emit(args.out, {**base, "unit": "embed-thumb", "wall_s": wall, "cpu_s": cpu})
        groups, wall, cpu = timed(lambda: find_duplicates(E_th, DEFAULT_THRESHOLD))
        emit(args.out, {**base, "unit": "dedup", "method": "thumb@0.99", "threshold": DEFAULT_THRESHOLD, "wall_s": wall,
                        "cpu_s": cpu, **scores(groups, origin, kind)})
        verified(args, base, X, E_th, origin, kind)
        return
    enc, wall, cpu = timed(lambda: selfsupervised.train_encoder(X, seed=args.seed, steps=args.steps, progress=False))
    emit(args.out, {**base, "unit": "train", "wall_s": wall, "cpu_s": cpu, **enc.meta,
                    "input_spec": [list(enc.input_spec.size), enc.input_spec.channels]})
    E_ssl, wall, cpu = timed(lambda: enc.embed(X))
    emit(args.out, {**base, "unit": "embed-ssl", "wall_s": wall, "cpu_s": cpu})
    E_th, wall, cpu = timed(lambda: coldstart.embed_images(X))
    emit(args.out, {**base, "unit": "embed-thumb", "wall_s": wall, "cpu_s": cpu})
    cal = {}
    for strength in (selfsupervised.CALIBRATION_STRENGTH, 1.0):
        for name, E, fn, spec in (("ssl", E_ssl, enc.embed, enc.input_spec), ("thumb", E_th, coldstart.embed_images, None)):
            c, wall, cpu = timed(lambda: selfsupervised.calibrate(X, E, fn, seed=args.seed, input_spec=spec,
                                                                  strength=strength))
            cal[name, strength] = c
            emit(args.out, {**base, "unit": f"calibrate-{name}", "wall_s": wall, "cpu_s": cpu, **c})
    s0 = selfsupervised.CALIBRATION_STRENGTH
    methods = [("thumb@0.99", E_th, DEFAULT_THRESHOLD), ("thumb-calibrated", E_th, cal["thumb", s0]["threshold"]),
               ("ssl-calibrated", E_ssl, cal["ssl", s0]["threshold"]),
               ("thumb-calibrated-s1", E_th, cal["thumb", 1.0]["threshold"]),
               ("ssl-calibrated-s1", E_ssl, cal["ssl", 1.0]["threshold"])]
    for method, E, t in methods:
        groups, wall, cpu = timed(lambda: find_duplicates(E, t))
        emit(args.out, {**base, "unit": "dedup", "method": method, "threshold": t, "wall_s": wall, "cpu_s": cpu,
                        **scores(groups, origin, kind)})
    verified(args, base, X, E_th, origin, kind)
    if args.data == "mnist":
        knn(args, base, enc, X0, y0, E_ssl[: len(X0)], E_th[: len(X0)])


def verified(args, base, X, E_th, origin, kind):
    """``curator.copyverify.find_copies``: thumbnail candidates, verified pairs, threshold calibrated on the pool."""
    from curator import copyverify

    saved = {}
    calibrate = copyverify.calibrate_score

    def keep(synthetic, n, pairs, table):  # the verified pair scores, for re-grouping offline (--pairs-out)
        cal, s = calibrate(synthetic, n, pairs, table)
        saved.update(i=np.asarray(pairs[0]), j=np.asarray(pairs[1]), s=np.asarray(s), table=np.asarray(table),
                     **{f"syn_{k}": np.asarray(v) for k, v in synthetic.items() if not np.isscalar(v)})
        return cal, s

    copyverify.calibrate_score = keep
    try:
        (groups, info), wall, cpu = timed(lambda: copyverify.find_copies(list(X), embeddings=E_th, seed=args.seed,
                                                                         progress=False))
    finally:
        copyverify.calibrate_score = calibrate
    if args.pairs_out and saved:
        chroma = copyverify.Prepared(list(X)).chroma
        np.savez_compressed(args.pairs_out, origin=origin, kind=kind, chroma=chroma, **saved)
    cal = info.pop("calibration")
    emit(args.out, {**base, "unit": "calibrate-verified", **cal})
    emit(args.out, {**base, "unit": "dedup", "method": "verified-calibrated", "wall_s": wall, "cpu_s": cpu,
                    **{k: v for k, v in info.items() if k not in ("threshold", "method")}, "check": info["method"],
                    "threshold": info["threshold"],
                    **scores(groups, origin, kind)})


def knn(args, base, enc, X0, y0, E_ssl, E_th):
    """Class separation: 1-NN test error from random pool labels; label propagation on SSL."""
    from curator.semisupervised import extend, propagate

    Xte, yte = load_mnist("t10k")
    T_ssl = enc.embed(Xte)
    T_th = coldstart.embed_images(Xte)
    P = X0.reshape(len(X0), -1).astype(np.float32) / 255
    mu = P.mean(0)
    _, _, Vt = np.linalg.svd(P[::6] - mu, full_matrices=False)
    E_pca = (P - mu) @ Vt[:50].T
    T_pca = (Xte.reshape(len(Xte), -1).astype(np.float32) / 255 - mu) @ Vt[:50].T
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    embs = {"ssl": (unit(E_ssl), unit(T_ssl)), "thumb": (unit(E_th), unit(T_th)), "pca50": (unit(E_pca), unit(T_pca))}
    for labels in (20, 100):
        for s in range(3):
            idx = np.random.default_rng(1000 + s).choice(len(X0), labels, replace=False)
            for name, (E, T) in embs.items():
                nn = (T @ E[idx].T).argmax(1)
                row = {**base, "unit": "knn", "embedding": name, "labels": labels, "label_seed": s,
                       "test_error_1nn": float((y0[idx][nn] != yte).mean())}
                if name == "ssl":
                    (res, wall, cpu) = timed(lambda: propagate(E, idx, y0[idx], classes=10))
                    row.update(test_error_lp=float((extend(res, E, T).argmax(1) != yte).mean()), lp_wall_s=wall,
                               lp_cpu_s=cpu)
                emit(args.out, row)


if __name__ == "__main__":
    main()
