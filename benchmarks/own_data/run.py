"""Own data end to end: a procedural RGB pool of mixed-size JPEG/PNG files -> ingest -> embed with a
user model given as ``module:factory`` -> cold-start dedup -> select 1,000; one process.

Per step: wall time, images per second, and the process's peak RSS so far (``ru_maxrss``: it only
grows, so a flat figure from 10k to 100k images says no step holds the pool in memory).

    nice python benchmarks/own_data/run.py --n 10000 --work /tmp/own10k >> benchmarks/own_data/results.jsonl
    nice python benchmarks/own_data/run.py --n 100000 --work /big/own100k >> benchmarks/own_data/results.jsonl

Resumable step by step: the images in ``--work/images`` are reused (a stopped generation goes on
from the files it wrote), the workspace is ``--work/ws_<n>`` and a step recorded as done in
``--work/steps.jsonl`` is not run again (embedding sets resume batch by batch on their own). Each step
prints its JSON line to stdout as it ends; the last line is the whole run's summary.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(ROOT), str(HERE)]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def generator():
    spec = importlib.util.spec_from_file_location("procedural_rgb", ROOT / "datasets/procedural_rgb/generate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def pair_scores(groups, origin: np.ndarray) -> dict:
    truth = sum(c * (c - 1) // 2 for c in Counter(origin.tolist()).values())
    predicted = hit = 0
    for grp in groups:
        predicted += len(grp) * (len(grp) - 1) // 2
        hit += sum(c * (c - 1) // 2 for c in Counter(origin[grp].tolist()).values())
    return {"precision": hit / predicted if predicted else 1.0, "recall": hit / truth if truth else 1.0}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", required=True, help="folder for the images and the workspace")
    ap.add_argument("--budget", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2, help="processes that generate the images")
    a = ap.parse_args(argv)

    from curator import coldstart, embeddings, ingest_folder, policies
    from curator.dedup import find_duplicates
    from curator.models.spec import resolve_model
    from curator.settings import Settings
    from curator.steps import run_step
    from curator.store import embeddings as store_emb
    from curator.store import samples as store_samples
    from curator.store.queries import dataset_id

    work = Path(a.work)
    images = work / "images"
    steps, t_all = {}, time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    log = work / "steps.jsonl"
    done_before = {json.loads(line)["step"] for line in open(log)} if log.is_file() else set()

    def step(name, n):
        def done(t0):
            dt = time.perf_counter() - t0
            c = os.times()
            steps[name] = {"s": round(dt, 1), "per_s": round(n / dt, 1) if dt else None,
                           "cpu_s": round(c.user + c.system + c.children_user + c.children_system, 1),
                           "peak_rss_mib": round(peak_rss_mib()), "load": os.getloadavg()[0]}
            line = json.dumps({"n": a.n, "step": name, **steps[name]})
            print(line, flush=True)
            with open(log, "a") as fh:
                fh.write(line + "\n")
        return done

    t = time.perf_counter()
    manifest = images / "manifest.jsonl"
    if manifest.is_file() and sum(1 for _ in open(manifest)) == a.n:
        rows = [json.loads(line) for line in open(manifest)]
    else:
        rows = generator().generate(images, n=a.n, seed=a.seed, copies=0.1, workers=a.workers)
    step("generate", a.n)(t)

    ws = work / f"ws_{a.n}"
    settings = Settings(workspace=ws)  # SQLite in the workspace, created by the first step
    t = time.perf_counter()
    if "ingest" not in done_before:
        ingest_folder(images, dataset="own", settings=settings, batch_size=1000)
        step("ingest", a.n)(t)

    t = time.perf_counter()
    adapter = resolve_model("own_model:factory", classes=[f"c{i}" for i in range(8)])
    info = embeddings.compute_embeddings(settings, "own", adapter, batch_size=a.batch_size)
    step("embed_own_model", a.n)(t)

    t = time.perf_counter()
    cold = embeddings.compute_embeddings(settings, "own", embeddings.ColdStartEmbedder(), batch_size=a.batch_size)
    step("embed_coldstart", a.n)(t)

    def read(s):
        ds = dataset_id(s, "own")
        ids = store_samples.ids(s, ds)
        return (ds, ids, store_samples.uris(s, ids),
                store_emb.load(s, settings.embeddings_dir, ds, cold.model_id)[1],
                store_emb.load(s, settings.embeddings_dir, ds, info.model_id)[1])

    ds, ids, uris, C, E = run_step(settings, read)
    t = time.perf_counter()
    groups = find_duplicates(C)
    step("dedup", a.n)(t)
    by_file = {str((images / r["file"]).resolve()): r for r in rows}
    origin = np.array([by_file[u]["of"] if by_file[u]["role"] == "copy" else by_file[u]["id"] for u in uris])
    dedup = {"groups": len(groups), **pair_scores(groups, origin)}
    kind = np.array([by_file[u]["kind"] or "" for u in uris], dtype=object)
    group = np.full(len(uris), -1)
    for g, members in enumerate(groups):
        group[members] = g
    pos = {int(by_file[u]["id"]): i for i, u in enumerate(uris)}
    src = np.array([pos.get(by_file[u]["of"], -1) if by_file[u]["of"] is not None else -1 for u in uris])
    joined = (src >= 0) & (group >= 0) & (group == group[np.maximum(src, 0)])
    dedup["found_by_kind"] = {k: round(float(joined[kind == k].mean()), 3) for k in sorted(set(kind)) if k}
    dedup["merged_lookalike"] = float(joined[[by_file[u]["role"] == "lookalike" for u in uris]].mean())
    dedup["merged_recolour"] = float(joined[[by_file[u]["role"] == "recolour" for u in uris]].mean())

    t = time.perf_counter()
    drop = np.zeros(len(ids), bool)
    for g in groups:
        drop[g[1:]] = True
    from curator import Pool

    keep = np.flatnonzero(~drop)
    chosen = policies.get("kcenter").select(Pool(embeddings=np.asarray(E)[keep], ids=ids[keep]), min(a.budget, len(keep)),
                                               seed=a.seed)
    step("select", len(keep))(t)
    print(json.dumps({"n": a.n, "seed": a.seed, "batch_size": a.batch_size, "steps": steps, "dedup": dedup,
                      "selected": int(len(chosen)), "total_s": round(time.perf_counter() - t_all, 1),
                      "peak_rss_mib": round(peak_rss_mib())}))


if __name__ == "__main__":
    main()
