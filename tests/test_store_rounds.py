"""The rounds aggregate of the store (curator/store/rounds.py): a round by its number within a dataset.

Two datasets, so that dataset B's round 1 has another primary key than its number: every reader
(the store, FiftyOne's sync, `curator push`) must find B's round 1, not the round whose id is 1.
Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from sqlalchemy import func, select

from curator.exceptions import NotFoundError, ValidationError
from curator.store import rounds as R
from curator.store.schema import OpenRoundSample, Round, RoundItem, Sample
from curator.store.queries import dataset_id, resolve_dataset
from curator.store.session import transaction


@pytest.fixture
def two(db_settings, small_idx):
    """Datasets ``a`` (rounds 1 and 2) and ``b`` (round 1, recorded last): b's round 1 has id 3."""
    from curator.ingest import ingest_idx

    settings = db_settings
    for name in ("a", "b"):
        ingest_idx(*small_idx, dataset=name, split="train", settings=settings)
    with transaction(settings) as s:
        ids = {n: s.scalars(select(Sample.id).where(Sample.dataset_id == dataset_id(s, n)).order_by(Sample.id)).all()
               for n in ("a", "b")}
        a, b = dataset_id(s, "a"), dataset_id(s, "b")
        R.create(s, a, ids["a"][:4], [0.9, 0.8, np.nan, 0.1], policy="p", params={"k": 1}, budget=4, seed=5,
                 model_id=None)
        R.create(s, a, ids["a"][4:6], [0.5, 0.4], policy="p", params=None, budget=2, seed=5, model_id=None)
        b1 = list(reversed(ids["b"][10:16]))  # rank order is not id order
        R.create(s, b, b1, np.linspace(1, 0, 6), policy="q", params=None, budget=6, seed=9, model_id=None)
    return settings, a, b, b1


def test_a_round_is_found_by_its_number_within_its_dataset(two):
    settings, a, b, b1 = two
    with transaction(settings) as s:
        rnd = R.get(s, b, 1)
        assert rnd.number == 1 and rnd.dataset_id == b and rnd.id != 1 and rnd.seed == 9 and rnd.policy == "q"
        assert s.scalar(select(Round.dataset_id).where(Round.id == 1)) == a  # id 1 is a's round 1
        got = R.items(s, rnd)
        assert got.sample_id.tolist() == b1 and got.rank.tolist() == list(range(6))
        assert np.allclose(got.score, np.linspace(1, 0, 6))
        first = R.items(s, R.get(s, a, 1))
        assert np.isnan(first.score[2]) and first.score[0] == pytest.approx(0.9)  # None is NaN, not 0
        assert R.numbers(s, a) == [1, 2] and R.numbers(s, b) == [1]
        assert R.latest(s, a).number == 2 and R.latest(s, b).number == 1
        assert [r.number for r in R.list_rounds(s, a)] == [1, 2]
        assert R.find(s, b, 2) is None and R.next_number(s, b) == 2
        numbers, items = R.all_items(s, b)
        assert numbers.tolist() == [1] * 6 and items.sample_id.tolist() == b1


def test_an_unknown_round_names_the_dataset_the_number_and_the_known_numbers(two):
    settings, a, b, _ = two
    with transaction(settings) as s:
        with pytest.raises(NotFoundError, match=r"round 3 of dataset 'a' does not exist \(rounds: 1, 2\)"):
            R.get(s, a, 3)
        with pytest.raises(NotFoundError, match=r"round 2 of dataset 'b' does not exist \(rounds: 1\)"):
            R.set_status(s, b, 2, "done")


def test_what_leaves_the_store_is_a_frozen_copy(two):
    settings, _, b, _ = two
    with transaction(settings) as s:
        rnd = R.get(s, b, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        rnd.status = "done"


def test_set_status_moves_one_round_and_frees_its_samples(two):
    settings, a, b, b1 = two
    with transaction(settings) as s:
        assert sorted(R.open_sample_ids(s, b).tolist()) == sorted(b1)
        done = R.set_status(s, b, 1, "done")
        assert done.status == "done" and done.finished_at is not None
    with transaction(settings) as s:
        assert R.get(s, b, 1).status == "done" and R.get(s, a, 1).status == "selected"
        assert R.open_sample_ids(s, b).size == 0  # the open-round triggers (migration 0005) followed
        assert not set(b1) & set(s.scalars(select(OpenRoundSample.sample_id)))
        R.set_status(s, a, 1, "labeled")
        kept = R.set_status(s, a, 1, "pushed", only_from=("pending", "selected"))  # a push never goes back
        assert kept.status == "labeled"
        with pytest.raises(ValidationError, match="round status must be one of"):
            R.set_status(s, a, 2, "finished")
        assert R.sample_ids_after(s, a, 1).tolist() == R.items(s, R.get(s, a, 2)).sample_id.tolist()


def test_create_refuses_a_sample_of_an_open_round_and_a_taken_number(two):
    settings, a, b, b1 = two
    with transaction(settings) as s:
        rows = s.scalar(select(func.count()).select_from(RoundItem))
    with pytest.raises(R.SamplesTaken):
        with transaction(settings) as s:
            R.create(s, b, [b1[0] + 1, b1[2]], [1.0, 0.5], policy="p", params=None, budget=2, seed=0, model_id=None)
    with pytest.raises(R.SamplesTaken):
        with transaction(settings) as s:
            R.create(s, b, [b1[0] + 1], [1.0], number=1, policy="p", params=None, budget=1, seed=0, model_id=None)
    with transaction(settings) as s:  # rolled back: nothing was written
        assert s.scalar(select(func.count()).select_from(RoundItem)) == rows and R.numbers(s, b) == [1]
        with pytest.raises(ValidationError, match="one score per sample"):
            R.create(s, b, [b1[0] + 1], [], policy="p", params=None, budget=1, seed=0, model_id=None)


def test_the_only_dataset_is_the_default_and_several_are_listed(two, tmp_path):
    settings, a, b, _ = two
    with transaction(settings) as s:
        with pytest.raises(ValidationError, match=r"several datasets exist \(a, b\); pass --dataset NAME"):
            resolve_dataset(s, None)
        assert resolve_dataset(s, "B") == (b, "b")


def test_fiftyone_collect_finds_round_1_of_its_dataset(two):
    """``curator fiftyone sync --dataset b --round 1`` reads b's round 1 (not the round whose id is 1)."""
    from curator.integrations.fiftyone.sync import collect

    settings, _, _, b1 = two
    cols = collect(settings, "b", round=1, duplicates=False)
    assert sorted(cols.ids.tolist()) == sorted(b1) and cols.latest_round == 1
    with pytest.raises(NotFoundError, match=r"round 2 of dataset 'b' does not exist \(rounds: 1\)"):
        collect(settings, "b", round=2, duplicates=False)
