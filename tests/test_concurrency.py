"""Two users at once and a server that never answers (issue 13, parts 1 and 2).

- a sample is in at most one open round, enforced by the database (triggers of
  migration 0005), back-filled for existing rounds;
- ``select_round`` retries on a fresh pool when another process took its
  samples, then gives up with ``StaleSelectionError``;
- four ``curator select`` processes at once, on SQLite and PostgreSQL, held at
  a barrier after each computed its selection and before any writes, so they
  truly overlap: disjoint rounds, no traceback;
- the push lock dies with a ``kill -9``-ed holder;
- two ``curator push`` at once (a new project, then an existing one): every
  sample exactly once, one project;
- the Label Studio client: timeouts, retries with backoff on 5xx / 429
  (Retry-After) / connection errors, no blind repeat of an import, and one
  ``error:`` line naming the URL when a server accepts connections and never answers.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from badinput import refused
from conftest import ROOT, SAMPLE, require
from curator.exceptions import LabelStudioError, StaleSelectionError, StoreError
from curator.store.schema import Annotation, Dataset, OpenRoundSample, Round, RoundItem, Sample
from curator.store.session import transaction

PY = sys.executable
DS = "digits"


# -- helpers ---------------------------------------------------------------------------------

def _samples(settings, n=6):
    """A dataset with ``n`` bare samples; returns (dataset id, sample ids)."""
    from sqlalchemy import insert

    with transaction(settings) as s:
        ds = Dataset(name="d")
        s.add(ds)
        s.flush()
        ids = s.scalars(insert(Sample).returning(Sample.id), [
            {"dataset_id": ds.id, "uri": f"/x/{i}.png", "sha256": f"{i:064d}", "width": 2, "height": 2,
             "channels": 1} for i in range(n)]).all()
        return ds.id, list(ids)


def _round(settings, ds, number, sample_ids, status="selected"):
    with transaction(settings) as s:
        rnd = Round(dataset_id=ds, number=number, policy="test", budget=max(1, len(sample_ids)), seed=0,
                    status=status)
        s.add(rnd)
        s.flush()
        s.add_all(RoundItem(round_id=rnd.id, sample_id=sid, rank=r) for r, sid in enumerate(sample_ids))
        return rnd.id


def _set_status(settings, round_id, status):
    with transaction(settings) as s:
        s.get(Round, round_id).status = status


def _open(settings) -> dict[int, int]:
    with transaction(settings) as s:
        return dict(s.execute(select(OpenRoundSample.sample_id, OpenRoundSample.round_id)).all())


def _env(settings, **extra) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CURATOR_WORKSPACE": str(settings.workspace),
           "CURATOR_PROGRESS": "0", **extra}
    if settings.db_url:
        env["CURATOR_DB_URL"] = settings.db_url
    return {k: v for k, v in env.items() if v is not None}


#: A child process: wait at the barrier "start" (all imports done), optionally patch, then run the CLI.
BARRIER = textwrap.dedent("""
    import os, sys, time, pathlib
    bar, me, n = pathlib.Path(os.environ["BARRIER"]), os.environ["ME"], int(os.environ["N"])

    def arrive(stage, limit=90):
        (bar / f"{stage}-{me}").touch()
        deadline = time.monotonic() + limit
        while len(list(bar.glob(f"{stage}-*"))) < n:
            if time.monotonic() > deadline:
                sys.exit(f"barrier {stage}: only {len(list(bar.glob(stage + '-*')))} of {n} arrived")
            time.sleep(0.01)
