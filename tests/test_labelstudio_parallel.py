"""Label Studio served by several processes, and curator's requests at once (issue 17's last targets).

Against the session's real server (``ls_fixtures.ls_server``, started by ``server.start``, the
code of ``curator labelstudio up``), except the first test's stand-in venv.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import unavailable

from curator.integrations.labelstudio import client as client_mod
from curator.integrations.labelstudio import push as push_mod
from curator.integrations.labelstudio import server
from curator.integrations.labelstudio.client import Client
from curator.integrations.labelstudio.push import push

pytestmark = [pytest.mark.labelstudio, pytest.mark.slow]


def _group(pgid: int) -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds) of every process in the process group ``pgid``."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            out[int(stat.parent.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
    return out


def _own_server(ls_server) -> int:
    pid = server.status(ls_server)["pid"]
    if pid is None:
        unavailable("the session's server was not started by curator (CURATOR_TEST_LS_URL is set): "
                    "unset it to test the server curator starts")
    return pid


def test_up_serves_with_one_process_per_core_and_spreads_requests(annotated_project):
    """`up` runs gunicorn's master and ``workers()`` worker processes in the server's own session;
    requests sent at once are answered by more than one of them (one GIL each)."""
    ls_server, project_id, _ = annotated_project
    pid = _own_server(ls_server)
    log = (server.data_dir(ls_server) / "server.log").read_text()
    assert f"gunicorn, {server.workers()} worker processes x {server.THREADS} threads" in log
    before = _group(pid)
    workers = {p for p, (parent, _) in before.items() if parent == pid}
    assert len(workers) == server.workers() >= 2
    client = Client.from_settings(ls_server)
    # CPU-bound requests, many at once: the Data Manager listing of a project's 230 tasks

    def listing(_k: int):
        return client.http("GET", "api/tasks/", "list", params={"project": project_id, "page_size": 230,
                                                                   "fields": "all", "review": "true"})
    with ThreadPoolExecutor(16) as pool:
        for _ in range(3):
            list(pool.map(listing, range(16)))
    after = _group(pid)
    busy = [w for w in workers if after.get(w, (0, 0.0))[1] > before[w][1]]
    assert len(busy) >= 2, f"only {busy} of {sorted(workers)} used CPU for 48 requests sent 16 at a time"


def test_up_without_gunicorn_says_the_server_is_one_process(tmp_path, monkeypatch):
    """A `.venv-ls` from before (no gunicorn): `up` still starts, and says why it is one process."""
    from curator.settings import Settings
    from ls_fixtures import FAKE_LABEL_STUDIO, _free_port

    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("label-studio", "python"):
        (bin_dir / name).write_text(FAKE_LABEL_STUDIO.format(python=sys.executable))
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("CURATOR_LABELSTUDIO_VENV", str(tmp_path / "venv"))
    settings = Settings(workspace=tmp_path / "ws", labelstudio_url=f"http://127.0.0.1:{_free_port()}",
                        labelstudio_token="secret-token-123")
    said = []
    server.start(settings, timeout=60, echo=said.append, install=False)
    try:
        assert any("ONE process" in m and "pip install gunicorn" in m for m in said)
    finally:
        server.stop(settings, echo=lambda _m: None)


def test_workers_setting(monkeypatch):
    monkeypatch.setenv(server.WORKERS_ENV, "3")
    assert server.workers() == 3
    monkeypatch.setenv(server.WORKERS_ENV, "zero")
    with pytest.raises(Exception, match="CURATOR_LABELSTUDIO_WORKERS='zero'"):
        server.workers()
    monkeypatch.delenv(server.WORKERS_ENV)
    assert 2 <= server.workers() == server.per_core() <= 8


@pytest.fixture
def annotated_project(ls_server):
    """A project of 230 tasks, every third with an annotation (two on every ninth), built through
    the API; (settings, project id, ids of the annotated tasks)."""
    from curator.integrations.labelstudio.labelconfig import image_classification

    client = Client.from_settings(ls_server)
    cfg = image_classification([str(d) for d in range(10)])
    project = client.call("create", client.sdk.projects.create, title=f"par-{uuid.uuid4().hex[:8]}",
                          label_config=cfg.xml)

    def answer(label: str) -> dict:
        return {"result": [{"from_name": cfg.from_name, "to_name": cfg.to_name, "type": "choices",
                            "value": {"choices": [label]}}]}

    tasks = [{"data": {"image": f"/data/{k}.png", "sample_id": k},
              **({"annotations": [answer(str(k % 10))] * (2 if k % 9 == 0 else 1)} if k % 3 == 0 else {})}
             for k in range(230)]
    body = client.http("POST", f"api/projects/{project.id}/import", "import", json=tasks,
                       params={"return_task_ids": "true"})
    ids = body["task_ids"]
    yield ls_server, project.id, sorted(ids[k] for k in range(230) if k % 3 == 0)
    client.http("DELETE", f"api/projects/{project.id}", "delete project")


def test_pages_at_once_return_exactly_the_serial_listing(annotated_project, monkeypatch):
    """The pages read in parallel (whatever ``expected`` foresaw: right, too few, too many) give
    the very tasks and annotations the page-by-page read gives."""
    from curator.integrations.labelstudio.pull import ANSWERED, FULL_FIELDS

    settings, pid, answered = annotated_project
    monkeypatch.setattr(client_mod, "MIN_PAGE", 10)
    serial = Client.from_settings(dataclasses.replace(settings, labelstudio_parallel=1))
    parallel = Client.from_settings(dataclasses.replace(settings, labelstudio_parallel=3))
    sent = []
    real = parallel.http
    monkeypatch.setattr(parallel, "http", lambda *a, **k: sent.append(k["params"]["page"]) or real(*a, **k))

    def read(c, expected):
        return c.tasks(pid, FULL_FIELDS, page_size=40, filters=ANSWERED, conjunction="or", annotations=True,
                       expected=expected)

    def key(tasks):
        return sorted((t["id"], t["total_annotations"], sorted(a["id"] for a in t["annotations"])) for t in tasks)

    reference = read(serial, None)
    assert [t["id"] for t in sorted(reference, key=lambda t: t["id"])] == answered
    assert sum(len(t["annotations"]) for t in reference) == len(answered) + len(answered[::3])
    for expected in (len(answered), 5, 1000):
        sent.clear()
        got = read(parallel, expected)
        assert key(got) == key(reference) and len(got) == len(answered), expected
        assert max(sent) > 1  # several pages, sent at once
    # the whole task list (no filter), as a later pull's fall-back listing reads it
    whole = parallel.tasks(pid, "id,updated_at,total_annotations,cancelled_annotations", page_size=40,
                           expected=230)
    assert len({t["id"] for t in whole}) == 230


def test_pull_with_parallel_pages_and_push_with_parallel_predictions(ls_round, monkeypatch):
    """Push sends its pre-annotations in several requests at once (one prediction per task, no
    more, also after a re-push), and a first pull reads its pages at once: every answer once."""
    from sqlalchemy import func, select

    from curator.integrations.labelstudio import oracle
    from curator.integrations.labelstudio.pull import pull
    from curator.store.schema import Annotation
    from curator.store.session import transaction
    from ls_fixtures import LS_DATASET

    settings, number, ranked, project = ls_round
    settings = dataclasses.replace(settings, labelstudio_parallel=3)
    monkeypatch.setattr(push_mod, "PREDICTIONS_BATCH", 2)
    monkeypatch.setattr(push_mod, "PREDICTIONS_MIN", 1)
    monkeypatch.setattr(client_mod, "MIN_PAGE", 2)
    calls = []
    real = Client.http
    monkeypatch.setattr(Client, "http", lambda self, m, path, *a, **k: calls.append(path) or real(self, m, path, *a, **k))
    predictions = {sid: (str(i % 10), 0.5, "cnn-v1") for i, sid in enumerate(ranked)}
    report = push(settings, LS_DATASET, number, project=project, predictions=predictions)
    assert report.predictions == 12 and sum(p.endswith("import/predictions") for p in calls) == 6
    again = push(settings, LS_DATASET, number, project=project, predictions=predictions)
    assert (again.imported, again.predictions) == (0, 0)
    client = Client.from_settings(settings)
    counts = [t["total_predictions"] for t in client.tasks(report.project_id, "id,total_predictions")]
    assert counts == [1] * 12

    done = oracle.annotate(settings, project, limit=9)
    calls.clear()
    first = pull(settings, project)
    assert first.new == done.annotated == 9 and sum(p == "api/tasks/" for p in calls) >= 3
    with transaction(settings) as s:
        assert s.scalar(select(func.count()).select_from(Annotation)) == 9
    assert pull(settings, project).new == 0



LEAN_CHECK = """
import json, os, sys
import label_studio
sys.path.insert(0, os.path.dirname(label_studio.__file__))
sys.path.insert(0, sys.argv[1])
import curator_ls_wsgi
from core.current_request import CurrentContext
from data_manager.api import TaskListAPI
from django.contrib.auth.models import AnonymousUser
from django.test import RequestFactory
from tasks.models import Task
out = {"applied": curator_ls_wsgi.LEAN_PREFETCH}
for name, params in json.loads(sys.argv[2]).items():
    request = RequestFactory().get("/api/tasks/", params)
    request.user = AnonymousUser()
    CurrentContext.set_request(request)
    out[name] = sorted(TaskListAPI.prefetch(Task.objects.none())._prefetch_related_lookups)
