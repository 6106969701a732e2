"""Decode throughput of one pool three ways: sequential, ``threads=2``, and a torch DataLoader with
2 worker processes (batches of 64 at 96 x 96 RGB). CPU time is also reported: on a shared machine
wall time alone says more about the neighbours than about the method.

    python benchmarks/own_data/decode_speed.py DIR_OF_IMAGES
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from curator import images  # noqa: E402


class _Files:  # a map-style dataset: one decoded image per index
    def __init__(self, uris):
        self.uris = uris

    def __len__(self):
        return len(self.uris)

    def __getitem__(self, i):
        return images.decode(self.uris[i], "RGB", (96, 96))


def main():
    uris = sorted(str(p) for p in Path(sys.argv[1]).rglob("*") if p.suffix in (".jpg", ".png"))
    out = {"images": len(uris)}

    def clock(name, fn):
        t, c = time.perf_counter(), time.process_time()
        n = fn()
        out[name] = {"images_per_s": round(n / (time.perf_counter() - t), 1),
                     "cpu_s_this_process": round(time.process_time() - c, 2)}

    clock("sequential", lambda: sum(len(b) for b in images.iter_batches(uris, 64, mode="RGB", size=(96, 96))))
    clock("threads2", lambda: sum(len(b) for b in images.iter_batches(uris, 64, mode="RGB", size=(96, 96),
                                                                       threads=2)))

    def loader():
        import torch

        dl = torch.utils.data.DataLoader(_Files(uris), batch_size=64, num_workers=2)
        return sum(len(b) for b in dl)

    clock("dataloader_workers2", loader)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
