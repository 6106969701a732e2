"""Annotation -> database latency through Label Studio's webhook and curator's receiver.

A round of the bundled MNIST-1989 test split (``datasets/mnist1989``) is
pushed to a new project; curator's backend (``curator labelstudio backend``,
here in a thread) is connected to it (``curator labelstudio connect``). Then N
annotations are submitted through the API the way the labeling UI submits
them, then N/2 of them updated; for each, the clock runs from the moment the
request is sent until the answer (or its new label) is readable in curator's
database, polled every 2 ms. The API round trip alone is recorded beside it.

Usage: .venv/bin/python benchmarks/labelstudio/bench_webhook.py [--n 100] [--db-url URL] [--workspace WS]
Uses the server at CURATOR_LABELSTUDIO_URL/TOKEN when it answers and may call
127.0.0.1 (a server started by ``curator labelstudio up`` may), else starts one
in the benchmark's workspace and stops it at the end. One JSON line per run
is appended to webhook_results.jsonl.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import secrets
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SAMPLE = HERE.parents[1] / "datasets" / "mnist1989"


def _loopback_ok(client) -> bool:
    cfg = ('<View><Image name="image" value="$image"/><Choices name="label" toName="image">'
           '<Choice value="a"/></Choices></View>')
    pid = client.http("POST", "api/projects", "probe", json={"title": "curator-probe", "label_config": cfg})["id"]
    try:
        client.http("POST", "api/webhooks/", "probe webhook", json={"project": pid, "url": "http://127.0.0.1:9/x"})
        return True
    except Exception:
        return False
    finally:
        client.http("DELETE", f"api/projects/{pid}/", "delete probe")


def _until(check, timeout: float = 30.0) -> float:
    """perf_counter() at the first poll where ``check()`` is true."""
    deadline = time.perf_counter() + timeout
    while True:
        if check():
            return time.perf_counter()
        if time.perf_counter() > deadline:
            raise SystemExit("an annotation did not reach the database within 30 s: is the webhook connected?")
        time.sleep(0.002)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100, help="annotations to create (and n/2 to update)")
    ap.add_argument("--db-url", help="database (default: a fresh SQLite file)")
    ap.add_argument("--workspace", type=Path, help="the running server's workspace (its media folder is served)")
    ap.add_argument("--out", type=Path, default=HERE / "webhook_results.jsonl")
    args = ap.parse_args()
    os.environ.setdefault("CURATOR_PROGRESS", "0")

    from curator.ingest.idx import ingest_idx
    from curator.integrations.labelstudio import TOOL, server
    from curator.integrations.labelstudio.backend import Backend, connect
    from curator.integrations.labelstudio.client import Client
    from curator.integrations.labelstudio.push import push
    from curator.settings import load_settings
    from curator.store import annotations as store
    from curator.store import rounds as store_rounds
    from curator.store import samples as store_samples
    from curator.store.queries import dataset_id
    from curator.store.session import transaction

    scratch = Path(tempfile.mkdtemp(prefix="curator-ls-webhook-"))
    # the workspace of a running server is the one it serves media from (CURATOR_WORKSPACE); the
    # database is always a fresh one
    settings = dataclasses.replace(load_settings(workspace=str(args.workspace or scratch)),
                                   db_url=args.db_url or f"sqlite:///{scratch / 'bench.db'}",
                                   labelstudio_webhook_secret=secrets.token_urlsafe(24))
    started = False
    if not (settings.labelstudio_token and server.health(settings.labelstudio_url)
            and _loopback_ok(Client.from_settings(settings))):
        settings = dataclasses.replace(settings, workspace=scratch, labelstudio_url="http://127.0.0.1:8192",
                                       labelstudio_token=secrets.token_hex(16))
        server.start(settings, timeout=600)
        started = True
    try:
        ingest_idx(SAMPLE / "test-images-idx3-ubyte.gz", SAMPLE / "test-labels-idx1-ubyte.gz",
                   dataset="mnist1989", split="test", settings=settings)
        with transaction(settings) as s:
            ds = dataset_id(s, "mnist1989")
            truth = store_samples.truth(s, ds, split="test", known_only=True)
            ids = [int(i) for i in truth.ids[: args.n]]
            labels = {int(i): str(lab) for i, lab in zip(truth.ids, truth.labels)}
            number = store_rounds.create(s, ds, ids, np.linspace(1, 0, len(ids)), policy="bench", params=None,
                                         budget=len(ids), seed=0, model_id=None).number
        project = f"bench-webhook-{secrets.token_hex(3)}"
        pushed = push(settings, "mnist1989", number, project=project)
        client = Client.from_settings(settings)
        backend = Backend(settings, "mnist1989", settings.labelstudio_webhook_secret, port=0, client=client)
        backend.start()
        connect(settings, project, backend.url, client=client)
        tasks = client.task_index(pushed.project_id)

        def body(label):
            return {"result": [{"from_name": "label", "to_name": "image", "type": "choices",
                                "value": {"choices": [label]}}], "lead_time": 1.0}

        def label_of(ext):
            with transaction(settings) as s:
                state = store.answer_state(s, TOOL, ext)
                return None if state is None else state.updated_at

        created, updated, api = [], [], []
        annotation_ids = {}
        for sid in ids:
            t0 = time.perf_counter()
            ann = client.http("POST", f"api/tasks/{tasks[sid][0]}/annotations/", "annotate", json=body(labels[sid]))
            api.append(time.perf_counter() - t0)
            ext = str(ann["id"])
            annotation_ids[sid] = ext
            created.append(_until(lambda: label_of(ext) is not None) - t0)
        for sid in ids[: args.n // 2]:
            ext = annotation_ids[sid]
            before = label_of(ext)
            t0 = time.perf_counter()
            client.http("PATCH", f"api/annotations/{ext}", "update", json=body(str((int(labels[sid]) + 1) % 10)))
            updated.append(_until(lambda: (label_of(ext) or before) > before) - t0)
        backend.shutdown()

        def stats(xs):
            a = np.array(xs) * 1000
            return {"median_ms": round(float(np.median(a)), 1), "p95_ms": round(float(np.percentile(a, 95)), 1),
                    "max_ms": round(float(a.max()), 1), "n": len(a)}

        record = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "database": settings.database_url.split(":")[0],
            "create_to_db": stats(created), "update_to_db": stats(updated), "api_round_trip": stats(api),
            "receiver": stats(list(backend.webhook_seconds)),
            "backend_calls": dict(backend.calls), "load_avg_1m": round(os.getloadavg()[0], 2),
            "cpus": os.cpu_count(), "python": platform.python_version(), "own_server": started,
        }
        print(json.dumps(record), flush=True)
        with open(args.out, "a") as fh:
            fh.write(json.dumps(record) + "\n")
    finally:
        if started:
            server.stop(settings)


if __name__ == "__main__":
    main()