print(json.dumps(out))
"""


def test_lean_prefetch_only_where_nothing_reads_what_it_leaves_out(ls_server):
    """The workers' one change to Label Studio (``curator_ls_wsgi``): a listing naming its fields,
    without ``data`` and with ``resolve_uri=false`` (a pull), skips the storage links, file upload
    and predictions; the UI's listing (no ``include``) and one with ``data`` (whose media URLs
    are resolved through the storage links) keep all ten."""
    import json
    import subprocess

    _own_server(ls_server)
    cases = {
        "pull": {"include": "id,updated_at,annotations,annotations.result", "resolve_uri": "false"},
        "ui": {"fields": "all"},
        "with data": {"include": "id,data,total_predictions"},
        "predictions named": {"include": "id,predictions", "resolve_uri": "false"},
    }
    lsserver = Path(server.LAUNCHER).parent
    env = server.server_env(ls_server, server.data_dir(ls_server), server.DEFAULT_USER, ls_server.labelstudio_token)
    env["DJANGO_SETTINGS_MODULE"] = "core.settings.label_studio"
    done = subprocess.run([str(server.executable().parent / "python"), "-c", LEAN_CHECK, str(lsserver), json.dumps(cases)],
                          env=env, cwd=server.data_dir(ls_server), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["applied"] is True
    assert got["pull"] == ["annotations", "annotations__completed_by", "project"]
    assert len(got["ui"]) == len(got["with data"]) == 10
    assert got["predictions named"] == ["annotations", "annotations__completed_by", "predictions", "project"]
