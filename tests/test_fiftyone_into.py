"""curator's fields written into the user's OWN FiftyOne dataset (``curator fiftyone sync --into``):
matched by file path or a named field, only ``curator_*`` fields written, the user's fields untouched,
idempotent, and a clear error (nothing written) when a sample cannot be matched."""

from __future__ import annotations

import json
import shutil

import pytest

from fiftyone_data import make_workspace

pytestmark = [pytest.mark.fiftyone, pytest.mark.slow]


@pytest.fixture
def fo(fiftyone_db):
    import fiftyone

    yield fiftyone
    fiftyone.delete_datasets("*")


def _uris(settings) -> dict[int, str]:
    from sqlalchemy import select

    from curator.store.schema import Sample
    from curator.store.session import transaction

    with transaction(settings) as s:
        return dict(s.execute(select(Sample.id, Sample.uri)).all())


def _users_dataset(fo, name, paths, extra=None, **fields):
    """A dataset of the user's: their own labels, notes and a field named like one of curator's."""
    ds = fo.Dataset(name)
    ds.persistent = True
    samples = []
    for k, p in enumerate(list(paths) + ([extra] if extra else [])):
        samples.append(fo.Sample(filepath=p, notes=f"note {k}", prediction=fo.Classification(label="theirs"),
                                 ground_truth=fo.Classification(label=f"user{k % 3}"),
                                 **{f: v[k] for f, v in fields.items() if k < len(v)}))
    ds.add_samples(samples, progress=False)
    return ds


def _user_state(ds) -> list:
    return list(zip(ds.values("id"), ds.values("filepath"), ds.values("notes"), ds.values("prediction.label"),
                    ds.values("ground_truth.label")))


def test_into_the_users_dataset_matched_by_filepath(db_settings, fo, tmp_path):
    from curator.integrations.fiftyone.into import sync_into
    from curator.store.schema import Score
    from curator.store.session import transaction

    data = make_workspace(db_settings)
    uris = _uris(db_settings)
    extra = tmp_path / "not_in_curator.png"
    shutil.copy(uris[data["ids"][0]], extra)
    ds = _users_dataset(fo, "mine", reversed([uris[i] for i in data["ids"]]), extra=str(extra))
    mine = _user_state(ds)

    report = sync_into(db_settings, "digits", "mine")
    assert report.matched == len(data["ids"]) and report.not_in_curator == 1
    ds.reload()
    assert _user_state(ds) == mine  # the user's fields and samples, untouched
    by_path = {s.filepath: s for s in ds}
    for sid in data["ids"]:
        s = by_path[uris[sid]]
        assert s.curator_id == sid
        assert s.curator_entropy == pytest.approx(data["entropy"][sid])
        assert s.curator_prediction.label == str(data["pred"][sid])
        assert s.prediction.label == "theirs"
    for rank, sid in enumerate(data["round"]):
        assert (by_path[uris[sid]].curator_round, by_path[uris[sid]].curator_rank) == (1, rank)
    a, b = data["duplicate"]
    assert by_path[uris[a]].curator_dup_group == by_path[uris[b]].curator_dup_group == a
    assert by_path[uris[data["ids"][0]]].curator_human_label.label == data["human"][data["ids"][0]]
    outsider = by_path[str(extra)]
    assert outsider.curator_id is None and outsider.curator_entropy is None
    assert "curator_split" in report.fields and not [f for f in report.fields if not f.startswith("curator_")]
    assert fo.list_datasets() == ["mine"]  # no copy of curator's own
    assert ds.info["curator_fields"]["complete"] is True

    again = sync_into(db_settings, "digits", "mine")  # idempotent: nothing differs, nothing written
    assert set(again.changed.values()) == {0} and again.fields == report.fields
    with transaction(db_settings) as s:
        s.add(Score(sample_id=data["ids"][7], kind="entropy", value=5.0))
    third = sync_into(db_settings, "digits", "mine")
    assert third.changed["curator_entropy"] == 1 and sum(third.changed.values()) == 1
    ds.reload()
    assert by_path[uris[data["ids"][7]]].id in ds.match(fo.ViewField("curator_entropy") == 5.0).values("id")
    assert _user_state(ds) == mine


