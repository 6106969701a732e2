"""Verified dedup on a run.py workspace, step by step, keeping what ``find_copies`` throws away: the
candidate pairs, their scores and chroma distances, the synthetic copies' scores and the calibration,
saved to ``--out`` (npz + json) so the merged pairs can be looked at against the generator's truth
(``--analyse``) without re-scoring.

    nice -n 10 python benchmarks/own_data/verify_pairs.py --work /work/own10k --n 10000 --workers 2 \
        --out /work/own10k/verify_pairs        # then: --analyse (reads the saved pairs only)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1]), str(HERE)]


#: Pairs scored between two progress lines.
SCORE_LINE = 20_000


def cpu_s() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def rss_anon_mib() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("RssAnon:"):
                return round(int(line.split()[1]) / 1024)
    return 0


def score(a) -> dict:
    from curator import copyverify as cv
    from curator.settings import Settings
    from curator.steps import run_step
    from curator.store import embeddings as store_emb
    from curator.store import samples as store_samples
    from curator.store.queries import dataset_id

    settings = Settings(workspace=Path(a.work) / f"ws_{a.n}")

    def read(s):
        ds = dataset_id(s, "own")
        rows = store_samples.hash_arrays(s, ds)
        ids = rows.ids[: a.first]
        return ds, ids

    ds, ids = run_step(settings, read)
    from curator import embeddings

    cold = embeddings.compute_embeddings(settings, "own", embeddings.ColdStartEmbedder())  # complete: read
    C = run_step(settings, lambda s: store_emb.load(s, settings.embeddings_dir, ds, cold.model_id)[1][: len(ids)])
    uris = run_step(settings, lambda s: store_samples.uris(s, ids))
    images = cv.ImageFiles(uris)
    times, log = {}, []

    def phase(name, fn):
        t0, c0 = time.perf_counter(), cpu_s()
        out = fn()
        times[name] = {"wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(cpu_s() - c0, 1),
                       "rss_anon_mib": rss_anon_mib(), "load": os.getloadavg()[0]}
        print(json.dumps({"phase": name, **times[name]}), flush=True)
        return out

    i, j = phase("candidates", lambda: cv.candidates(images, embeddings=C))
    p = phase("prepare", lambda: cv.prepare_pool(images, progress=False))
    syn = phase("synthetic", lambda: cv.synthetic_scores(images, p, seed=a.seed, progress=False))
    def scored():  # by blocks: a line each (rate, heap), the scores so far kept, so a stopped run tells its rate
        out, t0, c0 = np.empty(len(i)), time.perf_counter(), cpu_s()
        for b in range(0, len(i), SCORE_LINE):
            e = min(b + SCORE_LINE, len(i))
            out[b:e] = cv.score_pairs(p, i[b:e], j[b:e], floor=syn["floor"], progress=False, workers=a.workers)
            np.save(a.out + ".partial_scores.npy", out[:e])
            print(json.dumps({"pairs_scored": e, "of": int(len(i)), "wall_s": round(time.perf_counter() - t0, 1),
                              "cpu_s": round(cpu_s() - c0, 1), "rss_anon_mib": rss_anon_mib(),
                              "load": os.getloadavg()[0]}), flush=True)
        return out

    s = phase("score", scored)
    chroma = cv.chroma_distance(p, i, j)
    cal = phase("calibrate", lambda: cv.calibrate(syn, len(ids), (i, j), s))
    np.savez(a.out + ".npz", i=i, j=j, s=s, chroma=chroma, syn_scores=syn["scores"], syn_chroma=syn["chroma"],
             syn_pos=syn["positions"], syn_kinds=np.array(syn["kinds"]), syn_grid=syn["grid"], uris=np.array(uris),
             row_chroma=np.asarray(p.chroma))
    out = {"n": a.n, "first": a.first, "workers": a.workers, "seed": a.seed, "candidate_pairs": int(len(i)),
           "times": times, "calibration": cal, "floor": syn["floor"]}
    with open(a.out + ".json", "w") as fh:
        json.dump(out, fh, indent=1, default=float)
    return out


def row_chroma(z, uris) -> np.ndarray:
    """The rows' mean chroma (``Prepared.chroma``): saved with the pairs, or (pairs saved before it was)
    read again from the image files, as ``find_copies`` prepares them."""
    from curator import copyverify as cv

    if "row_chroma" in z.files:
        return z["row_chroma"]
    return np.asarray(cv.prepare_pool(cv.ImageFiles(uris), progress=False).chroma)


def groups_of(a) -> dict:
    """What ``find_copies`` returns on the saved pairs (the same calibrate, grey_thresholds and grouping:
    every step after the scoring is arrays), scored against the truth like run.py's dedup step."""
    from types import SimpleNamespace

    from curator import copyverify as cv
    from curator.dedup import find_duplicates
    from run import score_dedup

    z = np.load(a.out + ".npz")
    uris = z["uris"].tolist()
    n = len(uris)
    syn = {"scores": z["syn_scores"], "chroma": z["syn_chroma"], "positions": z["syn_pos"],
           "kinds": tuple(z["syn_kinds"].tolist()), "grid": z["syn_grid"], "floor": 0.0}
    i, j, s = z["i"], z["j"], z["s"]
    cal = cv.calibrate(syn, n, (i, j), s)
    t = cal["threshold"]
    pair_t, grey = cv.grey_thresholds(SimpleNamespace(chroma=row_chroma(z, uris)), i, j, s, syn, t)
    out = {}
    for name, thr in (("pool threshold", np.full(len(i), t)), ("+ grey pairs' own", pair_t)):
        keep = (s >= thr) & (z["chroma"] <= cal["chroma_tolerance"])
        g = find_duplicates(np.random.default_rng(0).normal(size=(n, 8)).astype(np.float32), t,
                            pairs=(i[keep], j[keep]))
        out[name] = score_dedup(g, uris, Path(a.work) / "images")
    return {"n": a.n, "first": a.first, "threshold": t, "pool_copy_share": cal["pool_copy_share"],
            "expected_false_rows": cal["expected_false_rows"], "expected_missed": cal["expected_missed"],
            "tail": cal["tail"], "chroma_tolerance": cal["chroma_tolerance"], "grey": grey, "dedup": out}