""")


def _together(n, script, argv_of, env_of, barrier: Path, timeout=600):
    """Start ``n`` children of ``BARRIER + script`` and return [(exit status, stdout, stderr)]."""
    barrier.mkdir()
    procs = [subprocess.Popen([PY, "-c", BARRIER + script, *argv_of(i)], env={**env_of(i), "BARRIER": str(barrier),
                              "ME": str(i), "N": str(n)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(n)]
    out = []
    for p in procs:
        o, e = p.communicate(timeout=timeout)
        out.append((p.returncode, o, e))
    return out


def _clean(results):
    """Every process: exit 0, or exactly one ``error:`` line; never a traceback."""
    for code, _, err in results:
        assert "Traceback" not in err, err
        if code != 0:
            lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
            assert len(lines) == 1, err


# -- the open-round constraint (database) ----------------------------------------------------

def test_a_sample_is_in_at_most_one_open_round(db_settings):
    ds, (a, b, c, d, *_) = _samples(db_settings)
    r1 = _round(db_settings, ds, 1, [a, b])
    assert _open(db_settings) == {a: r1, b: r1}
    with pytest.raises(IntegrityError, match="only one open round"):
        _round(db_settings, ds, 2, [c, a])
    assert _open(db_settings) == {a: r1, b: r1}  # the refused round left nothing
    r2 = _round(db_settings, ds, 2, [c, d], status="pending")
    _set_status(db_settings, r2, "pushed")  # still open
    assert _open(db_settings) == {a: r1, b: r1, c: r2, d: r2}
    _set_status(db_settings, r1, "labeled")  # closed: its samples are free again
    r3 = _round(db_settings, ds, 3, [a])
    assert _open(db_settings) == {a: r3, c: r2, d: r2}
    with pytest.raises(IntegrityError):  # reopening r1 would put a in two open rounds
        _set_status(db_settings, r1, "selected")
    closed = _round(db_settings, ds, 4, [c], status="done")  # closed rounds may overlap anything
    with transaction(db_settings) as s:
        s.execute(RoundItem.__table__.delete().where(RoundItem.round_id == r2, RoundItem.sample_id == d))
        s.delete(s.get(Round, r3))
    assert _open(db_settings) == {c: r2}
    assert closed not in _open(db_settings).values()


@pytest.mark.empty_database  # what the migrations do on a new database is what is tested
def test_migration_backfills_open_rounds_oldest_first(db_settings):
    """Rounds written before 0005 (overlapping, as the race left them) are back-filled; when the
    older of two overlapping rounds closes, the sample passes to the newer one."""
    from sqlalchemy import create_engine, text

    from curator.store.session import dispose_all, upgrade

    Path(db_settings.workspace).mkdir(parents=True, exist_ok=True)
    engine = create_engine(db_settings.database_url)
    upgrade(engine, "0004")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO datasets (id, name, created_at) VALUES (1, 'd', CURRENT_TIMESTAMP)"))
        for i in range(1, 5):
            conn.execute(text("INSERT INTO samples (id, dataset_id, uri, sha256, width, height, channels, created_at) "
                              f"VALUES ({i}, 1, '/x/{i}', '{i:064d}', 1, 1, 1, CURRENT_TIMESTAMP)"))
        for rid, status in ((1, "selected"), (2, "pushed"), (3, "done")):
            conn.execute(text("INSERT INTO rounds (id, dataset_id, number, policy, budget, seed, status, created_at) "
                              f"VALUES ({rid}, 1, {rid}, 'p', 2, 0, '{status}', CURRENT_TIMESTAMP)"))
        for rid, sid in ((1, 1), (1, 2), (2, 2), (2, 3), (3, 4)):
            conn.execute(text(f"INSERT INTO round_items (round_id, sample_id, rank) VALUES ({rid}, {sid}, {sid})"))
    upgrade(engine, "head")
    engine.dispose()
    dispose_all()
    assert _open(db_settings) == {1: 1, 2: 1, 3: 2}
    _set_status(db_settings, 1, "labeled")
    assert _open(db_settings) == {2: 2, 3: 2}


# -- select_round: retry on a fresh pool, or StaleSelectionError -------------------------------

@pytest.fixture(scope="module")
def digits():
    require(SAMPLE)
    from curator.ingest.idx import iter_images, read_labels

    _, X = next(iter_images(SAMPLE / "train-images-idx3-ubyte.gz", 200))
    return np.array(X), read_labels(SAMPLE / "train-labels-idx1-ubyte.gz")[:200]


def _ingested(settings, digits, n_labeled=20):
    """The digits with ``n_labeled`` human labels and a cheaply trained model; returns the model."""
    from curator import rounds
    from curator.ingest import ingest_arrays

    X, y = digits
    ingest_arrays(X, y, dataset=DS, split="train", name="train", settings=settings)
    with transaction(settings) as s:
        rows = s.execute(select(Sample.id, Sample.gt_label).order_by(Sample.id).limit(n_labeled)).all()
        s.add_all([Annotation(sample_id=i, tool="test", external_id=f"a{i}", label=g) for i, g in rows])
    return rounds.train_model(settings, DS, [i for i, _ in rows], [g for _, g in rows], seed=0, steps=3)


def _steal(settings, ids, number):
    """Another process records a round of ``ids`` (what the race does)."""
    with transaction(settings) as s:
        ds = s.scalar(select(Dataset.id).where(Dataset.name == DS))
    return _round(settings, ds, number, [int(i) for i in ids])


@pytest.mark.slow
def test_select_retries_on_the_fresh_pool_then_gives_up(db_settings, digits, monkeypatch):
    from curator import rounds

    model = _ingested(db_settings, digits)
    kw = dict(budget=10, policy="random", seed=0, mc_samples=0, dedup=False)
    real = rounds._record_round
    stolen: list[int] = []

    def first_loses(settings, ds, chosen, *a, **k):  # another round takes half of the choice first
        if not stolen:
            stolen.extend(int(i) for i in chosen[::2])
            _steal(settings, stolen, 7)
        return real(settings, ds, chosen, *a, **k)

    monkeypatch.setattr(rounds, "_record_round", first_loses)
    res = rounds.select_round(db_settings, DS, model, **kw)
    assert len(res.sample_ids) == 10 and not set(res.sample_ids) & set(stolen)
    assert res.number == 8  # after the round that won

    calls = []

    def always_loses(settings, ds, chosen, *a, **k):
        calls.append(1)
        _steal(settings, chosen[:1], 100 + len(calls))
        return real(settings, ds, chosen, *a, **k)

    monkeypatch.setattr(rounds, "_record_round", always_loses)
    with transaction(db_settings) as s:
        before = s.scalar(select(Round.id).order_by(Round.id.desc()).limit(1))
    with pytest.raises(StaleSelectionError, match="run the selection again"):
        rounds.select_round(db_settings, DS, model, **kw)
    assert len(calls) == rounds.SELECT_TRIES
    with transaction(db_settings) as s:  # only the thieves' rounds were recorded
        assert s.scalars(select(Round.policy).where(Round.id > before)).all() == ["test"] * rounds.SELECT_TRIES


SELECT_CHILD = """
from curator import rounds
real, calls = rounds._record_round, []

