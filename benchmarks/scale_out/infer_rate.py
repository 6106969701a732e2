"""CNN inference throughput on MNIST-sized images (the per-sample cost of decode + embed + score in COST.md).

    PYTHONPATH=. python benchmarks/scale_out/infer_rate.py [--n 20000] >> benchmarks/scale_out/results.jsonl

The built-in ``SmallCNN`` (curator.models.cnn, untrained: inference cost does not depend on the weights) over
``n`` MNIST training images read from the IDX file, through ``CNNAdapter.predict`` (probabilities +
L2-normalised embeddings), without and with 10 MC-dropout passes; decode = reading the IDX file and PNG
decode of 1,000 images (what ingest wrote) timed apart.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import time
from pathlib import Path

import numpy as np

MNIST = Path(os.environ.get("MNIST_IDX", "/work/shared/datasets/mnist/train-images-idx3-ubyte.gz"))


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20_000)
    args = ap.parse_args()
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dedup_scale"))
    from planted import read_idx_images
    from PIL import Image

    from curator.models.cnn import CNNAdapter, SmallCNN

    images = read_idx_images(MNIST, args.n)
    # decode cost: PNG round trip of 1,000 images
    pngs = []
    for img in images[:1000]:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        pngs.append(buf.getvalue())
    t, c = time.perf_counter(), _cpu()
    for b in pngs:
        np.asarray(Image.open(io.BytesIO(b)))
    decode = {"png_decode_per_s": round(1000 / (time.perf_counter() - t), 1),
              "png_decode_cpu_ms_per_image": round((_cpu() - c), 4)}
    model = CNNAdapter(SmallCNN(), batch_size=1024, device="cpu")
    model.predict(images[:1024])  # warm-up
    import torch

    row = {"stage": "infer_rate", "n": args.n, "torch_threads": torch.get_num_threads(), **decode,
           "loadavg_before": Path("/proc/loadavg").read_text().split()[:3]}
    for mc in (0, 10):
        t, c = time.perf_counter(), _cpu()
        model.predict(images, mc_samples=mc)
        wall, cpu = time.perf_counter() - t, _cpu() - c
        row[f"mc{mc}_images_per_s"] = round(args.n / wall, 1)
        row[f"mc{mc}_cpu_ms_per_image"] = round(1000 * cpu / args.n, 4)
    row["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3]
    print(json.dumps(row))


if __name__ == "__main__":
    main()
