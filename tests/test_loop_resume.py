"""The loop killed at every step boundary and resumed stores what an uninterrupted run stores.

The boundaries are the ``_boundary(step, round)`` calls of curator/loop.py: the
uninterrupted reference run records every one it passes, so a step added to the
loop is killed at here without touching this file. A kill is
``CURATOR_FAULT_AT=<step>:<round>``: the process dies with exit status 137 at
that boundary, as under ``kill -9``. Resumed runs are compared with the
reference row by row: rounds, round items, annotations, versions, evaluations
with their rounds (the random baseline included), the models they name, the
loop's result and the report.

Two checks per boundary, each cheaper than a fresh kill-and-resume per point:

- resume from the state a kill there leaves: the reference copies its database
  and workspace as it passes each boundary (a boundary lies between committed
  transactions, checked: no connection is checked out there, so the copy is
  what ``kill -9`` leaves behind), and each copy is resumed in this process;
- real kills, chained: one database, a child process killed at the first
  boundary, the next child resumes it and is killed at the second, and so on
  through every boundary; the last run resumes it to the end. Every child must
  die with 137 (the fault fires on the resumed path too), and a restart must
  not disturb what the restarts before it did. A resumed child that legitimately
  finishes without passing its boundary must have stored the reference's rows;
  that boundary is then killed at from the start, on a fresh copy, and the
  chain goes on from there.

Cheap on purpose: one small dataset ingested per backend and copied (the SQLite
file; a PostgreSQL template database); a one-step training recipe (the point is
the bookkeeping, not the error) and the report's Markdown without its plots
(tests/test_loop.py renders them); the children are forked from a server
process that imported torch (its dynamo part too, which the optimizer loads)
and curator once (multiprocessing's forkserver), instead of a fresh interpreter each.
"""

from __future__ import annotations

import ast
import dataclasses
import multiprocessing
import os
import shutil
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select

import curator.loop as loop
from curator.loop import FAULT_ENV, LoopConfig, run_loop
from curator.settings import Settings
from curator.store.schema import Annotation, Evaluation, LabelVersion, Model, Round, RoundItem
from curator.store.session import dispose_all, transaction

from conftest import PG_ENV, PG_HINT, drop_database, unavailable
from test_loop import small_dataset

ROUNDS = 2
#: The pool and test split: a pool larger than the subsample (its path taken every round) and more than
#: the 32 labels the loop buys; sizes beyond that only cost time.
N_TRAIN, N_TEST, SUBSAMPLE = 120, 60, 70
#: Kill points run on PostgreSQL: every boundary once, in round 1 (round 0 for the seed).
#: SQLite runs them all; the bookkeeping is the same code, the database is what differs.
PG_ROUND = 1


def config(name: str, **kw) -> LoopConfig:
    """Two rounds after the seed, a subsample (its seed path included), the random baseline, and a
    one-step training recipe."""
    return LoopConfig(dataset=name, rounds=ROUNDS, budget=6, initial=20, subsample=SUBSAMPLE, epochs=1,
                      baseline=True, **kw)


# -- the database of one run -----------------------------------------------------------------

def rows(settings: Settings, dataset: str = "resumed") -> dict:
    """Everything the loop writes, keyed by what identifies it (round numbers, sample ids, model
    checksums, version names), not by row ids or times."""
    with transaction(settings) as s:
        number = dict(s.execute(select(Round.id, Round.number)).all())
        model = dict(s.execute(select(Model.id, Model.version)).all())
        version = dict(s.execute(select(LabelVersion.id, LabelVersion.name)).all())
        out = {
            "rounds": [(r.number, r.status, r.policy, r.seed, r.budget, r.params, model.get(r.model_id))
                       for r in s.scalars(select(Round).order_by(Round.number))],
            "items": sorted((number[i.round_id], i.rank, i.sample_id, i.score)
                            for i in s.scalars(select(RoundItem))),
            "annotations": sorted((a.sample_id, a.tool, a.external_id, a.annotator, a.label, a.skipped, a.deleted)
                                  for a in s.scalars(select(Annotation))),
            "versions": [(v.name, v.checksum, v.size, version.get(v.parent_id), v.message, v.counts, v.lineage)
                         for v in s.scalars(select(LabelVersion).order_by(LabelVersion.id))],
            "evaluations": sorted((number.get(e.round_id, -1), e.metric, e.n_labels, e.value, model.get(e.model_id))
                                  for e in s.scalars(select(Evaluation))),
            "models": sorted(model.values()),
        }
    report = settings.workspace / "reports" / dataset / "report.md"
    out["report"] = report.read_text() if report.exists() else None
    return out


