"""Own data end to end: a procedural RGB pool of mixed-size JPEG/PNG files -> ingest -> embed with a
user model given as ``module:factory`` -> cold-start dedup -> select 1,000; one process.

Per step: wall time, images per second, CPU seconds, the step's own peak RSS (VmHWM reset at its start)
and peak heap (sampled RssAnon), and the run's peak so far: a flat step figure from 10k to 100k images
says no step holds the pool in memory. ``--first K`` runs dedup and select on the first K samples of a
larger workspace (the RSS trace of README.md).

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


def _status_kib(*keys) -> list[int]:
    got = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            k, _, v = line.partition(":")
            if k in keys:
                got[k] = int(v.split()[0])
    return [got.get(k, 0) for k in keys]


class StepMemory:
    """Peak memory of ONE step, not of the run so far: VmHWM is reset at the step's start (writing 5
    to /proc/self/clear_refs, Linux >= 4.0) and read at its end; a thread samples RssAnon (the heap:
    what the step allocates, without file pages of memory-mapped embeddings, which the kernel can
    drop) every 20 ms. Both in MiB."""

    def __init__(self):
        import threading

        self.anon, self.stop = 0, threading.Event()
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
        except OSError:
            pass  # older kernel: VmHWM is then the run's peak so far, as ru_maxrss
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self):
        while True:
            self.anon = max(self.anon, _status_kib("RssAnon")[0])
            if self.stop.wait(0.02):
                return

    def end(self) -> dict:
        self.stop.set()
        self.thread.join()
        hwm, anon = _status_kib("VmHWM", "RssAnon")
        return {"step_hwm_mib": round(hwm / 1024), "step_anon_mib": round(max(self.anon, anon) / 1024)}


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


def score_dedup(groups, uris, images: Path) -> dict:
    """Pair precision/recall of ``groups`` against the generator's manifest, and the share of each
    planted copy kind joined to its original; the manifest read as compact arrays in URI order."""
    at = {u: i for i, u in enumerate(uris)}
    n = len(uris)
    gen_id, of = np.full(n, -1, np.int64), np.full(n, -1, np.int64)
    role, kind = np.empty(n, dtype=object), np.full(n, "", dtype=object)
    with open(images / "manifest.jsonl") as fh:
        for line in fh:
            r = json.loads(line)
            i = at.get(str((images / r["file"]).resolve()))
            if i is not None:
                gen_id[i], role[i], kind[i] = r["id"], r["role"], r["kind"] or ""
                of[i] = -1 if r["of"] is None else r["of"]
    origin = np.where(role == "copy", of, gen_id)
    out = {"groups": len(groups), **pair_scores(groups, origin)}
    group = np.full(n, -1)
    for g, members in enumerate(groups):
        group[members] = g
    pos = dict(zip(gen_id.tolist(), range(n)))
    src = np.array([pos.get(int(o), -1) if o >= 0 else -1 for o in of])
    joined = (src >= 0) & (group >= 0) & (group == group[np.maximum(src, 0)])
    out["found_by_kind"] = {k: round(float(joined[kind == k].mean()), 3) for k in sorted(set(kind)) if k}
    out["merged_lookalike"] = float(joined[role == "lookalike"].mean()) if (role == "lookalike").any() else None
    out["merged_recolour"] = float(joined[role == "recolour"].mean()) if (role == "recolour").any() else None
    return out


def save_record(rec: dict, uris, info: dict, stem: Path) -> None:
    """What the verified groups were made from (``find_copies(record=)``), as ``stem``.npz + .json, for
    ``regroup_record.py``: every step after the scoring is array work, re-run offline without scoring."""
    syn = rec.pop("synthetic") or {}
    np.savez(str(stem) + ".npz", uris=np.array(uris), **{k: np.asarray(v) for k, v in rec.items()},
             **{f"syn_{k}": np.asarray(v) for k, v in syn.items() if k != "floor"})
    with open(str(stem) + ".json", "w") as fh:
        json.dump({"calibration": info.get("calibration"), "threshold": info.get("threshold"),
                   "floor": syn.get("floor"), "chroma_tolerance": info.get("chroma_tolerance")}, fh, indent=1,
                  default=float)


def verified_dedup(settings, ids, sha, C, a, work: Path):
    """``curator.copyverify.find_copies`` on the samples' image files (read when needed: ``ImageFiles``),
    candidates from the stored cold-start vectors ``C``; ``--verify-workers`` processes score the pairs (the
    progress line then counts only the calibration's pairs: the others are scored in the children). A thread
    appends a progress line every minute to ``--work/verify_progress.jsonl`` (pairs scored of the candidates,
    CPU s, heap), so a run stopped before the end still gives the rate and the memory so far."""
    import threading

    from curator import copyverify
    from curator.steps import run_step
    from curator.store import samples as store_samples

    uris = run_step(settings, lambda s: store_samples.uris(s, ids))
    count, total, stop = [0], [None], threading.Event()
    score, cands = copyverify.pair_score, copyverify.candidates

    def counted(*args, **kw):
        count[0] += 1
        return score(*args, **kw)

    def candidates(*args, **kw):
        out = cands(*args, **kw)
        total[0] = len(out[0])
        return out

    t0, c0 = time.perf_counter(), time.process_time()

    def beat():
        with open(work / "verify_progress.jsonl", "a") as fh:
            while not stop.wait(60):
                fh.write(json.dumps({"first": a.first, "pairs_scored": count[0], "candidate_pairs": total[0],
                                     "wall_s": round(time.perf_counter() - t0, 1),
                                     "cpu_s": round(time.process_time() - c0, 1),
                                     "rss_anon_mib": round(_status_kib("RssAnon")[0] / 1024),
                                     "load": os.getloadavg()[0]}) + "\n")
                fh.flush()

    copyverify.pair_score, copyverify.candidates = counted, candidates
    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    rec = {}
    try:
        groups, info = copyverify.find_copies(copyverify.ImageFiles(uris), hashes=sha, embeddings=C, seed=a.seed,
                                              progress=True, workers=a.verify_workers, record=rec)
    finally:
        stop.set()
        copyverify.pair_score, copyverify.candidates = score, cands
    save_record(rec, uris, info, work / f"verify_record_{a.first or a.n}")
    cal = info.get("calibration") or {}
    keep = ("threshold", "candidate_pairs", "verified_pairs", "verify_wall_s", "verify_cpu_s", "pairs_per_cpu_s",
            "chroma_tolerance", "grid_floor", "groups", "duplicates")
    return groups, {**{k: info.get(k) for k in keep}, "separated": cal.get("separated"),
                    "expected_missed": cal.get("expected_missed")}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", required=True, help="folder for the images and the workspace")
    ap.add_argument("--budget", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2, help="processes that generate the images")
    ap.add_argument("--first", type=int, default=None,
                    help="dedup and select on the first K samples of the workspace only (the RSS trace at 10k/30k "
                         "from the 100k workspace)")
    ap.add_argument("--dedup-tier", choices=["streamed", "memory"], default="streamed",
                    help="streamed: curator.index's streamed tier (reads the memory-mapped vectors by chunks, no "
                         "copy); memory: the default below index.STREAM_MIN_N rows (three n x d float32 copies)")
    ap.add_argument("--stream-chunk-mib", type=int, default=32,
                    help="rows the streamed tier reads at once, as MiB of float32 vectors")
    ap.add_argument("--no-hashes", action="store_true",
                    help="dedup without the samples' content hashes (exact copies found by comparing vectors)")
    ap.add_argument("--verify", action="store_true",
                    help="dedup by verified copy detection (curator.copyverify.find_copies on the image files, "
                         "threshold calibrated on the pool) instead of cosine at 0.99")
    ap.add_argument("--verify-workers", type=int, default=1,
                    help="processes that score the verified candidate pairs (copyverify.score_pairs(workers=))")
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

    run_peak = [0]

    def step(name, n):
        mem, c0 = StepMemory(), os.times()

        def done(t0):
            dt = time.perf_counter() - t0
            c = os.times()
            cpu = c.user + c.system + c.children_user + c.children_system
            steps[name] = {"s": round(dt, 1), "per_s": round(n / dt, 1) if dt else None,
                           "cpu_s": round(cpu, 1),
                           "step_cpu_s": round(cpu - c0.user - c0.system - c0.children_user - c0.children_system, 1),
                           **mem.end(), "load": os.getloadavg()[0]}
            run_peak[0] = max(run_peak[0], steps[name]["step_hwm_mib"], round(peak_rss_mib()))
            steps[name]["peak_rss_mib"] = run_peak[0]  # the run's peak so far (ru_maxrss falls with the reset)
            line = json.dumps({"n": a.n, "first": a.first, "dedup_tier": a.dedup_tier, "hashes": not a.no_hashes,
                               "verify": a.verify,
                               "chunk_mib": a.stream_chunk_mib if a.dedup_tier == "streamed" else None,
                               "step": name, **steps[name]})
            print(line, flush=True)
            with open(log, "a") as fh:
                fh.write(line + "\n")
        return done

    t, done = time.perf_counter(), step("generate", a.n)
    manifest = images / "manifest.jsonl"
    if not (manifest.is_file() and sum(1 for _ in open(manifest)) == a.n):
        generator().generate(images, n=a.n, seed=a.seed, copies=0.1, workers=a.workers)
    done(t)  # the manifest (the truth) is read back only to score dedup, as compact arrays

    ws = work / f"ws_{a.n}"
    settings = Settings(workspace=ws)  # SQLite in the workspace, created by the first step
    if "ingest" not in done_before:
        t, done = time.perf_counter(), step("ingest", a.n)
        ingest_folder(images, dataset="own", settings=settings, batch_size=1000)
        done(t)

    t, done = time.perf_counter(), step("embed_own_model", a.n)
    adapter = resolve_model("own_model:factory", classes=[f"c{i}" for i in range(8)])
    info = embeddings.compute_embeddings(settings, "own", adapter, batch_size=a.batch_size)
    done(t)

    t, done = time.perf_counter(), step("embed_coldstart", a.n)
    cold = embeddings.compute_embeddings(settings, "own", embeddings.ColdStartEmbedder(), batch_size=a.batch_size)
    done(t)

    def read(s):
        ds = dataset_id(s, "own")
        # ids and content hashes as arrays (40 bytes a sample, no per-sample Python object), in id
        # order as the embedding sets' rows; the URIs are read only to score the groups, after the steps
        rows = store_samples.hash_arrays(s, ds)
        ids = rows.ids[: a.first]
        # exact copies by hash, as ``curator dedup`` passes them (without them find_duplicates
        # compares the rows themselves)
        sha = None if a.no_hashes else rows.sha256[: a.first]
        return (ds, ids, sha,
                store_emb.load(s, settings.embeddings_dir, ds, cold.model_id)[1][: len(ids)],
                store_emb.load(s, settings.embeddings_dir, ds, info.model_id)[1][: len(ids)])

    t, done = time.perf_counter(), step("dedup", a.first or a.n)
    ds, ids, sha, C, E = run_step(settings, read)  # C, E: read-only memory maps of the stored sets
    if a.dedup_tier == "streamed":
        from curator import index

        index.STREAM_MIN_N = 0  # the tier issue 14 built for bases that must not be copied (see README)
        # its chunk is counted in rows (2^18: 128 MiB at d = 128, but 384 MiB at the cold-start's d = 384,
        # i.e. the whole 100k pool in one chunk, copied and normalised): here a chunk is a size in bytes
        index.STREAM_CHUNK = max(1024, (a.stream_chunk_mib << 20) // (4 * C.shape[1]))
    verify_info = None
    if a.verify:
        groups, verify_info = verified_dedup(settings, ids, sha, C, a, work)
    else:
        groups = find_duplicates(C, hashes=sha)
    done(t)

    t, done = time.perf_counter(), step("select", a.first or a.n)
    drop = np.zeros(len(ids), bool)
    for g in groups:
        drop[g[1:]] = True
    from curator import Pool

    keep = np.flatnonzero(~drop)  # E[keep]: n x 64 float32 of the kept rows, the policy's input (honest O(n d))
    chosen = policies.get("kcenter").select(Pool(embeddings=E[keep], ids=ids[keep]), min(a.budget, len(keep)),
                                            seed=a.seed)
    done(t)
    uris = run_step(settings, lambda s: store_samples.uris(s, ids))
    dedup = score_dedup(groups, uris, images)
    print(json.dumps({"n": a.n, "first": a.first, "dedup_tier": a.dedup_tier, "verify": a.verify, "verify_info": verify_info,
                      "seed": a.seed, "batch_size": a.batch_size, "steps": steps, "dedup": dedup,
                      "selected": int(len(chosen)), "total_s": round(time.perf_counter() - t_all, 1),
                      "peak_rss_mib": run_peak[0]}))


if __name__ == "__main__":
    main()
