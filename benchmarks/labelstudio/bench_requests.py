"""What single Label Studio requests cost the server, 10,000 tasks at a time (issue 17).

Usage: CURATOR_LABELSTUDIO_URL=... CURATOR_LABELSTUDIO_TOKEN=... \\
    python benchmarks/labelstudio/bench_requests.py push|pull --server-pid PID [--n 10000]

``push``: import with inline predictions (batches of 2,000), without (one request), their
predictions by ``import/predictions``, without again (batches of 2,000). ``pull``: a project
whose tasks carry an annotation each, then the Data Manager listings and the exports. One
JSON line per request (wall, the server process's CPU seconds, load) to requests_results.jsonl.
Each run creates new projects named exp-*; delete them by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
ap = argparse.ArgumentParser()
ap.add_argument("mode", choices=["push", "pull"])
ap.add_argument("--server-pid", type=int, required=True)
ap.add_argument("--n", type=int, default=10_000)
ap.add_argument("--out", type=Path, default=HERE / "requests_results.jsonl")
args = ap.parse_args()
N = args.n
c = httpx.Client(base_url=os.environ["CURATOR_LABELSTUDIO_URL"], timeout=900,
                 headers={"Authorization": f"Token {os.environ['CURATOR_LABELSTUDIO_TOKEN']}"})


def server_cpu() -> float:
    f = Path(f"/proc/{args.server_pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def timed(what, fn):
    s0, t0 = server_cpu(), time.perf_counter()
    out = fn()
    rec = {"what": what, "wall": round(time.perf_counter() - t0, 2), "server_cpu": round(server_cpu() - s0, 2),
           "load1": round(os.getloadavg()[0], 2)}
    print(json.dumps(rec), flush=True)
    with open(args.out, "a") as fh:
        fh.write(json.dumps(rec) + "\n")
    return out


XML = ('<View><Image name="image" value="$image"/><Choices name="label" toName="image">'
       + "".join(f'<Choice value="{k}"/>' for k in range(10)) + "</Choices></View>")


def project(title: str) -> int:
    r = c.post("/api/projects", json={"title": title, "label_config": XML, "sampling": "Sequential sampling"})
    r.raise_for_status()
    return r.json()["id"]


def result(i: int) -> list:
    return [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [str(i % 10)]}}]


def task(i: int, pred=False, ann=False) -> dict:
    t = {"data": {"image": f"/data/local-files/?d=mnist/{i}.png", "sample_id": i, "round": 1, "rank": i,
                  "score": 0.5, "dataset": "m"}}
    if pred:
        t["predictions"] = [{"model_version": "v1", "score": 0.7, "result": result(i)}]
    if ann:
        t["annotations"] = [{"result": result(i)}]
    return t


def post(path: str, body, **params):
    r = c.post(path, params=params, content=json.dumps(body), headers={"Content-Type": "application/json"})
    r.raise_for_status()
    return r.json()


def imp(pid: int, tasks: list, batch: int) -> list[int]:
    ids = []
    for s in range(0, len(tasks), batch):
        ids += post(f"/api/projects/{pid}/import", tasks[s : s + batch], return_task_ids="true")["task_ids"]
    return ids


if args.mode == "push":
    p = project("exp-inline")
    timed("import with inline predictions, batches of 2000", lambda: imp(p, [task(i, True) for i in range(N)], 2000))
    p = project("exp-plain")
    ids = timed("import without predictions, one request", lambda: imp(p, [task(i) for i in range(N)], N))
    for s in range(0, N, 2000):
        timed("import/predictions, 2000", lambda: post(f"/api/projects/{p}/import/predictions", [
            {"task": t, "model_version": "v1", "score": 0.7, "result": result(s + i)}
            for i, t in enumerate(ids[s : s + 2000])]))
    p = project("exp-plain5")
    timed("import without predictions, batches of 2000", lambda: imp(p, [task(i) for i in range(N)], 2000))
else:
    p = project("exp-ann")
    timed("setup: import with annotations", lambda: imp(p, [task(i, ann=True) for i in range(N)], 2000))
    inc = "id,updated_at,total_annotations,cancelled_annotations"

    def dm(include, fields="task_only", **extra):
        r = c.get("/api/tasks/", params={"project": p, "include": include, "page": 1, "page_size": N,
                                         "fields": fields, **extra})
        r.raise_for_status()
        return r.json()

    timed("DM list id,updated_at,counts", lambda: dm(inc))
    full = inc + ",annotations,result,completed_by,was_cancelled,created_at"
    timed("DM list fields=all with annotations", lambda: dm(full, "all"))
    timed("DM list fields=all with annotations, review=true", lambda: dm(full, "all", review="true"))
    timed("export JSON_MIN", lambda: c.get(f"/api/projects/{p}/export", params={"exportType": "JSON_MIN"}).content)
    timed("export JSON", lambda: c.get(f"/api/projects/{p}/export", params={"exportType": "JSON"}).content)