def record(*a, **k):
    calls.append(1)
    (bar / f"attempt-{me}-{len(calls)}").touch()
    if len(calls) == 1:
        arrive("computed")  # all four computed their selection from the same pool before any writes
    return real(*a, **k)

rounds._record_round = record
from curator.cli import main
arrive("start")
main(sys.argv[1:])
"""


@pytest.mark.slow
def test_four_selects_at_once_make_disjoint_rounds(db_settings, digits, tmp_path):
    model = _ingested(db_settings, digits)
    argv = ["select", "--dataset", DS, "--budget", "15", "--policy", "random", "--model", str(model.model_id),
            "--mc", "0", "--no-dedup", "--seed", "0", "--json"]
    results = _together(4, SELECT_CHILD, lambda i: argv, lambda i: _env(db_settings), tmp_path / "bar")
    _clean(results)
    assert [r[0] for r in results] == [0, 0, 0, 0], [r[2] for r in results]
    chosen = [json.loads(out)["sample_ids"] for _, out, _ in results]
    flat = [s for c in chosen for s in c]
    assert len(flat) == 60 and len(set(flat)) == 60  # disjoint
    attempts = len(list((tmp_path / "bar").glob("attempt-*")))
    assert attempts >= 4 + 3  # same seed, same pool: three of the four had to select again
    with transaction(db_settings) as s:
        numbers = s.scalars(select(Round.number).where(Round.status == "selected")).all()
        open_ = dict(s.execute(select(OpenRoundSample.sample_id, OpenRoundSample.round_id)).all())
    assert sorted(numbers) == [1, 2, 3, 4] and sorted(open_) == sorted(flat)


# -- the push lock ---------------------------------------------------------------------------

LOCK_CHILD = """
from curator.settings import load_settings
from curator.store.locks import hold
with hold(load_settings(), "labelstudio:project:p"):
    print("held", flush=True)
    time.sleep(600)