def test_a_named_match_field_and_the_errors(settings, fo, tmp_path):
    from curator.exceptions import FiftyOneError, ValidationError
    from curator.integrations.fiftyone.into import sync_into

    data = make_workspace(settings)
    uris = _uris(settings)
    moved = tmp_path / "moved"
    moved.mkdir()
    paths = []
    for sid in data["ids"]:  # the user's copies live elsewhere; a field remembers curator's path
        paths.append(str(moved / f"{sid}.png"))
        shutil.copy(uris[sid], paths[-1])
    ds = _users_dataset(fo, "moved", paths, source=[uris[i] for i in data["ids"]])
    mine = _user_state(ds)
    schema = set(ds.get_field_schema())

    with pytest.raises(ValidationError, match=rf"{len(data['ids'])} of {len(data['ids'])} curator sample.*"
                                              r"file path in field 'filepath'.*--match FIELD"):
        sync_into(settings, "digits", "moved")
    with pytest.raises(ValidationError, match="--match 'nope': FiftyOne dataset 'moved' has no such field"):
        sync_into(settings, "digits", "moved", match="nope")
    ds.reload()
    assert set(ds.get_field_schema()) == schema and "curator_fields" not in ds.info  # nothing written

    report = sync_into(settings, "digits", "moved", match="source")
    assert report.matched == len(data["ids"]) and report.not_in_curator == 0
    ds.reload()
    assert {s.source: s.curator_id for s in ds} == {uris[i]: i for i in data["ids"]}
    assert _user_state(ds) == mine

    # one curator sample missing from the user's dataset: named, nothing written
    short = _users_dataset(fo, "short", [uris[i] for i in data["ids"][1:]])
    with pytest.raises(ValidationError, match=rf"1 of {len(data['ids'])} curator sample.*e.g. {uris[data['ids'][0]]}"):
        sync_into(settings, "digits", "short")
    short.reload()
    assert not [f for f in short.get_field_schema() if f.startswith("curator_")]

    # a curator_* field of the user's own is never overwritten
    clash = _users_dataset(fo, "clash", [uris[i] for i in data["ids"]], curator_entropy=[1.5] * len(data["ids"]))
    with pytest.raises(FiftyOneError, match="already has field.*curator_entropy.*curator did not write"):
        sync_into(settings, "digits", "clash")
    clash.reload()
    assert set(clash.values("curator_entropy")) == {1.5} and "curator_round" not in clash.get_field_schema()


def test_cli_sync_into(settings, fo, monkeypatch, capsys):
    from curator.cli import main

    data = make_workspace(settings)
    uris = _uris(settings)
    _users_dataset(fo, "mine", [uris[i] for i in data["ids"]])
    monkeypatch.setenv("CURATOR_WORKSPACE", str(settings.workspace))

    def run(*argv):
        with pytest.raises(SystemExit) as exit_:
            main(list(argv))
        out = capsys.readouterr()
        return exit_.value.code, out.out, out.err

    code, out, err = run("fiftyone", "sync", "--dataset", "digits", "--into", "mine", "--json")
    assert code == 0, err
    assert json.loads(out)["matched"] == len(data["ids"])
    code, out, err = run("fiftyone", "sync", "--dataset", "digits", "--into", "mine")
    assert code == 0 and out.startswith(f"mine: curator fields of {len(data['ids'])} samples") and "0 values changed" in out
    code, out, err = run("fiftyone", "sync", "--dataset", "digits", "--into", "mine", "--round", "1")
    assert code == 2 and err.startswith("error: --round cannot go with --into") and len(err.splitlines()) == 1
    code, out, err = run("fiftyone", "sync", "--dataset", "digits", "--into", "absent")
    assert code == 4 and err.startswith("error: FiftyOne dataset 'absent' does not exist")
