"""Share of the planted copies that are candidate pairs of the verified dedup (``copyverify.candidates``), by
copy kind, for several query settings: a copy that is no candidate is never verified, so this bounds recall.

The query thumbnails (upright, rotated +-``QUERY_ANGLE``, cut to the centre ``QUERY_CROP``) are computed once
per folder into ``--work/views.npz`` (decoding the files is most of the cost: ~10 minutes at 100k); each
setting then only searches. Settings: ``exact`` / ``compressed`` (FAISS flat, or the IVF-PQ of the streamed
tier ``run.py`` uses), ``crop`` on or off, and the upright ``k``. One JSON line a setting.

    nice python benchmarks/own_data/candidate_coverage.py --n 100000 --work /work/own100k >> F.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1]), str(HERE)]

SETTINGS = [("compressed", False, 8), ("exact", False, 8), ("compressed", True, 8), ("exact", True, 8),
            ("compressed", False, 16), ("compressed", False, 64)]


def views(uris, path: Path) -> dict:
    from curator import copyverify as cv

    if not path.is_file():
        E, Rm, Rp, Z = cv._embed(cv.ImageFiles(uris), (0.0, -cv.QUERY_ANGLE, cv.QUERY_ANGLE, ("crop", cv.QUERY_CROP)),
                                 spill=False)
        np.savez(path, E=E, Rm=Rm, Rp=Rp, Z=Z)
    return dict(np.load(path))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--work", required=True, help="folder holding images/ (run.py's --work)")
    a = ap.parse_args(argv)

    from curator import copyverify as cv
    from curator import index

    images = Path(a.work) / "images"
    rows = [json.loads(line) for line in open(images / "manifest.jsonl")]
    v = views([str((images / r["file"]).resolve()) for r in rows], Path(a.work) / "views.npz")
    pos = {r["id"]: k for k, r in enumerate(rows)}
    copies = [(k, pos[r["of"]], r["kind"]) for k, r in enumerate(rows) if r["role"] == "copy" and r["of"] in pos]
    # the query sets as candidates() asks for them, from the cache
    cv._embed = lambda images, views=(0.0,), **kw: [v["E"]] if tuple(views) == (0.0,) else \
        [v["Z"] if isinstance(x, tuple) else (v["Rm"] if x < 0 else v["Rp"]) for x in views]
    for search, crop, k in SETTINGS:
        index.STREAM_MIN_N, index.EXACT_SEARCH_MAX_N = (0, 10_000) if search == "compressed" else (10**12, 10**12)
        t = time.perf_counter()
        i, j = cv.candidates(range(a.n), k, embeddings=v["E"], query_crop=cv.QUERY_CROP if crop else None)
        have = set(zip(i.tolist(), j.tolist()))
        by: dict = {}
        for c, o, kind in copies:
            x = by.setdefault(kind, [0, 0])
            x[0] += 1
            x[1] += (min(c, o), max(c, o)) in have
        print(json.dumps({"n": a.n, "search": search, "crop_query": crop, "k": k, "pairs": len(i),
                          "s": round(time.perf_counter() - t, 1),
                          "covered": round(sum(x[1] for x in by.values()) / len(copies), 4),
                          "by_kind": {kd: round(x[1] / x[0], 3) for kd, x in sorted(by.items())}}), flush=True)


if __name__ == "__main__":
    main()