"""


@pytest.mark.slow
def test_push_lock_waits_then_dies_with_a_killed_holder(db_settings):
    from curator.store.locks import hold
    from curator.store.session import get_engine

    get_engine(db_settings.database_url)
    child = subprocess.Popen([PY, "-c", "import os, sys, time, pathlib\n" + LOCK_CHILD], env=_env(db_settings),
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        told = []
        t0 = time.monotonic()
        with pytest.raises(StoreError, match="held by another curator process"):
            with hold(db_settings, "labelstudio:project:p", wait=1.0, on_wait=told.append):
                pass
        assert time.monotonic() - t0 >= 1.0 and len(told) == 1
        with hold(db_settings, "labelstudio:project:other", wait=0):  # other names are free
            pass
        os.kill(child.pid, signal.SIGKILL)  # not reaped yet on purpose: a zombie holds nothing
        t0 = time.monotonic()
        with hold(db_settings, "labelstudio:project:p", wait=30):
            assert time.monotonic() - t0 < 30
    finally:
        child.kill()
        child.wait()


# -- two pushes at once ----------------------------------------------------------------------

PUSH_CHILD = """
import contextlib
from curator.integrations.labelstudio import push as P
real_hold = P.hold

@contextlib.contextmanager
def hold(*a, **k):
    (bar / f"atlock-{me}").touch()
    with real_hold(*a, **k):
        arrive("atlock")  # the holder goes on only once the other push waits at the lock
        yield

