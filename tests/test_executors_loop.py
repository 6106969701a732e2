"""The project's guarantees on the Ray executor: the loop stores exactly the rows the in-process
executor stores (scores, duplicates dropped, selections, versions, evaluations), a loop killed on
Ray resumes to those rows, and four selections at once on Ray make disjoint rounds.

Runs on the two-node test cluster ``tests/services.sh`` starts (``ray_address`` fixture)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from curator.loop import run_loop
from curator.store.session import dispose_all

from test_concurrency import digits  # noqa: F401 (a fixture)
from test_loop_resume import DATASET, Copies, config, kill_at, rows

pytestmark = [pytest.mark.slow]


def _on_ray(settings, address):
    return dataclasses.replace(settings, executor="ray", ray_address=address, ray_concurrency=1)


def test_loop_on_ray_stores_the_local_rows_and_a_killed_one_resumes_to_them(ray_address, tmp_path):
    copies = Copies(tmp_path, "sqlite")
    try:
        local = copies.fresh("local")
        want_result = run_loop(local, config(DATASET), plots=False)
        want = rows(local)
        assert want["items"] and any(score is not None for *_, score in want["items"])

        on_ray = _on_ray(copies.fresh("ray"), ray_address)
        got_result = run_loop(on_ray, config(DATASET), plots=False)
        dispose_all()
        got = rows(on_ray)
        assert [k for k in want if got[k] != want[k]] == [] and got_result == want_result

        killed = _on_ray(copies.fresh("killed"), ray_address)
        assert kill_at(killed, config(DATASET), "select:1") == 137  # died inside round 1, on Ray
        resumed = run_loop(killed, config(DATASET), plots=False)
        dispose_all()
        got = rows(killed)
        assert [k for k in want if got[k] != want[k]] == [] and resumed == want_result
    finally:
        copies.close()


def test_four_selects_at_once_on_ray_make_disjoint_rounds(ray_address, digits, tmp_path):
    """SQLite only: the database's part (one open round per sample) is tested on both databases in
    tests/test_concurrency.py; this is the executor's part (each process a Ray driver)."""
    from curator.settings import Settings
    from test_concurrency import DS, SELECT_CHILD, _clean, _env, _ingested, _together

    db_settings = Settings(workspace=tmp_path / "ws")

    model = _ingested(db_settings, digits)
    argv = ["select", "--dataset", DS, "--budget", "15", "--policy", "entropy", "--model", str(model.model_id),
            "--mc", "0", "--seed", "0", "--json", "--executor", "ray", "--ray-address", ray_address]
    env = _env(db_settings, CURATOR_RAY_CONCURRENCY="1")
    results = _together(4, SELECT_CHILD, lambda i: argv, lambda i: env, tmp_path / "bar")
    _clean(results)
    assert [r[0] for r in results] == [0, 0, 0, 0], [r[2] for r in results]
    chosen = [json.loads(out)["sample_ids"] for _, out, _ in results]
    flat = [s for c in chosen for s in c]
    assert len(flat) == 60 and len(set(flat)) == 60  # disjoint, though all four scored the same pool
    assert sorted(json.loads(out)["round"] for _, out, _ in results) == [1, 2, 3, 4]