DATASET = "resumed"


# -- one ingested dataset per backend, copied for every run ----------------------------------

class Copies:
    """Fresh copies of one prepared database: a SQLite file, or a PostgreSQL template."""

    def __init__(self, root: Path, backend: str):
        self.root, self.backend, self.dropped = root, backend, []
        self.base = os.environ.get(PG_ENV) if backend == "postgres" else None
        if backend == "postgres" and not self.base:
            unavailable(PG_HINT)
        self.template = self._new("template")
        small_dataset(self.template, DATASET, n_train=N_TRAIN, n_test=N_TEST)
        dispose_all()  # a template database must have no open connections

    def _admin(self):
        from sqlalchemy import create_engine

        return create_engine(self.base, isolation_level="AUTOCOMMIT")

    def _new(self, tag: str, template: str | None = None) -> Settings:
        workspace = self.root / tag
        if self.backend == "sqlite":
            workspace.mkdir(parents=True)
            if template:
                shutil.copyfile(self.template.workspace / "curator.db", workspace / "curator.db")
            return Settings(workspace=workspace)
        from sqlalchemy import text
        from sqlalchemy.engine import make_url

        name = f"curator_resume_{uuid.uuid4().hex[:12]}"
        engine = self._admin()
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")))
        engine.dispose()
        self.dropped.append(name)
        return Settings(workspace=workspace,
                        db_url=make_url(self.base).set(database=name).render_as_string(hide_password=False))

    def fresh(self, tag: str) -> Settings:
        from sqlalchemy.engine import make_url

        template = make_url(self.template.db_url).database if self.backend == "postgres" else "file"
        return self._new(tag, template)

    def snapshot(self, settings: Settings, tag: str) -> Settings:
        """A copy of ``settings``' database and workspace as they are now (between transactions)."""
        workspace = self.root / tag
        if settings.workspace.exists():  # PostgreSQL: made by the first file the loop writes
            shutil.copytree(settings.workspace, workspace, ignore=shutil.ignore_patterns("curator.db*"))
        if self.backend == "sqlite":
            import sqlite3

            src, dst = (sqlite3.connect(w / "curator.db") for w in (settings.workspace, workspace))
            with dst:
                src.backup(dst)  # the committed pages, WAL included
            src.close()
            dst.close()
            return Settings(workspace=workspace)
        from sqlalchemy.engine import make_url

        dispose_all()  # a template database must have no open connections
        copy = self._new(tag, make_url(settings.db_url).database)
        return dataclasses.replace(copy, workspace=workspace)

    def close(self):
        dispose_all()
        if self.dropped:
            engine = self._admin()
            for name in self.dropped:
                drop_database(engine, name)
            engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def copies(request, tmp_path):
    c = Copies(tmp_path, request.param)
    try:
        yield c
    finally:
        c.close()


# -- killing ---------------------------------------------------------------------------------

def _killed_run(settings: Settings, cfg: LoopConfig, at: str) -> None:
    """Child process: the loop with a fault at ``at``; returns only if the boundary is never reached."""
    os.environ["CURATOR_PROGRESS"] = "0"
    os.environ[FAULT_ENV] = at
    run_loop(settings, cfg, plots=False)


_CONTEXT = None


def forked():
    """Children forked from one server process that imported the heavy modules (torch, curator)
    once and has run nothing: cheap to start, and no threads or connections of the test inherited."""
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = multiprocessing.get_context("forkserver")
        _CONTEXT.set_forkserver_preload(["torch", "torch.optim", "torch._dynamo", "curator.loop",
                                         "curator.rounds", "curator.models", "curator.report", __name__])
    return _CONTEXT


def kill_at(settings: Settings, cfg: LoopConfig, at: str) -> int:
    proc = forked().Process(target=_killed_run, args=(settings, cfg, at))
    proc.start()
    proc.join(600)
    if proc.is_alive():
        proc.kill()
        proc.join()
    return proc.exitcode


def boundary_calls() -> set[str]:
    """The step names of every ``_boundary("step", ...)`` call written in curator/loop.py."""
    tree = ast.parse(Path(loop.__file__).read_text())
    return {node.args[0].value for node in ast.walk(tree)
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "_boundary"
            and node.args and isinstance(node.args[0], ast.Constant)}


def _checked_out() -> int:
    """Connections in use now: none at a boundary, or a kill there would cut an open transaction short
    (which a copy of the committed state would not show)."""
    from curator.store import session

    return sum(engine.pool.checkedout() for engine in session._ENGINES.values())


