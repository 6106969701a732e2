"""Ray on loopback: in-process vs a 1-node vs a 2-node cluster (each node ``--num-cpus 1``).

Two workloads, each run by every executor in its own child process:

* ``dedup``: the near-duplicate self-join and grouping of N planted 128-d embeddings
  (``benchmarks/dedup_scale``'s generator), through ``executor.self_pairs`` and
  ``curator.find_duplicates(search=...)``, forced through the partitioned path;
* ``score``: decode, embed and score M MNIST-sized PNG files with a small built-in CNN
  (``executor.predict``), then a 1,000-sample entropy selection (``executor.select``).

Per run: wall time of the work (cluster start-up and the first connection measured apart, as
``connect_s``), peak memory per node (the largest sum of RSS over a node's raylet and all its
children: workers, actors, agents; the driver's own peak as ``driver_peak_gib``) and digests of
the answers, so the report can check that every executor gave the same scores (allclose), the
same groups and the same selection (equal). One JSON line per run is appended to the results
file as soon as it exists, so a stopped run loses nothing.

    python benchmarks/scale_out/bench_ray.py --embeddings 1000000 --images 200000
    python benchmarks/scale_out/bench_ray.py --report
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks" / "dedup_scale"))
RESULTS = HERE / "ray_results.jsonl"
MNIST = ROOT.parent / "shared" / "datasets" / "mnist" / "train-images-idx3-ubyte.gz"
PORT = 6410  # the head's GCS port: outside Ray's worker ports (10002-19999) and the tests' 6390
CONFIGS = ("inprocess", "ray-1node", "ray-2nodes")


# --------------------------------------------------------------------------- data


def prepare(work: Path, n_emb: int, n_img: int) -> dict:
    """The inputs every run reads: embeddings (.npy), PNG files and a trained model."""
    work.mkdir(parents=True, exist_ok=True)
    emb = work / f"emb_{n_emb}.npy"
    if not emb.exists():
        from bench import make_pool

        X, origin, _, _ = make_pool(n_emb, seed=0)
        np.save(emb, X)
        np.save(work / f"origin_{n_emb}.npy", origin)
    img_dir = work / f"png_{n_img}"
    if not (img_dir / "done").exists():
        from PIL import Image

        from planted import read_idx_images

        digits = read_idx_images(MNIST, 60_000)
        rng = np.random.default_rng(0)
        img_dir.mkdir(exist_ok=True)
        for k in range(n_img):  # MNIST digits, shifted by up to 2 pixels past the first 60,000
            img = digits[k % len(digits)]
            if k >= len(digits):
                img = np.roll(img, tuple(rng.integers(-2, 3, 2)), axis=(0, 1))
            Image.fromarray(img).save(img_dir / f"{k:07d}.png")
        (img_dir / "done").touch()
    model = work / "model.pt"
    if not model.exists():
        from planted import read_idx_images
        from curator.models import train_classifier

        import gzip

        X = read_idx_images(MNIST, 2000)
        with gzip.open(MNIST.parent / "train-labels-idx1-ubyte.gz") as f:
            y = np.frombuffer(f.read(), np.uint8, offset=8)[:2000].astype(np.int64)
        adapter = train_classifier(X, y, num_classes=10, seed=0, steps=300)
        adapter.save(model)
    return {"emb": str(emb), "images": str(img_dir), "model": str(model)}


# --------------------------------------------------------------------------- memory per node


def _node_trees(tmp: str):
    """{raylet pid: [pids of it and its descendants]} for the cluster whose temp folder is ``tmp``."""
    import psutil

    out = {}
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "raylet" in cmd.split(" ")[0] and tmp in cmd:
            try:
                out[p.pid] = [p.pid] + [c.pid for c in p.children(recursive=True)]
            except psutil.Error:
                pass
    return out


class NodeMemory(threading.Thread):
    """Samples, every 0.2 s, the RSS summed over each node's process tree; keeps each node's peak."""

    def __init__(self, tmp: str):
        super().__init__(daemon=True)
        self.tmp, self.peak, self.stop = tmp, {}, threading.Event()

    def run(self):
        import psutil

        while not self.stop.is_set():
            for raylet, pids in _node_trees(self.tmp).items():
                total = 0
                for pid in pids:
                    try:
                        total += psutil.Process(pid).memory_info().rss
                    except psutil.Error:
                        pass
                self.peak[raylet] = max(self.peak.get(raylet, 0), total)
            self.stop.wait(0.2)


# --------------------------------------------------------------------------- one run (child)


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def child(config: str, task: str, inputs: dict, address: str | None, tmp: str | None, out: Path) -> dict:
    from curator import find_duplicates
    from curator.executors import get_executor

    rec = {"config": config, "task": task}
    t0 = time.perf_counter()
    if config == "inprocess":
        executor = get_executor("local")
    else:
        executor = get_executor("ray", address=address, concurrency=int(config.split("-")[1][0]))
        executor._connect()  # start-up paid apart
        import ray

        ray.get(ray.remote(lambda: 1).remote())
    rec["connect_s"] = round(time.perf_counter() - t0, 2)
    mem = NodeMemory(tmp) if tmp else None
    if mem:
        mem.start()
    t0 = time.perf_counter()
    if task == "dedup":
        X = np.load(inputs["emb"], mmap_mode="r")
        groups, info = find_duplicates(X, exact=False, return_info=True,
                                       search=lambda x, t, **kw: executor.self_pairs(x, t, **kw))
        rec["wall_s"] = round(time.perf_counter() - t0, 2)
        rec.update(n=len(X), groups=len(groups), pairs=info["near_pairs"],
                   answer=_digest([g.tolist() for g in groups]))
        from bench import pair_scores

        rec.update({k: v for k, v in pair_scores(groups, np.load(inputs["emb"].replace("emb_", "origin_"))).items()
                    if k in ("precision", "recall")})
    else:
        from curator import Pool, policies

        uris = sorted(str(p) for p in Path(inputs["images"]).glob("*.png"))
        pred = executor.predict(uris, inputs["model"], mc_samples=0, seed=0, round=1)
        t1 = time.perf_counter()
        pool = Pool(embeddings=pred.embeddings, probs=pred.probs)
        pos, _ = executor.select(policies.get("entropy"), pool, 1000, seed=7)
        t2 = time.perf_counter()
        rec.update(n=len(uris), wall_s=round(t2 - t0, 2), predict_s=round(t1 - t0, 2),
                   select_s=round(t2 - t1, 2), images_per_s=round(len(uris) / (t1 - t0), 1),
                   answer=_digest(pos.tolist()))
        np.save(out.with_suffix(f".{config}.probs.npy"), pred.probs)
    if mem:
        mem.stop.set()
        mem.join()
        rec["node_peak_gib"] = sorted(round(v / 2**30, 2) for v in mem.peak.values())
    rec["driver_peak_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    return rec


# --------------------------------------------------------------------------- clusters (parent)


def start_cluster(nodes: int) -> tuple[str, str]:
    ray = str(Path(sys.executable).with_name("ray"))
    tmp = tempfile.mkdtemp(prefix="bench-ray-")
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--disable-usage-stats", "--temp-dir", tmp]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    subprocess.run([ray, "start", "--head", "--port", str(PORT), "--include-dashboard", "false",
                    "--dashboard-agent-listen-port", str(PORT + 2), *common], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    for k in range(1, nodes):
        subprocess.run([ray, "start", "--address", f"127.0.0.1:{PORT}",
                        "--dashboard-agent-listen-port", str(PORT + 2 + k), *common], check=True, env=env,
                       stdout=subprocess.DEVNULL)
    return f"127.0.0.1:{PORT}", tmp


def stop_cluster(tmp: str) -> None:
    """Ends only this cluster's processes (found by its temp folder), never `ray stop`."""
    import psutil

    procs = [p for p in psutil.process_iter(["cmdline"]) if tmp in " ".join(p.info["cmdline"] or [])]
    for p in list(procs):
        try:
            procs += p.children(recursive=True)
        except psutil.Error:
            pass
    for p in procs:
        try:
            p.terminate()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=10)
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
    shutil.rmtree(tmp, ignore_errors=True)


