"""Verified dedup alone (``curator.copyverify.find_copies``) on a generated folder, without the store: the
step of ``run.py --verify`` when ingest and the embeddings are already known to work, for re-measuring the
copy figures after a change to the candidates or the score (a 100k ``run.py`` spends ~15 of its ~75 minutes
before the dedup step).

The cold-start vectors are computed once into ``--work/cold.npy`` (the same ``coldstart.embed_images`` the
store's embedding set holds, in manifest order) and passed as a read-only memory map, as ``run.py`` passes
the store's. One JSON line: pairs, wall / CPU seconds, the step's peak RSS (VmHWM reset at its start) and
heap, and the pair precision / recall by copy kind (``run.score_dedup``); the record for
``regroup_record.py`` is saved as ``--work/verify_record_<n>.npz``. A stopped run started again with the
same arguments resumes: the images (the generator skips files it has), the cold-start vectors (a finished
file) and the scored candidate pairs (``--work/checkpoint``, ``curator.checkpoint``) are kept.

    nice python benchmarks/own_data/verify_folder.py --n 100000 --work /work/own100k --workers 2 >> F.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1]), str(HERE)]


def cold_vectors(uris, path: Path) -> np.ndarray:
    from curator import coldstart, copyverify

    if not path.is_file():
        out = np.lib.format.open_memmap(str(path) + ".part", "w+", np.float32, (len(uris), coldstart.dim()))
        for s, imgs in copyverify._chunks(copyverify.ImageFiles(uris)):
            out[s:s + len(imgs)] = coldstart.embed_images(imgs)
        out.flush()
        del out
        os.replace(str(path) + ".part", path)
    return np.load(path, mmap_mode="r")


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", required=True, help="folder holding images/ (run.py's --work)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--label", default="")
    a = ap.parse_args(argv)

    from curator import copyverify
    from run import StepMemory, generator, save_record, score_dedup

    work = Path(a.work)
    images = work / "images"
    manifest = images / "manifest.jsonl"
    if not (manifest.is_file() and sum(1 for _ in open(manifest)) == a.n):
        generator().generate(images, n=a.n, seed=a.seed, copies=0.1, workers=a.workers)
    uris = [str((images / json.loads(line)["file"]).resolve()) for line in open(manifest)]
    C = cold_vectors(uris, work / "cold.npy")
    mem, t0, c0 = StepMemory(), time.perf_counter(), copyverify._cpu_s()
    rec = {}
    groups, info = copyverify.find_copies(copyverify.ImageFiles(uris), embeddings=C, seed=a.seed, progress=True,
                                          workers=a.workers, record=rec, checkpoint=work / "checkpoint")
    step = {"s": round(time.perf_counter() - t0, 1), "cpu_s": round(copyverify._cpu_s() - c0, 1), **mem.end(),
            "load": os.getloadavg()[0]}
    save_record(rec, uris, info, work / f"verify_record_{a.n}")
    keep = ("threshold", "candidate_pairs", "verified_pairs", "verify_wall_s", "verify_cpu_s", "pairs_per_cpu_s",
            "chroma_tolerance", "grid_floor")
    print(json.dumps({"n": a.n, "label": a.label, "seed": a.seed, "workers": a.workers, "dedup": step,
                      "verify_info": {k: info.get(k) for k in keep}, **score_dedup(groups, uris, images)}), flush=True)


if __name__ == "__main__":
    main()