def reference(copies: Copies, monkeypatch, snapshot=lambda at: False):
    """The uninterrupted run: the boundaries it passed, in order, its result, its rows, and a copy of
    the database and workspace at each boundary ``snapshot`` names (with the connections open there)."""
    hits, copied = [], {}
    real = loop._boundary

    def record(step, number):
        at = f"{step}:{number}"
        hits.append(at)
        if snapshot(at):
            copied[at] = (_checked_out(), copies.snapshot(settings, f"at-{len(hits)}"))
        real(step, number)

    settings = copies.fresh("reference")
    with monkeypatch.context() as m:
        m.setattr(loop, "_boundary", record)
        result = run_loop(settings, config(DATASET), plots=False)
    return hits, result, rows(settings), copied


def _differs(settings: Settings, resumed, result, want: dict) -> list[str]:
    dispose_all()
    got = rows(settings)
    diff = [k for k in want if got[k] != want[k]]
    if resumed is not None and resumed != result:
        diff.append(f"result {resumed} != {result}")
    return diff


# -- the tests -------------------------------------------------------------------------------

@pytest.mark.slow
def test_killed_at_every_step_boundary_resumes_to_the_uninterrupted_rows(copies, monkeypatch):
    """SQLite: every boundary of every round (33 kill points with two rounds after the seed);
    PostgreSQL: every boundary once. Resumed from the state a kill at each leaves, and killed at each
    in turn (one chain of child processes), the loop stores the reference's rows exactly."""
    pg_point = lambda h: h.endswith(f":{PG_ROUND}") or h.startswith("seed:")  # noqa: E731
    wanted = (lambda h: True) if copies.backend == "sqlite" else pg_point
    hits, result, want, copied = reference(copies, monkeypatch, wanted)
    # the reference passes every boundary the code has, each once per round that has it
    assert {h.split(":")[0] for h in hits} == boundary_calls() == set(loop.BOUNDARIES)
    assert len(hits) == len(set(hits))
    assert result.rounds_done == ROUNDS and result.waiting is None and len(result.baseline) == ROUNDS + 1
    assert [(r[0], r[1]) for r in want["rounds"]] == [(n, "done") for n in range(ROUNDS + 1)]
    assert [(e[0], e[1]) for e in want["evaluations"]] == [
        (n, m) for n in range(ROUNDS + 1) for m in sorted(("test_error", loop.BASELINE_METRIC, loop.SUPERVISED_METRIC))]
    assert [v[0] for v in want["versions"]] == [f"round-{n}" for n in range(ROUNDS + 1)]

    points = [h for h in hits if wanted(h)]
    assert list(copied) == points
    failures = []
    for at, (open_connections, settings) in copied.items():
        if open_connections:
            failures.append(f"{at}: {open_connections} connection(s) checked out at the boundary")
        diff = _differs(settings, run_loop(settings, config(DATASET), plots=False), result, want)
        if diff:
            failures.append(f"{at}: resumed from there, differs in {', '.join(diff)}")

    # Real kills: each child resumes the database the one before it was killed in and is killed at the
    # next boundary. A resumed run may finish without passing that boundary (an earlier step did its
    # work: the random baseline of every evaluated round at once, then the report) and must then
    # store the reference's rows; the next boundary is killed at on a fresh copy, from the start,
    # where the run passes every boundary, so it must die there.
    chains, chain, killed = 0, None, []
    for at in points:
        if chain is None:
            chains += 1
            chain, killed = copies.fresh(f"chain-{chains}"), []
        code = kill_at(chain, config(DATASET), at)
        if code == 137:
            killed.append(at)
            continue
        if code != 0 or not killed:
            failures.append(f"{at}: the killed run ended with {code}, not at the boundary (137)")
        else:
            diff = _differs(chain, None, None, want)  # the run finished: its result is not at hand
            if diff:
                failures.append(f"killed at {', '.join(killed)} in turn, then finished: differs in {', '.join(diff)}")
        chain = copies.fresh(f"chain-{chains}-{at.replace(':', '-')}")  # the same boundary again, from the start
        chains += 1
        code = kill_at(chain, config(DATASET), at)
        if code != 137:
            failures.append(f"{at}: the killed run ended with {code}, not at the boundary (137)")
        killed = [at]
    diff = _differs(chain, run_loop(chain, config(DATASET), plots=False), result, want)
    if diff:
        failures.append(f"killed at {', '.join(killed)} in turn: differs in {', '.join(diff)}")
    assert not failures, "\n".join(failures)
    assert len(points) == (len(hits) if copies.backend == "sqlite" else len(loop.BOUNDARIES))