def load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def report(path: Path) -> None:
    rows = load(path)
    print("| task | executor | n | connect s | work wall s | images/s | peak GiB per node | driver peak GiB | same answer |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ref = next((q for q in rows if q["task"] == r["task"] and q["config"] == "inprocess" and q["n"] == r["n"]), None)
        same = "" if ref is None else ("yes" if r["answer"] == ref["answer"] else "NO")
        if r["task"] == "score" and ref is not None and r.get("probs_max_abs_diff") is not None:
            same += f" (probs max diff {r['probs_max_abs_diff']:.1e})"
        print(f"| {r['task']} | {r['config']} | {r['n']:,} | {r['connect_s']} | {r['wall_s']} | "
              f"{r.get('images_per_s', '')} | {r.get('node_peak_gib', '')} | {r['driver_peak_gib']} | {same} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--embeddings", type=int, default=1_000_000)
    ap.add_argument("--images", type=int, default=200_000)
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    ap.add_argument("--tasks", nargs="+", default=["dedup", "score"], choices=["dedup", "score"])
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "curator-bench-ray"))
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--report", action="store_true")
    ap.add_argument("--child", nargs=4, metavar=("CONFIG", "TASK", "ADDRESS", "TMP"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    out = Path(args.out)
    if args.report:
        return report(out)
    inputs = prepare(Path(args.work), args.embeddings, args.images)
    if args.child:
        config, task, address, tmp = args.child
        rec = child(config, task, inputs, None if address == "-" else address, None if tmp == "-" else tmp,
                    Path(args.work) / "answers")
        print(json.dumps(rec))
        return
    for config in args.configs:
        address, tmp = ("-", "-")
        if config != "inprocess":
            address, tmp = start_cluster(2 if config == "ray-2nodes" else 1)
        try:
            for task in args.tasks:
                load_before = os.getloadavg()[0]
                done = subprocess.run([sys.executable, __file__, "--work", args.work, "--embeddings",
                                       str(args.embeddings), "--images", str(args.images),
                                       "--child", config, task, address, tmp],
                                      capture_output=True, text=True)
                if done.returncode:
                    print(done.stderr[-3000:], file=sys.stderr)
                    continue
                rec = json.loads(done.stdout.strip().splitlines()[-1])
                if task == "score":
                    ref = Path(args.work) / "answers.inprocess.probs.npy"
                    mine = Path(args.work) / f"answers.{config}.probs.npy"
                    if ref.exists() and mine.exists():
                        rec["probs_max_abs_diff"] = float(np.abs(np.load(ref) - np.load(mine)).max())
                rec.update(load_before=round(load_before, 2), load_after=round(os.getloadavg()[0], 2),
                           nproc=os.cpu_count(), when=time.strftime("%Y-%m-%d %H:%M"))
                with out.open("a") as f:
                    f.write(json.dumps(rec) + "\n")
                print(json.dumps(rec), flush=True)
        finally:
            if tmp != "-":
                stop_cluster(tmp)


if __name__ == "__main__":
    main()