P.hold = hold
from curator.cli import main
arrive("start")
main(sys.argv[1:])
"""


def _push_together(settings, number, project, barrier):
    env = _env(settings, CURATOR_LABELSTUDIO_URL=settings.labelstudio_url,
               CURATOR_LABELSTUDIO_TOKEN=settings.labelstudio_token)
    argv = ["push", "--round", str(number), "--project", project, "--json"]
    results = _together(2, PUSH_CHILD, lambda i: argv, lambda i: env, barrier)
    _clean(results)
    assert [r[0] for r in results] == [0, 0], [r[2] for r in results]
    reports = [json.loads(out) for _, out, _ in results]
    assert any("waiting for another curator process" in err for _, _, err in results)
    return sorted(reports, key=lambda r: -r["imported"])


@pytest.mark.slow
@pytest.mark.labelstudio
def test_two_pushes_at_once_import_each_sample_once_into_one_project(ls_server, db_settings, small_idx, tmp_path):
    from ls_fixtures import make_round, with_database

    from curator.integrations.labelstudio.client import Client

    settings = with_database(ls_server, db_settings.db_url, tmp_path)
    number, ranked, project = make_round(settings, small_idx, n=12)

    first, second = _push_together(settings, number, project, tmp_path / "bar1")  # a new project
    assert (first["imported"], second["imported"], second["already_linked"]) == (12, 0, 12)
    assert first["created_project"] and not second["created_project"]
    client = Client.from_settings(settings)
    assert [p["id"] for p in client.find_projects(project)] == [first["project_id"]] == [second["project_id"]]
    index = client.task_index(first["project_id"])
    assert sorted(index) == sorted(ranked) and all(len(t) == 1 for t in index.values())

    with transaction(settings) as s:  # a second round, into the project that now exists
        ds = s.scalar(select(Round.dataset_id).where(Round.number == number))
        free = s.scalars(select(Sample.id).where(Sample.dataset_id == ds, Sample.id.not_in(ranked))
                         .order_by(Sample.id).limit(10)).all()
    _round(settings, ds, 2, free)
    first, second = _push_together(settings, 2, project, tmp_path / "bar2")
    assert (first["imported"], second["imported"]) == (10, 0)
    index = client.task_index(first["project_id"])
    assert sorted(index) == sorted(ranked + free) and all(len(t) == 1 for t in index.values())
    assert len(client.find_projects(project)) == 1


PULL_CHILD = PUSH_CHILD.replace("import push as P", "import pull as P")


@pytest.mark.slow
@pytest.mark.labelstudio
def test_two_pulls_at_once_store_each_answer_once(ls_server, db_settings, small_idx, tmp_path):
    """The second pull waits for the project's lock, then finds the answers the first stored
    (without the lock both read an empty store and insert the same answers: a traceback)."""
    from ls_fixtures import make_round, with_database

    from curator.integrations.labelstudio import oracle
    from curator.integrations.labelstudio.push import push

    settings = with_database(ls_server, db_settings.db_url, tmp_path)
    number, ranked, project = make_round(settings, small_idx, n=8)
    push(settings, "mnist89", number, project=project)
    done = oracle.annotate(settings, project, limit=6, skip={ranked[2]})
    assert (done.annotated, done.skipped) == (5, 1)
    env = _env(settings, CURATOR_LABELSTUDIO_URL=settings.labelstudio_url,
               CURATOR_LABELSTUDIO_TOKEN=settings.labelstudio_token)
    results = _together(2, PULL_CHILD, lambda i: ["pull", "--project", project, "--json"], lambda i: env,
                        tmp_path / "bar")
    _clean(results)
    assert [r[0] for r in results] == [0, 0], [r[2] for r in results]
    assert any("waiting for another curator process" in err for _, _, err in results)
    first, second = sorted((json.loads(out) for _, out, _ in results), key=lambda r: -r["new"])
    assert (first["new"], second["new"], second["unchanged"], second["updated"]) == (6, 0, 6, 0)
    assert first["labeled_samples"] == second["labeled_samples"] == 5 and second["skipped"] == 1
    with transaction(settings) as s:
        stored = s.execute(select(Annotation.sample_id, Annotation.skipped).order_by(Annotation.sample_id)).all()
    assert sorted(sid for sid, _ in stored) == sorted(done.order) and [sk for sid, sk in stored if sid == ranked[2]] == [True]


# -- Label Studio client: timeouts and retries -----------------------------------------------

class _Script(http.server.BaseHTTPRequestHandler):
    """Answers from a list of (status, headers, body), one per request; records what came."""

    answers: list = []
    seen: list = []

    def _answer(self):
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        type(self).seen.append((self.command, self.path, self.headers.get("authorization")))
        status, headers, body = type(self).answers.pop(0) if type(self).answers else (200, {}, {})
        data = json.dumps(body).encode()
        self.send_response(status)
        for k, v in {"content-type": "application/json", **headers}.items():
            self.send_header(k, v)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = do_DELETE = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def scripted():
    """A local HTTP server playing a list of answers: (url, handler class)."""
    handler = type("Handler", (_Script,), {"answers": [], "seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def _client(url, **kw):
    from curator.integrations.labelstudio.client import Client

    notes = []
    kw = {"timeout": 2, "connect_timeout": 2, "retries": 2, **kw}
    return Client(url, "secret-token-1234567890", note=notes.append, **kw), notes


def test_client_retries_5xx_with_backoff_then_succeeds(scripted, monkeypatch):
    from curator.integrations.labelstudio import client as C

    url, handler = scripted
    handler.answers[:] = [(503, {}, {"detail": "busy"}), (502, {}, {}), (200, {}, {"id": 5})]
    waits = []
    monkeypatch.setattr(C.time, "sleep", waits.append)
    client, notes = _client(url)
    assert client.http("GET", "api/projects/5", "read project 5") == {"id": 5}
    assert len(handler.seen) == 3 and len(notes) == 2
    assert 0.4 <= waits[0] <= 0.6 and 0.8 <= waits[1] <= 1.2  # exponential, with jitter
    assert all("secret-token" not in n for n in notes)


def test_client_respects_retry_after_on_429(scripted):
    url, handler = scripted
    handler.answers[:] = [(429, {"Retry-After": "1"}, {}), (200, {}, {"ok": 1})]
    client, notes = _client(url)
    t0 = time.monotonic()
    assert client.http("POST", "api/projects/1/import", "import") == {"ok": 1}  # 429: nothing was done
    assert time.monotonic() - t0 >= 0.95 and len(handler.seen) == 2 and "HTTP 429" in notes[0]


def test_client_gives_up_after_bounded_retries_naming_the_server(scripted, monkeypatch):
    from curator.integrations.labelstudio import client as C

    url, handler = scripted
    handler.answers[:] = [(500, {}, {"detail": "boom"})] * 5
    monkeypatch.setattr(C.time, "sleep", lambda s: None)
    client, _ = _client(url, retries=3)
    with pytest.raises(LabelStudioError, match=f"{url}.*HTTP 500 after 4 tries") as err:
        client.http("GET", "api/tasks/", "list tasks")
    assert len(handler.seen) == 4 and "\n" not in str(err.value)
    handler.answers[:] = [(429, {"Retry-After": "3600"}, {})]
    with pytest.raises(LabelStudioError, match="come back in 3600 s"):
        client.http("GET", "api/tasks/", "list tasks")


def test_client_never_repeats_an_import_the_server_may_have_done(scripted):
    url, handler = scripted
    handler.answers[:] = [(503, {}, {}), (200, {}, {"task_ids": [1]})]
    client, notes = _client(url)
    with pytest.raises(LabelStudioError, match="did not confirm import.*run the same command again"):
        client.http("POST", "api/projects/1/import", "import 1 tasks", json=[{"data": {}}])
    assert [m for m, _, _ in handler.seen] == ["POST"] and not notes  # sent once, not retried


def test_client_retries_a_refused_connection_even_for_an_import():
    """Nothing listens: the request never reached a server, so trying again is safe."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client, notes = _client(f"http://127.0.0.1:{port}", retries=1)
    with pytest.raises(LabelStudioError, match=f"127.0.0.1:{port} does not answer.*connection refused.*2 tries"):
        client.http("POST", "api/projects/1/import", "import", json=[])
    assert len(notes) == 1