def test_fault_names_a_boundary(settings, monkeypatch):
    """A misspelt CURATOR_FAULT_AT would never fire and a test relying on it would pass unkilled."""
    from curator.exceptions import ValidationError

    monkeypatch.setenv(FAULT_ENV, "evaluated:1")
    with pytest.raises(ValidationError, match="CURATOR_FAULT_AT='evaluated:1' is not <step>:<round>"):
        run_loop(settings, LoopConfig(dataset="whatever"))


def _round_samples(settings: Settings, number: int) -> list[int]:
    with transaction(settings) as s:
        return s.scalars(select(RoundItem.sample_id).join(Round, Round.id == RoundItem.round_id)
                         .where(Round.number == number).order_by(RoundItem.rank)).all()


@pytest.mark.slow
@pytest.mark.labelstudio
def test_resumed_from_waiting_while_people_label_in_label_studio(ls_server, tmp_path):
    """``--labeler labelstudio``: the loop pushes a round and returns ``waiting`` until people have
    labeled all of it; run again and again meanwhile, it changes nothing; once they have, it goes on.
    In the end the rows are those of the oracle labeler answering at once (the same answers)."""
    from curator.integrations.labelstudio import TOOL, oracle
    from curator.store.schema import TaskLink

    name = f"wait-{uuid.uuid4().hex[:10]}"  # the server's workspace is shared: media under a new name
    project = f"loop-wait-{uuid.uuid4().hex[:8]}"
    settings = dataclasses.replace(ls_server, db_url=f"sqlite:///{tmp_path / 'wait.db'}")
    small_dataset(settings, name, n_train=N_TRAIN, n_test=N_TEST)
    cfg = dataclasses.replace(config(name, labeler="labelstudio", project=project), rounds=1)

    def people(number, start=0, stop=None):  # people answer in Label Studio, as the oracle would
        oracle.annotate(settings, project, sample_ids=_round_samples(settings, number)[start:stop])

    result = run_loop(settings, cfg, plots=False)
    assert result.waiting and "round 0: 20 of 20 tasks still unlabeled" in result.waiting
    waiting = rows(settings, name)
    assert [r[:2] for r in waiting["rounds"]] == [(0, "pushed")]
    assert waiting["evaluations"] == [] and waiting["versions"] == [] and waiting["annotations"] == []
    again = run_loop(settings, cfg, plots=False)  # people have not labeled yet: nothing new
    assert again.waiting == result.waiting and rows(settings, name) == waiting

    people(0, 0, 12)
    result = run_loop(settings, cfg, plots=False)
    assert "round 0: 8 of 20 tasks still unlabeled" in result.waiting
    partly = rows(settings, name)
    assert [r[:2] for r in partly["rounds"]] == [(0, "pushed")] and len(partly["annotations"]) == 12
    assert partly["evaluations"] == [] and partly["versions"] == []

    people(0, 12)  # the rest
    result = run_loop(settings, cfg, plots=False)
    assert result.waiting and "round 1: 6 of 6 tasks still unlabeled" in result.waiting
    middle = rows(settings, name)
    assert [r[:2] for r in middle["rounds"]] == [(0, "done"), (1, "pushed")]
    assert [(e[0], e[1], e[2]) for e in middle["evaluations"]] == [
        (0, "test_error", 20), (0, loop.BASELINE_METRIC, 20), (0, loop.SUPERVISED_METRIC, 20)]

    people(1)
    result = run_loop(settings, cfg, plots=False)
    assert result.waiting is None and result.rounds_done == 1
    got = rows(settings, name)
    with transaction(settings) as s:
        assert s.scalar(select(func.count()).select_from(TaskLink).where(TaskLink.project == project)) == 26

    # the same loop with the oracle answering at once, on its own copy of the data
    direct = Settings(workspace=tmp_path / "direct")
    small_dataset(direct, name, n_train=N_TRAIN, n_test=N_TEST)
    assert run_loop(direct, dataclasses.replace(cfg, labeler="oracle", project=None), plots=False).waiting is None
    want = rows(direct, name)
    for key in ("rounds", "items", "versions", "evaluations", "models", "report"):
        assert got[key] == want[key], key
    assert [(a[0], a[4]) for a in got["annotations"]] == [(a[0], a[4]) for a in want["annotations"]]
    assert {a[1] for a in got["annotations"]} == {TOOL} and len(got["annotations"]) == 26