def truth(uris, images: Path):
    at = {u: k for k, u in enumerate(uris)}
    n = len(uris)
    meta = [None] * n
    with open(images / "manifest.jsonl") as fh:
        for line in fh:
            r = json.loads(line)
            k = at.get(str((images / r["file"]).resolve()))
            if k is not None:
                meta[k] = r
    return meta


def show(uris, i, j, rows, path) -> None:
    """The pairs ``rows`` side by side (each image upright at 128 x 128), four pairs a line, into ``path``."""
    from PIL import Image

    from curator import images as img

    tiles = [np.concatenate([img.decode(uris[i[k]], "RGB", (128, 128)), np.full((128, 4, 3), 255, np.uint8),
                             img.decode(uris[j[k]], "RGB", (128, 128)), np.full((128, 12, 3), 255, np.uint8)], 1)
             for k in rows]
    tiles += [np.full_like(tiles[0], 255)] * (-len(tiles) % 4)
    Image.fromarray(np.concatenate([np.concatenate(tiles[r:r + 4], 1) for r in range(0, len(tiles), 4)], 0)).save(path)


def analyse(a) -> dict:
    """The pairs a threshold merges, by what they are in the generator's truth."""
    z = np.load(a.out + ".npz")
    cal = json.load(open(a.out + ".json"))["calibration"]
    t = a.threshold or cal["threshold"]  # default: the threshold of the code that scored the pairs
    tol = cal["chroma_tolerance"]
    meta = truth(z["uris"].tolist(), Path(a.work) / "images")
    origin = np.array([m["of"] if m["role"] == "copy" else m["id"] for m in meta])
    i, j, s, ch = z["i"], z["j"], z["s"], z["chroma"]
    true = origin[i] == origin[j]
    kept = (s >= t) & (ch <= tol)

    def what(k):
        mi, mj = meta[i[k]], meta[j[k]]
        roles = "+".join(sorted([mi["role"] + (":" + mi["kind"] if mi["kind"] else ""),
                                 mj["role"] + (":" + mj["kind"] if mj["kind"] else "")]))
        twin = mi["of"] == mj["id"] or mj["of"] == mi["id"] or (mi["of"] is not None and mi["of"] == mj["of"])
        related = "twin" if twin else "same-class" if mi["class"] == mj["class"] else "other-class"
        return roles, related, f"{mi['mode']}/{mj['mode']}"

    false = np.flatnonzero(kept & ~true)
    if a.show:
        show(z["uris"].tolist(), i, j, false[np.argsort(-s[false])][:16], a.show)
    by = Counter(what(k)[:2] for k in false)
    modes = Counter(what(k)[2] for k in false)
    all_modes = Counter(m["mode"] for m in meta)
    res = {"threshold": t, "chroma_tolerance": tol, "kept_pairs": int(kept.sum()),
           "true_kept": int((kept & true).sum()), "true_candidates": int(true.sum()), "false_kept": int(len(false)),
           "false_by_roles": {f"{r} [{rel}]": c for (r, rel), c in by.most_common(15)},
           "false_by_modes": dict(modes.most_common()), "pool_modes": dict(all_modes),
           "false_score_q": {q: float(np.quantile(s[false], q)) for q in (0.5, 0.9, 0.99)} if len(false) else None,
           "true_score_q": {q: float(np.quantile(s[true], q)) for q in (0.01, 0.05, 0.5)},
           "examples": [[meta[i[k]]["file"], meta[j[k]]["file"], round(float(s[k]), 4), round(float(ch[k]), 4)]
                        for k in false[np.argsort(-s[false])][:12]]}
    return res


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--first", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", required=True, help="path stem of the saved pairs (.npz, .json)")
    ap.add_argument("--analyse", action="store_true", help="only analyse the saved pairs")
    ap.add_argument("--results", default=None, help="append the groups' scores (one JSON line) to this file")
    ap.add_argument("--show", default=None, help="--analyse: the 16 highest-scoring false pairs into this PNG")
    ap.add_argument("--threshold", type=float, default=None, help="analyse at this threshold (default: calibrated)")
    a = ap.parse_args(argv)
    if not a.analyse:
        score(a)
    res = groups_of(a)
    print(json.dumps(res), flush=True)
    if a.results:
        with open(a.results, "a") as fh:
            fh.write(json.dumps(res) + "\n")
    a.threshold = a.threshold or res["threshold"]  # the pairs merged at the calibrated threshold of this code
    print(json.dumps(analyse(a), indent=1))


if __name__ == "__main__":
    main()
