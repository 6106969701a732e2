"""Make the bundled sample dataset: MNIST in the 1989 setting (LeCun et al.).

7,291 training and 2,007 test images sampled from MNIST with a fixed seed,
resized bilinearly from 28x28 to 16x16 (uint8), written as gzip IDX files.
Reproducible: running this again writes byte-identical files.

    python datasets/make_mnist1989.py [--source ../shared/datasets/mnist]
"""

from __future__ import annotations

import argparse
import gzip
import struct
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
SEED = 1989
N_TRAIN, N_TEST, SIZE = 7291, 2007, 16


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        magic = struct.unpack(">i", fh.read(4))[0]
        ndim = magic & 0xFF
        dims = struct.unpack(f">{ndim}i", fh.read(4 * ndim))
        return np.frombuffer(fh.read(), dtype=np.uint8).reshape(dims)


def write_idx(path: Path, arr: np.ndarray) -> None:
    magic = 0x0800 | arr.ndim
    header = struct.pack(">i", magic) + struct.pack(f">{arr.ndim}i", *arr.shape)
    # mtime=0 keeps the gzip bytes reproducible.
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as fh:
        fh.write(header + np.ascontiguousarray(arr, dtype=np.uint8).tobytes())


def resize(images: np.ndarray) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(im).resize((SIZE, SIZE), Image.BILINEAR)) for im in images])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=HERE.parent.parent / "shared" / "datasets" / "mnist")
    ap.add_argument("--out", type=Path, default=HERE / "mnist1989")
    args = ap.parse_args()
    rng = np.random.default_rng(SEED)
    args.out.mkdir(parents=True, exist_ok=True)
    for split, src, n in (("train", "train", N_TRAIN), ("test", "t10k", N_TEST)):
        images = read_idx(args.source / f"{src}-images-idx3-ubyte.gz")
        labels = read_idx(args.source / f"{src}-labels-idx1-ubyte.gz")
        idx = np.sort(rng.choice(len(images), size=n, replace=False))
        write_idx(args.out / f"{split}-images-idx3-ubyte.gz", resize(images[idx]))
        write_idx(args.out / f"{split}-labels-idx1-ubyte.gz", labels[idx])
        print(f"{split}: {n} images of {SIZE}x{SIZE} from {src}")


if __name__ == "__main__":
    main()
