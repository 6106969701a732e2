"""Time from the K-th annotation to the re-ranked queue (issue 17, item 3), on MNIST.

The live loop (``curator loop --labeler labelstudio --live``, here ``LiveLoop``
in a thread of this process, with its ML backend and webhook receiver) runs on
a pool of MNIST training images. Each repeat answers the first K tasks of the
queue through the API, as the labeling UI does (the oracle labeler: next task +
submit), and the clock runs from the moment the K-th submit returns (its
webhook is then in the database: Label Studio posts it inside that request)
until the loop has made the new generation and pointed the labeling stream at
it (its predictions imported, the project's model_version and uncertainty
sampling set), i.e. until the next task a labeler opens is the retrained
model's first pick. Beside the wall time: the loop's parts (train, select =
score the pool + pick the top-up, rank = the new model on the queue, push =
the top-up's import, follow = the predictions and the project's settings),
wall and CPU seconds each; ``kth_to_tab_order_s``: until the order thread has
also written ``data.rank`` (what the live tab displays); this process's CPU
seconds over the interval, the server's (``LS_PID``: its process id, when it
runs on this machine; a shared server's CPU includes others' requests) and the
load average.

Usage:
  CURATOR_LABELSTUDIO_URL=http://127.0.0.1:8181 CURATOR_LABELSTUDIO_TOKEN=... \\
    nice -n 10 .venv/bin/python benchmarks/labelstudio/bench_live.py --workspace <the server's workspace> \\
    [--pool 10000] [--k 10] [--queue 20] [--repeats 5] [--db-url URL]

One JSON line per repeat is appended to live_results.jsonl as it finishes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MNIST = HERE.parents[1].parent / "shared" / "datasets" / "mnist"


def _idx_subset(out: Path, n: int) -> tuple[Path, Path]:
    """The first ``n`` MNIST training images and labels as IDX files (read in place, written to ``out``)."""
    import gzip
    import struct

    from curator.ingest.idx import iter_images, read_labels

    _, block = next(iter_images(MNIST / "train-images-idx3-ubyte.gz", batch_size=n))
    labels = read_labels(MNIST / "train-labels-idx1-ubyte.gz")[:n]
    images, label_file = out / "train-images-idx3-ubyte.gz", out / "train-labels-idx1-ubyte.gz"
    with gzip.open(images, "wb", compresslevel=1) as fh:
        fh.write(struct.pack(">iiii", 2051, *block.shape) + block.tobytes())
    with gzip.open(label_file, "wb", compresslevel=1) as fh:
        fh.write(struct.pack(">ii", 2049, len(labels)) + labels.tobytes())
    return images, label_file


def _server_cpu() -> float | None:
    """CPU seconds of the Label Studio server process (and its children) on this machine, or None."""
    pid = os.environ.get("LS_PID")
    if not pid:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", required=True, help="the Label Studio server's workspace (its media folder)")
    ap.add_argument("--db-url", default=None)
    ap.add_argument("--pool", type=int, default=10000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--queue", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--subsample", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=None, help="default: the built-in recipe (200+ steps)")
    ap.add_argument("--out", default=str(HERE / "live_results.jsonl"))
    args = ap.parse_args()

    import torch

    torch.set_num_threads(2)
    from curator.ingest import ingest_idx
    from curator.integrations.labelstudio import oracle
    from curator.integrations.labelstudio.client import Client
    from curator.live import LiveConfig, LiveLoop
    from curator.settings import Settings
    from curator.steps import run_step
    from curator.store import live as store_live

    tmp = Path(tempfile.mkdtemp(prefix="bench_live_"))
    settings = Settings(workspace=Path(args.workspace), db_url=args.db_url or f"sqlite:///{tmp / 'curator.db'}",
                        labelstudio_url=os.environ["CURATOR_LABELSTUDIO_URL"],
                        labelstudio_token=os.environ["CURATOR_LABELSTUDIO_TOKEN"],
                        labelstudio_webhook_secret=secrets.token_urlsafe(24))
    dataset, project = "mnist-live", f"bench-live-{secrets.token_hex(4)}"
    started = time.perf_counter()
    ingest_idx(*_idx_subset(tmp, args.pool), dataset=dataset, split="train", settings=settings)
    ingest_s = time.perf_counter() - started
    client = Client.from_settings(settings)
    cfg = LiveConfig(dataset=dataset, project=project, queue=args.queue, retrain_every=args.k, initial=20,
                     subsample=args.subsample, epochs=args.epochs, port=0, poll_s=0.05)
    loop = LiveLoop(settings, cfg, client=client)
    started = time.perf_counter()
    loop.open()
    open_s = time.perf_counter() - started
    stop = threading.Event()
    runner = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    runner.start()
    base = {"bench": "live_kth_to_queue", "pool": args.pool, "k": args.k, "queue": args.queue,
            "subsample": args.subsample, "epochs": args.epochs, "db": settings.db_url.split(":")[0],
            "machine": f"{platform.machine()} {os.cpu_count()} cores", "ingest_s": round(ingest_s, 2),
            "open_s": round(open_s, 2)}
    try:
        for rep in range(args.repeats):
            gens = run_step(settings, lambda s: store_live.generations(s, loop.project_id))
            order = run_step(settings, lambda s: store_live.ranks_of(s, gens[-1].id))
            todo = [sid for sid, _ in order[: args.k]]
            before = loop.generations
            oracle.annotate(settings, project, sample_ids=todo[:-1], client=client)
            load = os.getloadavg()[0]
            cpu0 = time.process_time()
            server0 = _server_cpu()
            oracle.annotate(settings, project, sample_ids=todo[-1:], client=client)  # the K-th
            t0 = time.perf_counter()
            while loop.generations == before:
                if not runner.is_alive():
                    raise SystemExit("the live loop stopped; see its error above")
                time.sleep(0.01)
            wall = time.perf_counter() - t0
            newest = len(gens)  # the generation this repeat made (numbered from 0)
            while (loop.ordered or (-1, 0.0))[0] < newest and runner.is_alive() \
                    and time.perf_counter() - t0 < 600:  # data.rank, written after it by the order thread
                time.sleep(0.05)
            tab = (loop.ordered[1] - t0) if loop.ordered and loop.ordered[0] >= newest else None
            row = {**base, "repeat": rep, "generation": len(gens), "kth_to_queue_s": round(wall, 2),
                   "kth_to_tab_order_s": None if tab is None else round(tab, 2),
                   "cpu_s": round(time.process_time() - cpu0, 2),
                   "parts_s": {k: round(v, 2) for k, v in loop.phases.items()},
                   "parts_cpu_s": {k: round(v, 2) for k, v in loop.phases_cpu.items()},
                   "server_cpu_s": round(_server_cpu() - server0, 2) if server0 is not None else None,
                   "load_1min_before": round(load, 2), "load_1min_after": round(os.getloadavg()[0], 2),
                   "when": time.strftime("%Y-%m-%d %H:%M:%S")}
            print(json.dumps(row), flush=True)
            with open(args.out, "a") as fh:
                fh.write(json.dumps(row) + "\n")
    finally:
        stop.set()
        runner.join(timeout=120)


if __name__ == "__main__":
    main()
