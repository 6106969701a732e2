"""Server CPU of one Data Manager page as a first pull reads it, Label Studio's full prefetch vs
the lean one of ``curator_ls_wsgi`` (same bytes checked), inside Label Studio's interpreter.

    LABEL_STUDIO_BASE_DATA_DIR=<a bench run's workspace>/labelstudio DJANGO_DB=sqlite \
      .venv-ls/bin/python benchmarks/labelstudio/profile_listing.py PROJECT_ID [PAGE_SIZE] [REPEATS]

Alternates the two, REPEATS times each, and appends one JSON line (medians and minima of the
request's CPU seconds, the load) to ``profile_listing.jsonl``.
"""
import json
import os
import statistics
import sys
import time
from pathlib import Path

import label_studio

HERE = Path(__file__).resolve().parent
sys.path.insert(0, os.path.dirname(label_studio.__file__))
sys.path.insert(0, str(HERE.parents[1] / "curator" / "integrations" / "labelstudio" / "lsserver"))
import curator_ls_wsgi  # noqa: E402  (Label Studio set up as curator's server workers have it)
from data_manager.api import TaskListAPI  # noqa: E402
from django.test import Client  # noqa: E402
from rest_framework.authtoken.models import Token  # noqa: E402
from users.models import User  # noqa: E402

FIELDS = ("id,updated_at,total_annotations,cancelled_annotations,annotations,annotations.id,annotations.result,"
          "annotations.completed_by,annotations.was_cancelled,annotations.created_at,annotations.updated_at")
ANSWERED = [{"filter": f"filter:tasks:{f}", "operator": "greater", "type": "Number", "value": 0}
            for f in ("total_annotations", "cancelled_annotations")]


def main():
    pid = int(sys.argv[1])
    page_size = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
    repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    assert curator_ls_wsgi.LEAN_PREFETCH, "the lean prefetch is not applied to this Label Studio version"
    user = User.objects.first()
    client = Client(HTTP_AUTHORIZATION="Token " + Token.objects.get(user=user).key)
    lean = TaskListAPI.__dict__["prefetch"]
    full = staticmethod(next(c.cell_contents for c in lean.__func__.__closure__
                             if getattr(c.cell_contents, "__name__", "") == "prefetch"))
    params = {"project": pid, "include": FIELDS, "page": 1, "page_size": page_size, "fields": "all",
              "expand": "annotations", "review": "true", "resolve_uri": "false",
              "query": json.dumps({"filters": {"conjunction": "or", "items": ANSWERED}})}
    times, bodies = {"full": [], "lean": []}, {}
    for _ in range(repeats):
        for name, prefetch in (("full", full), ("lean", lean)):
            TaskListAPI.prefetch = prefetch
            t0 = time.process_time()
            resp = client.get("/api/tasks/", params)
            times[name].append(time.process_time() - t0)
            bodies[name] = resp.content
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "tasks": len(json.loads(bodies["lean"])["tasks"]),
              "same_bytes": bodies["full"] == bodies["lean"], "repeats": repeats,
              **{f"{k}_cpu_s_median": round(statistics.median(v), 3) for k, v in times.items()},
              **{f"{k}_cpu_s_min": round(min(v), 3) for k, v in times.items()}, "load1": os.getloadavg()[0]}
    print(json.dumps(record))
    with open(HERE / "profile_listing.jsonl", "a") as fh:
        fh.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
