"""Push 10,000 tasks and pull 10,000 annotations against a local Label Studio server.

Data: the 10,000 MNIST test images (../shared/datasets/mnist, read in place),
ingested into a fresh workspace, selected as one round with random ranks and a
prediction per sample. Steps, each timed and appended to results.jsonl:

  push        10,000 tasks with pre-annotations into a new project (batches of 2,000)
  re-push     the same round again: reconcile by sample id, nothing imported
  reconcile   10,000 tasks that are on the server but not in the database
              (the state a push killed before its commit leaves), recorded as links
  pull        10,000 annotations (imported with the tasks of a second project, since
              posting them one by one through the API runs at a few per second)
  re-pull     nothing changed on the server
  oracle      N annotations through the API the way a person submits them, then pull

Usage: .venv/bin/python benchmarks/labelstudio/bench.py [--n 10000] [--oracle 200]
Uses the server at CURATOR_LABELSTUDIO_URL/TOKEN when it answers, else starts one
in the benchmark's workspace and stops it at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MNIST = HERE.parents[2] / "shared" / "datasets" / "mnist"


SERVER_PID: int | None = None  # the Label Studio process whose CPU seconds each step reports
_last = {"cpu": None, "server": None}


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def _server_cpu() -> float | None:
    """CPU seconds of the server: every process of its process group (gunicorn's master and its
    workers, or runserver's one process with its threads), plus workers already ended (Linux /proc),
    or None when unknown."""
    if SERVER_PID is None:
        return None
    total = 0.0
    found = False
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) != SERVER_PID:  # the process group: the server runs in its own session
            continue
        found = True
        total += int(fields[11]) + int(fields[12])
        if int(stat.parent.name) == SERVER_PID:  # its children that ended (a restarted worker)
            total += int(fields[13]) + int(fields[14])
    return total / os.sysconf("SC_CLK_TCK") if found else None


def mark() -> None:
    """Start of a timed step: CPU counters are read here and again in ``log``."""
    _last["cpu"], _last["server"] = _cpu(), _server_cpu()


def log(record: dict, out: Path) -> None:
    """One JSON line; with the CPU seconds of this process and of the server since ``mark``, and the
    load average, so that figures taken on a loaded machine still mean something."""
    if _last["cpu"] is not None:
        record["cpu_s"] = round(_cpu() - _last["cpu"], 2)
        server_now = _server_cpu()
        if server_now is not None and _last["server"] is not None:
            record["server_cpu_s"] = round(server_now - _last["server"], 2)
    record["load1"] = round(os.getloadavg()[0], 2)
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), **record}
    print(json.dumps(record), flush=True)
    with open(out, "a") as fh:
        fh.write(json.dumps(record) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--oracle", type=int, default=200)
    ap.add_argument("--workspace", type=Path)
    ap.add_argument("--out", type=Path, default=HERE / "results.jsonl")
    ap.add_argument("--server-pid", type=int, help="pid of the running server, to report its CPU seconds")
    ap.add_argument("--mnist", type=Path, default=MNIST, help="folder of the MNIST IDX files (default: %(default)s)")
    ap.add_argument("--port", type=int, default=8191, help="port of the server the bench starts")
    ap.add_argument("--push-only", action="store_true", help="stop after the push steps (repeat runs for a median)")
    args = ap.parse_args()
    global SERVER_PID
    SERVER_PID = args.server_pid
    os.environ.setdefault("CURATOR_PROGRESS", "0")

    from sqlalchemy import select

    from curator.ingest.idx import ingest_idx
    from curator.integrations.labelstudio import oracle, server
    from curator.integrations.labelstudio.client import Client
    from curator.integrations.labelstudio.pull import pull
    from curator.integrations.labelstudio.push import push
    from curator.settings import load_settings
    from curator.store import rounds as store_rounds
    from curator.store.schema import Dataset, Sample
    from curator.store.session import transaction

    workspace = args.workspace or Path(tempfile.mkdtemp(prefix="curator-ls-bench-"))
    base = load_settings(workspace=str(workspace))
    started = False
    if not (base.labelstudio_token and server.health(base.labelstudio_url)):
        import dataclasses

        base = dataclasses.replace(base, labelstudio_url=f"http://127.0.0.1:{args.port}",
                                   labelstudio_token=secrets.token_hex(16))
        mark()
        t0 = time.perf_counter()
        server.start(base, timeout=600)
        started = True
        SERVER_PID = server.status(base)["pid"]
        log({"step": "server start", "seconds": round(time.perf_counter() - t0, 2)}, args.out)
    settings = base
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(), "n": args.n,
               # requests sent at once, and the server's processes when the bench started it
               "parallel": settings.labelstudio_parallel or server.per_core(),
               "server_workers": server.workers() if started else None}
    try:
        mark()
        t0 = time.perf_counter()
        ingest_idx(args.mnist / "t10k-images-idx3-ubyte.gz", args.mnist / "t10k-labels-idx1-ubyte.gz",
                   dataset="mnist-t10k", split="test", settings=settings)
        log({"step": "ingest", "seconds": round(time.perf_counter() - t0, 2), **machine}, args.out)
        rng = np.random.default_rng(0)
        with transaction(settings) as s:
            ds = s.scalar(select(Dataset).where(Dataset.name == "mnist-t10k"))
            rows = s.execute(select(Sample.id, Sample.gt_label).where(Sample.dataset_id == ds.id)
                             .order_by(Sample.id).limit(args.n)).all()
            order = rng.permutation(len(rows))
            number = store_rounds.create(s, ds.id, [rows[i][0] for i in order], rng.random(len(rows)),
                                         policy="bench", params=None, budget=len(rows), seed=0, model_id=None).number
        predictions = {sid: (lab if rng.random() < 0.9 else str((int(lab) + 1) % 10), float(rng.random()), "bench-cnn")
                       for sid, lab in rows}
        tag = secrets.token_hex(3)

        mark()
        t0 = time.perf_counter()
        visible = {}  # when the last batch of tasks was recorded: the labelers can start from there

        def seen(done: int, total: int) -> None:
            if done == total:
                visible["s"] = round(time.perf_counter() - t0, 2)

        rep = push(settings, "mnist-t10k", number, project=f"bench-push-{tag}", predictions=predictions,
                   on_progress=seen)
        log({"step": "push", "tasks": rep.imported, "predictions": rep.predictions,
             "tasks_visible_s": visible.get("s"), "seconds": round(time.perf_counter() - t0, 2)}, args.out)
        # The same round into a second project without pre-annotations: what a push to a project with
        # curator's ML backend connected costs (the backend serves them when a task opens), and the
        # moment the labelers can start in the first push (its tasks are imported before its
        # pre-annotations).
        mark()
        t0 = time.perf_counter()
        bare = push(settings, "mnist-t10k", number, project=f"bench-bare-{tag}", predictions={})
        log({"step": "push, tasks only (pre-annotations on demand)", "tasks": bare.imported,
             "seconds": round(time.perf_counter() - t0, 2)}, args.out)
        mark()
        t0 = time.perf_counter()
        again = push(settings, "mnist-t10k", number, project=f"bench-push-{tag}", predictions=predictions)
        log({"step": "re-push", "imported": again.imported, "already": again.already_linked,
             "seconds": round(time.perf_counter() - t0, 2)}, args.out)

        if args.push_only:
            return
        # A project whose tasks carry their annotations; curator has no links for them yet.
        client = Client.from_settings(settings)
        name = f"bench-pull-{tag}"
        from curator.integrations.labelstudio.labelconfig import image_classification

        cfg = image_classification([str(c) for c in range(10)])
        pid = client.call("create", client.sdk.projects.create, title=name, label_config=cfg.xml).id
        mark()
        t0 = time.perf_counter()
        tasks = [{"data": {"image": "data:image/png;base64,", "sample_id": sid, "round": number, "rank": r,
                           "score": None, "dataset": "mnist-t10k"},
                  "annotations": [{"result": [{"from_name": "label", "to_name": "image", "type": "choices",
                                               "value": {"choices": [lab]}}]}]}
                 for r, (sid, lab) in enumerate(rows)]
        for start in range(0, len(tasks), 2000):
            client.http("POST", f"api/projects/{pid}/import", "import", json=tasks[start:start + 2000])
        log({"step": "setup: import tasks with annotations", "seconds": round(time.perf_counter() - t0, 2)}, args.out)
        with transaction(settings) as s:  # adopt the project the way an interrupted push left it
            from curator.integrations.labelstudio import TOOL
            from curator.store.schema import LabelProject

            s.add(LabelProject(tool=TOOL, name=name, external_id=pid, dataset_id=ds.id, label_config=cfg.xml,
                               from_name=cfg.from_name, to_name=cfg.to_name, image_field=cfg.image_field))
        mark()
        t0 = time.perf_counter()
        rec = push(settings, "mnist-t10k", number, project=name)
        log({"step": "reconcile (push finds all on the server)", "reconciled": rec.reconciled,
             "imported": rec.imported, "seconds": round(time.perf_counter() - t0, 2)}, args.out)
        mark()
        t0 = time.perf_counter()
        got = pull(settings, name)
        log({"step": "pull", "new": got.new, "labeled_samples": got.labeled_samples,
             "seconds": round(time.perf_counter() - t0, 2)}, args.out)
        mark()
        t0 = time.perf_counter()
        got = pull(settings, name)
        log({"step": "re-pull (nothing changed)", "new": got.new, "unchanged": got.unchanged,
             "seconds": round(time.perf_counter() - t0, 2)}, args.out)

        if args.oracle:
            mark()
            t0 = time.perf_counter()
            done = oracle.annotate(settings, f"bench-push-{tag}", limit=args.oracle)
            secs = time.perf_counter() - t0
            log({"step": "oracle via API (next task + submit)", "annotations": done.annotated,
                 "seconds": round(secs, 2), "per_second": round(done.annotated / secs, 1)}, args.out)
            mark()
            t0 = time.perf_counter()
            got = pull(settings, f"bench-push-{tag}")
            log({"step": "pull after oracle (10,000 tasks)", "new": got.new,
                 "seconds": round(time.perf_counter() - t0, 2)}, args.out)
            # N more answers, then a pull after a pull: the incremental case (cursor set)
            mark()
            t0 = time.perf_counter()
            more = oracle.annotate(settings, f"bench-push-{tag}", limit=args.oracle)
            log({"step": "oracle again", "annotations": more.annotated,
                 "seconds": round(time.perf_counter() - t0, 2)}, args.out)
            mark()
            t0 = time.perf_counter()
            got = pull(settings, f"bench-push-{tag}")
            log({"step": "incremental pull after oracle again (10,000 tasks)", "new": got.new,
                 "seconds": round(time.perf_counter() - t0, 2)}, args.out)
    finally:
        if started:
            server.stop(settings)


if __name__ == "__main__":
    main()
