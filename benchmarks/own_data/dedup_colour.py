"""Pair precision/recall of the colour-aware cold-start embedding, per copy kind, on three sets.

1. the procedural RGB set (``datasets/procedural_rgb``; seed 0 chooses, seed 1 checks): planted copies
   must be grouped with their original; look-alikes (same class and colour, drawn elsewhere) and
   recoloured twins (same drawing, another hue) must not;
2. the real photos shipped with scikit-image and scikit-learn, each with one copy of every kind
   (``generate.plant``): copies of a photo found, two different photos never merged;
3. MNIST: grayscale, so the chroma part is zero and the vectors are those of the colour-blind
   embedding (``docs/dedup.md``'s MNIST tables hold unchanged; ``tests/test_dedup.py`` checks them).

The chroma weight and the threshold are read off the grid on the procedural seed-0 set, then checked
on seed 1 and on the photos (not tuned on them).

    nice python benchmarks/own_data/dedup_colour.py --n 2000 > benchmarks/own_data/dedup_colour.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from curator import coldstart  # noqa: E402
from curator.dedup import find_duplicates  # noqa: E402

WEIGHTS = [0.0, 0.5, 1.0, 2.0, 4.0]
THRESHOLDS = [0.95, 0.97, 0.98, 0.985, 0.99, 0.995]


def generator():
    spec = importlib.util.spec_from_file_location("procedural_rgb", ROOT / "datasets/procedural_rgb/generate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def split_parts(E: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unit luma part, chroma part at weight 1) of cold-start vectors (made at CHROMA_WEIGHT)."""
    n_luma = coldstart.THUMB_SIDE ** 2
    scale = np.linalg.norm(E[:, :n_luma], axis=1, keepdims=True)
    return E[:, :n_luma] / scale, E[:, n_luma:] / scale / coldstart.CHROMA_WEIGHT


def at_weight(parts, w: float) -> np.ndarray:
    g, c = parts
    v = np.concatenate([g, w * c], axis=1)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def score(E, origin, kind, source, thresholds):
    """Pair precision/recall; per copy kind the share grouped with its original; per distinct
    role (lookalike, recolour, different photos) the share wrongly grouped with its source."""
    from collections import Counter

    truth = sum(c * (c - 1) // 2 for c in Counter(origin.tolist()).values())
    out = []
    for t in thresholds:
        groups = find_duplicates(E, t)
        group = np.full(len(E), -1)
        for g_id, grp in enumerate(groups):
            group[grp] = g_id
        predicted = hit = 0
        for grp in groups:
            predicted += len(grp) * (len(grp) - 1) // 2
            hit += sum(c * (c - 1) // 2 for c in Counter(origin[grp].tolist()).values())
        together = (group >= 0) & (group == group[np.maximum(source, 0)]) & (source >= 0)
        kinds = sorted({k for k in kind if k})
        row = {"threshold": t, "precision": hit / predicted if predicted else 1.0,
               "recall": hit / truth if truth else 1.0, "true_pairs": truth, "predicted_pairs": predicted}
        row["found_by_kind"] = {k: round(float(together[kind == k].mean()), 3) for k in kinds
                                if not k.startswith("distinct:")}
        row["merged_by_role"] = {k[9:]: round(float(together[kind == k].mean()), 3) for k in kinds
                                 if k.startswith("distinct:")}
        out.append(row)
    return out


def procedural(n: int, seed: int, workdir: Path):
    gen = generator()
    out = workdir / f"procedural_{n}_{seed}"
    rows = gen.generate(out, n=n, seed=seed)
    E = coldstart.embed_paths([str(out / r["file"]) for r in rows])
    origin = np.array([r["of"] if r["role"] == "copy" else r["id"] for r in rows])
    source = np.array([r["of"] if r["of"] is not None else -1 for r in rows])
    kind = np.array([r["kind"] if r["role"] == "copy" else
                     (f"distinct:{r['role']}" if r["role"] != "original" else "") for r in rows], dtype=object)
    return E, origin, kind, source


def shipped_photos() -> list:
    """The distinct colour photos that ship with scikit-image and scikit-learn (PIL images, RGB)."""
    from PIL import Image

    pics = []
    try:
        import skimage.data as sd
        # distinct pictures only: skimage's cat() is chelsea(), stereo_motorcycle() holds motorcycle_left()
        for name in ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "hubble_deep_field",
                     "immunohistochemistry", "retina", "colorwheel", "logo"):
            img = getattr(sd, name, None)
            if img is None:
                continue
            arr = img()
            arr = arr[0] if isinstance(arr, tuple) else arr
            if arr.ndim == 3 and arr.shape[2] >= 3:
                pics.append(Image.fromarray(arr[..., :3].astype(np.uint8)))
    except ImportError:
        pass
    try:
        from sklearn.datasets import load_sample_images
        pics += [Image.fromarray(a) for a in load_sample_images().images]
    except ImportError:
        pass
    return pics


def photos(seed: int = 0):
    """The shipped colour photos, each with one copy of every kind; different photos are distinct."""
    gen = generator()
    rng = np.random.default_rng(seed)
    pics = shipped_photos()
    images, origin, kind, source = [], [], [], []
    for i, pic in enumerate(pics):
        pic.thumbnail((320, 320))
        base = len(images)
        images.append(np.asarray(pic))
        origin.append(base), kind.append(""), source.append(-1)
        for k in gen.COPY_KINDS:
            images.append(np.asarray(gen.plant(pic, k, rng)))
            origin.append(base), kind.append(k), source.append(base)
    E = coldstart.embed_images(images)
    return E, np.array(origin), np.array(kind, dtype=object), np.array(source), len(pics)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    a = ap.parse_args(argv)
    report = {"weights": WEIGHTS, "thresholds": THRESHOLDS, "n": a.n}
    with tempfile.TemporaryDirectory() as tmp:
        for name, seed in (("procedural_seed0_tune", 0), ("procedural_seed1_check", 1)):
            E, origin, kind, source = procedural(a.n, seed, Path(tmp))
            parts = split_parts(E)
            report[name] = {str(w): score(at_weight(parts, w), origin, kind, source, THRESHOLDS) for w in WEIGHTS}
    E, origin, kind, source, n_photos = photos()
    parts = split_parts(E)
    report["photos"] = {"originals": n_photos,
                        **{str(w): score(at_weight(parts, w), origin, kind, source, THRESHOLDS) for w in WEIGHTS}}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