@pytest.fixture
def silent_server():
    """A socket that accepts connections (the kernel's backlog) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


@pytest.mark.slow
def test_push_to_a_server_that_never_answers_fails_within_the_timeout(db_settings, small_idx, silent_server,
                                                                       tmp_path):
    from ls_fixtures import make_round

    from badinput import db_digest

    timeout, retries = 1.0, 1
    settings = db_settings
    number, _, project = make_round(settings, small_idx, n=4)
    before = db_digest(settings)
    env = _env(settings, CURATOR_LABELSTUDIO_URL=silent_server, CURATOR_LABELSTUDIO_TOKEN="secret-token-1234567890",
               CURATOR_LABELSTUDIO_TIMEOUT=str(timeout), CURATOR_LABELSTUDIO_RETRIES=str(retries))
    t0 = time.monotonic()
    proc = subprocess.run([PY, "-m", "curator", "push", "--round", str(number), "--project", project],
                          env=env, capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - t0
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and len(errors) == 1, proc.stderr
    assert silent_server in errors[0] and "no answer within 1 s" in errors[0] and "2 tries" in errors[0]
    assert "CURATOR_LABELSTUDIO_TIMEOUT" in errors[0] and "secret-token" not in proc.stderr
    import re

    waited = float(re.search(r"2 tries in (\d+) s", errors[0]).group(1))  # the calls themselves
    assert waited <= timeout * (retries + 1) + 5  # both timeouts and one backoff, not 300 s per request
    assert elapsed < 60  # the whole command, start-up (imports on a busy machine) included
    assert db_digest(settings) == before


# -- bad settings: one line, nothing changed -------------------------------------------------

@pytest.mark.parametrize("var, value, match", [
    ("CURATOR_LABELSTUDIO_TIMEOUT", "0", "labelstudio_timeout must be a number of seconds > 0"),
    ("CURATOR_LABELSTUDIO_TIMEOUT", "soon", "labelstudio_timeout"),
    ("CURATOR_LABELSTUDIO_TIMEOUT", "-5", "labelstudio_timeout"),
    ("CURATOR_LABELSTUDIO_CONNECT_TIMEOUT", "nan", "labelstudio_connect_timeout"),
    ("CURATOR_LABELSTUDIO_RETRIES", "-1", "labelstudio_retries must be a whole number >= 0"),
    ("CURATOR_LABELSTUDIO_RETRIES", "2.5", "CURATOR_LABELSTUDIO_RETRIES"),
], ids=["timeout-zero", "timeout-text", "timeout-negative", "connect-timeout-nan", "retries-negative",
        "retries-fraction"])
def test_bad_labelstudio_timeout_settings_are_refused(sandbox, monkeypatch, var, value, match):
    monkeypatch.setenv(var, value)
    refused(sandbox, ["push", "--round", "1"], match=match)


def test_push_to_a_silent_server_is_refused_cleanly(sandbox, small_idx, silent_server, monkeypatch):
    """The bad-input harness: one error line, the database as it was, nothing written outside."""
    from ls_fixtures import make_round

    number, _, project = make_round(sandbox.settings, small_idx, n=3)
    for var, value in (("URL", silent_server), ("TOKEN", "secret-token-1234567890"), ("TIMEOUT", "0.5"),
                       ("RETRIES", "0")):
        monkeypatch.setenv(f"CURATOR_LABELSTUDIO_{var}", value)
    refused(sandbox, ["push", "--round", number, "--project", project], match=silent_server)


@pytest.mark.slow
@pytest.mark.empty_database  # what the migrations do on a new database is what is tested
def test_three_ingests_at_once_on_a_new_workspace(db_settings, tmp_path):
    """Three `curator ingest` of one file at once, on a workspace nobody has used: one creates the
    schema (migrations are serialised), one adds the samples, the others find them (no traceback)."""

    images = np.random.default_rng(1).integers(0, 256, (300, 12, 12, 3), dtype=np.uint8)
    np.save(tmp_path / "x.npy", images)
    env = {**os.environ, "CURATOR_WORKSPACE": str(db_settings.workspace), "CURATOR_PROGRESS": "0"}
    if db_settings.db_url:
        env["CURATOR_DB_URL"] = db_settings.db_url
    procs = [subprocess.Popen([sys.executable, "-m", "curator", "ingest", str(tmp_path / "x.npy"), "--dataset",
                               name, "--json"], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for name in ("Colour", "colour", "COLOUR")]
    results = [(p.wait(120), *p.communicate()) for p in procs]
    assert [code for code, _, _ in results] == [0, 0, 0], [err for _, _, err in results]
    assert not any("Traceback" in err for _, _, err in results)
    added = sorted(json.loads(out)["added"] for _, out, _ in results)
    assert added == [0, 0, 300]
    with transaction(db_settings) as s:
        assert s.scalar(select(func.count()).select_from(Sample)) == 300
