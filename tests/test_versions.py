"""Versioned labeled sets on SQLite and PostgreSQL: create, immutability, deltas, diff,
verify, exports, bad input and concurrent creators, over real MNIST-1989 digits."""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, insert, select, text, update

from curator import ingest_arrays
from curator import versions as V
from curator.exceptions import NotFoundError, StoreError, ValidationError
from curator.ingest.idx import iter_images, read_labels
from curator.settings import Settings
from curator.store.schema import Annotation, LabelVersionBlob, Model, Round, RoundItem, Sample
from curator.store.session import get_engine, transaction

from conftest import SAMPLE

N = 60
_ids = itertools.count()


def digits(n=N):
    """The first ``n`` real 16x16 test digits of MNIST-1989 and their labels."""
    _, block = next(iter_images(SAMPLE / "test-images-idx3-ubyte.gz", batch_size=n))
    return block.copy(), read_labels(SAMPLE / "test-labels-idx1-ubyte.gz")[:n]


def annotate(settings, pairs, tool="test"):
    with transaction(settings) as s:
        s.execute(insert(Annotation), [
            {"sample_id": sid, "tool": tool, "external_id": f"a{next(_ids)}", "label": lab} for sid, lab in pairs
        ])


def retract(settings, sample_ids):
    """Delete the live answers of these samples (as a pull of deleted annotations does)."""
    with transaction(settings) as s:
        s.execute(update(Annotation).where(Annotation.sample_id.in_(sample_ids)).values(deleted=True))


@pytest.fixture
def pool(db_settings):
    """(settings, sample ids, ground-truth labels as str, images) of N real digits."""
    images, labels = digits()
    ingest_arrays(images, labels, dataset="digits", split="test", name="d", settings=db_settings)
    with transaction(db_settings) as s:
        ids = s.scalars(select(Sample.id).order_by(Sample.id)).all()
    return db_settings, ids, [str(x) for x in labels], images


def file_checksum(settings, members: dict[int, str]) -> str:
    """The documented checksum, recomputed from the files on disk (independent of the store)."""
    with transaction(settings) as s:
        uris = dict(s.execute(select(Sample.id, Sample.uri)).all())
    lines = sorted(f"{hashlib.sha256(Path(uris[i]).read_bytes()).hexdigest()}\t{lab}\n" for i, lab in members.items())
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def stored_rows(settings, name) -> Counter:
    with transaction(settings) as s:
        vid = s.scalar(text("SELECT id FROM label_versions WHERE name = :n"), {"n": name})
        return Counter(dict(s.execute(
            select(LabelVersionBlob.kind, func.sum(LabelVersionBlob.count))
            .where(LabelVersionBlob.version_id == vid).group_by(LabelVersionBlob.kind)
        ).all()))


def test_create_freezes_agreed_labels_with_counts_and_checksum(pool):
    settings, ids, gt, _ = pool
    annotate(settings, zip(ids[:30], gt[:30]))
    annotate(settings, [(ids[0], "9"), (ids[0], "9")])  # two of three annotators say 9: agreed label 9
    v1 = V.create_version("v1", message="first labels", settings=settings)
    expected = dict(zip(ids[:30], gt[:30])) | {ids[0]: "9"}
    assert (v1.size, v1.parent, v1.message, v1.snapshot) == (30, None, "first labels", True)
    assert v1.counts == dict(sorted(Counter(expected.values()).items(), key=lambda kv: int(kv[0])))
    assert v1.checksum == file_checksum(settings, expected)
    assert V.read_version("v1", settings=settings).as_dict() == expected

    # labels that arrive later change nothing in v1
    annotate(settings, zip(ids[30:40], gt[30:40]))
    annotate(settings, [(ids[1], "0")] * 3)
    assert V.read_version("v1", settings=settings).as_dict() == expected
    assert V.show_version("v1", settings=settings).checksum == v1.checksum
    v2 = V.create_version("v2", settings=settings)
    assert v2.parent == "v1" and v2.size == 40
    assert [v.name for v in V.list_versions(settings=settings)] == ["v1", "v2"]


def test_a_version_stores_only_its_changes_and_diffs_report_them(pool):
    settings, ids, gt, _ = pool
    annotate(settings, zip(ids[:40], gt[:40]))
    V.create_version("base", settings=settings)
    flip = {sid: str((int(lab) + 1) % 10) for sid, lab in zip(ids[:3], gt[:3])}
    annotate(settings, flip.items())                        # relabel 3 (newest wins a tie)
    annotate(settings, zip(ids[40:45], gt[40:45]))          # add 5
    retract(settings, ids[38:40])                           # remove 2
    v2 = V.create_version("next", settings=settings)
    assert v2.changes == {"added": 5, "relabeled": 3, "removed": 2}
    assert stored_rows(settings, "base") == Counter({"snapshot": 40})
    assert stored_rows(settings, "next") == Counter({"delta": 10})   # O(k) entries, no copy of the set

    d = V.diff_versions("base", "next", settings=settings)
    assert d.added == [(sid, lab) for sid, lab in zip(ids[40:45], gt[40:45])]
    assert d.removed == [(sid, lab) for sid, lab in zip(ids[38:40], gt[38:40])]
    assert d.relabeled == [(sid, gt[i], flip[sid]) for i, sid in enumerate(ids[:3])]
    for cls, row in d.per_class.items():
        assert row["b"] - row["a"] == row["added"] - row["removed"] + row["relabeled_in"] - row["relabeled_out"]
    back = V.diff_versions("next", "base", settings=settings)
    assert (back.added, back.removed) == (d.removed, d.added)
    assert V.diff_versions("next", "next", settings=settings).unchanged


def test_long_chains_take_snapshots_and_every_version_reads_back(pool):
    settings, ids, gt, _ = pool
    members = ids[:20]
    truth = {}
    for k in range(6):  # each version relabels the whole set: reads must stay bounded
        labels = {sid: str((int(gt[i]) + k) % 10) for i, sid in enumerate(members)}
        retract(settings, members)
        annotate(settings, labels.items())
        info = V.create_version(f"r{k}", settings=settings)
        truth[info.name] = labels
        assert info.chain_rows <= 2 * info.size
    infos = {v.name: v for v in V.list_versions(settings=settings)}
    assert [n for n, v in infos.items() if v.snapshot] == ["r0", "r2", "r4"]
    for name, labels in truth.items():
        assert V.read_version(name, settings=settings).as_dict() == labels
        assert V.verify_version(name, settings=settings).ok
    # a diff across snapshots, and one between lines with no common ancestor
    assert len(V.diff_versions("r1", "r5", settings=settings).relabeled) == 20
    annotate(settings, zip(ids[20:25], gt[20:25]))
    V.create_version("other", parent=None, settings=settings)
    d = V.diff_versions("r5", "other", settings=settings)
    assert len(d.added) == 5 and not d.removed


def test_lineage_and_filters_by_split_and_round(pool):
    settings, ids, gt, images = pool
    ingest_arrays(images[:10], None, dataset="digits", split="extra", name="e", settings=settings)
    with transaction(settings) as s:
        extra = s.scalars(select(Sample.id).where(Sample.split == "extra").order_by(Sample.id)).all()
        model = s.scalar(insert(Model).values(name="cnn", version="3", checksum="ab" * 32).returning(Model.id))
        r1 = s.scalar(insert(Round).values(dataset_id=1, number=1, policy="entropy", params={"t": 1}, budget=5,
                                           seed=7, model_id=model).returning(Round.id))
        r2 = s.scalar(insert(Round).values(dataset_id=1, number=2, policy="random", budget=5, seed=8).returning(Round.id))
        s.execute(insert(RoundItem), [{"round_id": r1, "sample_id": sid, "rank": i} for i, sid in enumerate(ids[:5])]
                  + [{"round_id": r2, "sample_id": sid, "rank": i} for i, sid in enumerate(ids[5:10])])
    annotate(settings, zip(ids[:20], gt[:20]))
    annotate(settings, [(sid, "3") for sid in extra[:4]])
    full = V.create_version("all", settings=settings)
    lin = full.lineage
    assert [(r["number"], r["policy"], r["model"], r["samples"]) for r in lin["rounds"]] == [
        (1, "entropy", "cnn:3", 5), (2, "random", None, 5)]
    assert lin["policies"] == ["entropy", "random"] and lin["models"][0]["checksum"] == "ab" * 32
    assert lin["outside_rounds"] == 24 - 10
    only_test = V.create_version("test-only", split="test", settings=settings)
    assert only_test.size == 20 and only_test.filters == {"split": ["test"]}
    r1_only = V.create_version("round1", rounds=[1], settings=settings)
    assert set(V.read_version("round1", settings=settings).sample_ids.tolist()) == set(ids[:5])
    assert r1_only.lineage["policies"] == ["entropy"]
    with pytest.raises(NotFoundError, match=r"rounds \[9\]"):
        V.create_version("nope", rounds=[9], settings=settings)


def _refused(settings, sql):
    with pytest.raises(Exception) as err:
        with transaction(settings) as s:
            s.execute(text(sql))
    assert "immutable" in str(err.value) or "sealed" in str(err.value), str(err.value)


def test_the_database_refuses_to_change_a_version(pool):
    settings, ids, gt, _ = pool
    annotate(settings, zip(ids[:10], gt[:10]))
    v = V.create_version("frozen", settings=settings)
    annotate(settings, [(ids[0], "5")] * 2)
    V.create_version("child", settings=settings)
    for sql in (
        "UPDATE label_versions SET checksum = 'x', size = 1",
        "UPDATE label_versions SET name = 'renamed' WHERE name = 'frozen'",
        "DELETE FROM label_versions WHERE name = 'child'",
        "UPDATE label_version_blobs SET vocabulary = '[\"0\"]'",
        "UPDATE label_version_blobs SET labels = sample_ids WHERE kind = 'delta'",
        "DELETE FROM label_version_blobs",
        "DELETE FROM label_version_seals",
        "INSERT INTO label_version_blobs (version_id, kind, chunk, count, sample_ids, labels, vocabulary) "
        f"SELECT version_id, kind, chunk + 1, count, sample_ids, labels, vocabulary FROM label_version_blobs "
        f"WHERE version_id = {v.id}",
    ):
        _refused(settings, sql)
    if settings.database_url.startswith("postgresql"):
        _refused(settings, "TRUNCATE label_version_blobs")
    report = V.verify_version("frozen", settings=settings)
    assert report.ok and report.computed_checksum == v.checksum


def test_verify_reports_tampering_behind_the_triggers(pool):
    settings, ids, gt, _ = pool
    annotate(settings, zip(ids[:10], gt[:10]))
    v = V.create_version("v", settings=settings)
    with transaction(settings) as s:  # an administrator bypassing the triggers
        if settings.database_url.startswith("postgresql"):
            s.execute(text("ALTER TABLE label_version_blobs DISABLE TRIGGER USER"))
        else:
            s.execute(text("DROP TRIGGER label_version_blobs_no_update"))
        vocab = s.scalar(select(LabelVersionBlob.vocabulary))
        s.execute(update(LabelVersionBlob).values(vocabulary=vocab[::-1]))  # swap the labels around
    report = V.verify_version("v", settings=settings)
    assert not report.ok and report.stored_checksum == v.checksum != report.computed_checksum
    assert any("checksum differs" in p for p in report.problems)
    assert any("counts per class differ" in p for p in report.problems)


def test_verify_files_detects_a_changed_image(pool):
    settings, ids, gt, _ = pool
    annotate(settings, zip(ids[:5], gt[:5]))
    V.create_version("v", settings=settings)
    assert V.verify_version("v", files=True, settings=settings).ok
    with transaction(settings) as s:
        uri = s.scalar(select(Sample.uri).where(Sample.id == ids[2]))
    Path(uri).write_bytes(Path(uri).read_bytes() + b"\0")
    report = V.verify_version("v", files=True, settings=settings)
    assert not report.ok and uri in report.problems[0]


def test_bad_input_gives_clear_errors_and_writes_nothing(pool):
    settings, ids, gt, _ = pool
    with pytest.raises(ValidationError, match="nothing to version.*no agreed labels"):
        V.create_version("empty", settings=settings)
    annotate(settings, zip(ids[:5], gt[:5]))
    V.create_version("v1", settings=settings)
    with pytest.raises(ValidationError, match="'v1' already exists.*immutable"):
        V.create_version("v1", settings=settings)
    with pytest.raises(ValidationError, match="nothing to version"):
        V.create_version("v2", split="train", settings=settings)
    for bad in ("", "   ", "@head", "x" * 201):
        with pytest.raises(ValidationError, match="version name"):
            V.create_version(bad, settings=settings)
    with pytest.raises(NotFoundError, match="version 'nope' does not exist.*known: v1"):
        V.diff_versions("v1", "nope", settings=settings)
    with pytest.raises(NotFoundError, match="version 'ghost'"):
        V.create_version("v3", parent="ghost", settings=settings)
    with pytest.raises(NotFoundError, match="dataset 'other' does not exist"):
        V.create_version("v3", dataset="other", settings=settings)
    assert [v.name for v in V.list_versions(settings=settings)] == ["v1"]
    with transaction(settings) as s:
        assert s.scalar(select(func.sum(LabelVersionBlob.count))) == 5


def test_concurrent_creators_get_serial_results(pool):
    settings, ids, gt, _ = pool
    annotate(settings, zip(ids[:30], gt[:30]))
    get_engine(settings.database_url)
    names = [f"c{i}" for i in range(4)] + ["same", "same"]
    barrier = threading.Barrier(len(names))
    results: dict[int, object] = {}

    def worker(i, name):
        barrier.wait()
        try:
            results[i] = V.create_version(name, settings=settings)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i, n)) for i, n in enumerate(names)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    errors = [r for r in results.values() if isinstance(r, Exception)]
    assert len(results) == 6 and len(errors) == 1, errors
    assert isinstance(errors[0], (ValidationError, StoreError)) and "same" in str(errors[0])
    made = V.list_versions(settings=settings)
    assert len(made) == 5
    # serial: each version's parent is the one created just before it, and all are whole
    assert [v.parent for v in made] == [None] + [v.name for v in made[:-1]]
    assert all(V.verify_version(v.name, settings=settings).ok for v in made)
    assert len({v.checksum for v in made}) == 1


#: Run in each process: connect, signal ready, wait for the go file, then time `curator ARGV`.
RACER = """
import json, os, sys, time
from pathlib import Path
from curator.cli import main
from curator.store.session import get_engine
import curator.versions
get_engine(os.environ["CURATOR_DB_URL"])
ready, go, times = (Path(p) for p in sys.argv[1:4])
ready.touch()
while not go.exists():
    time.sleep(0.001)
start = time.monotonic_ns()
try:
    main(sys.argv[4:])
finally:
    times.write_text(json.dumps([start, time.monotonic_ns()]))
"""


def test_two_processes_creating_the_same_name(pool, tmp_path):
    """Two `curator version create race` that truly run at once: both wait on one go file,
    and their timed spans must overlap, or the test fails instead of passing serially."""
    import os
    import subprocess
    import sys

    settings, ids, gt, _ = pool
    annotate(settings, zip(ids[:30], gt[:30]))
    get_engine(settings.database_url)
    env = {**os.environ, "CURATOR_DB_URL": settings.database_url, "CURATOR_WORKSPACE": str(settings.workspace)}
    go = tmp_path / "go"
    argv = ["version", "create", "race", "-d", "digits", "--json"]
    procs = [
        subprocess.Popen([sys.executable, "-c", RACER, tmp_path / f"ready{i}", go, tmp_path / f"times{i}", *argv],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    while not all((tmp_path / f"ready{i}").exists() for i in range(2)):  # both connected and waiting
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        threading.Event().wait(0.01)
    go.touch()
    outs = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
    spans = [json.loads((tmp_path / f"times{i}").read_text()) for i in range(2)]
    assert max(s for s, _ in spans) < min(e for _, e in spans), f"the two runs did not overlap: {spans}"
    codes = sorted(rc for _, _, rc in outs)
    assert codes[0] == 0 and codes[1] != 0, outs
    loser = next(err for _, err, rc in outs if rc)
    assert loser.startswith("error: ") and "race" in loser and len(loser.strip().splitlines()) == 1
    assert [v.name for v in V.list_versions(settings=settings)] == ["race"]
    assert V.verify_version("race", settings=settings).ok


def test_manifest_reimports_to_the_same_checksum(pool, tmp_path):
    settings, ids, gt, _ = pool
    annotate(settings, zip(ids[:25], gt[:25]))
    v = V.create_version("v", settings=settings)
    doc = V.export_manifest("v", tmp_path / "v.json", settings=settings)
    assert doc["checksum"] == v.checksum and len(doc["items"]) == 25
    assert {"uri", "sha256", "label"} <= set(doc["items"][0])
    # into a brand-new SQLite database: samples are ingested from the URIs, hashes checked
    other = Settings(workspace=tmp_path / "elsewhere")
    again = V.import_manifest(tmp_path / "v.json", settings=other)
    assert again.checksum == v.checksum and again.size == 25 and again.name == "v"
    # into the same database under a new name: no sample is added
    same = V.import_manifest(tmp_path / "v.json", name="v-copy", settings=settings)
    assert same.checksum == v.checksum and same.changes == {"added": 0, "relabeled": 0, "removed": 0}
    # an edited manifest is refused and leaves nothing
    doc["items"][0]["label"] = "7" if doc["items"][0]["label"] != "7" else "1"
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(ValidationError, match="changed since it was exported.*checksum"):
        V.import_manifest(tmp_path / "bad.json", name="edited", settings=settings)
    assert [x.name for x in V.list_versions(settings=settings)] == ["v", "v-copy"]
    (tmp_path / "junk.json").write_text("{}")
    with pytest.raises(ValidationError, match="not a curator version manifest"):
        V.import_manifest(tmp_path / "junk.json", settings=settings)


def test_numpy_and_torch_exports_hold_the_real_pixels(pool, tmp_path):
    import torch

    settings, ids, gt, images = pool
    annotate(settings, zip(ids[:12], gt[:12]))
    V.create_version("v", settings=settings)
    out = V.export_numpy("v", tmp_path / "v.npz", settings=settings)
    assert out["images"].shape == (12, 16, 16) and out["images"].dtype == np.uint8
    np.testing.assert_array_equal(out["images"], images[:12])
    assert [out["classes"][i] for i in out["labels"]] == gt[:12]
    saved = np.load(tmp_path / "v.npz")
    np.testing.assert_array_equal(saved["images"], images[:12])

    ds = V.torch_dataset("v", settings=settings)
    assert isinstance(ds, torch.utils.data.Dataset) and len(ds) == 12
    x, y = ds[3]
    assert x.shape == (1, 16, 16) and x.dtype == torch.float32 and ds.classes[y] == gt[3]
    assert torch.allclose(x[0] * 255, torch.from_numpy(images[3]).float())
    batch_x, batch_y = next(iter(torch.utils.data.DataLoader(ds, batch_size=5)))
    assert batch_x.shape == (5, 1, 16, 16) and batch_y.tolist() == out["labels"][:5].tolist()
    doc = V.export_torch("v", tmp_path / "v.pt", settings=settings)
    loaded = torch.load(tmp_path / "v.pt")
    assert torch.equal(loaded["images"], torch.from_numpy(images[:12])) and loaded["checksum"] == doc["checksum"]


def test_cli_commands_and_errors(pool, tmp_path, capsys, monkeypatch):
    from curator.cli import main

    settings, ids, gt, _ = pool
    monkeypatch.setenv("CURATOR_DB_URL", settings.database_url)
    monkeypatch.setenv("CURATOR_WORKSPACE", str(settings.workspace))
    annotate(settings, zip(ids[:10], gt[:10]))

    def run(*args):
        with pytest.raises(SystemExit) as ex:
            main(["version", *args])
        cap = capsys.readouterr()
        return ex.value.code, cap.out, cap.err

    code, out, _ = run("create", "a", "-m", "first", "--json")
    assert code == 0 and json.loads(out)["size"] == 10
    annotate(settings, [(ids[0], "0"), (ids[0], "0")])
    assert run("create", "b")[0] == 0
    code, out, _ = run("list", "--json")
    assert [v["name"] for v in json.loads(out)] == ["a", "b"]
    code, out, _ = run("show", "b")
    assert code == 0 and "parent    a" in out
    code, out, _ = run("diff", "a", "b", "--json")
    assert json.loads(out)["counts"]["relabeled"] == (0 if gt[0] == "0" else 1)
    code, out, _ = run("verify", "b")
    assert code == 0 and ": ok" in out
    code, out, _ = run("export", "b", "--format", "manifest", "--out", str(tmp_path / "b.json"))
    assert code == 0 and json.loads((tmp_path / "b.json").read_text())["version"] == "b"
    code, out, _ = run("import", str(tmp_path / "b.json"), "--name", "b2")
    assert code == 0 and "matches the manifest" in out
    code, _, err = run("diff", "a", "zzz")
    assert code == NotFoundError.exit_code and err.startswith("error: version 'zzz' does not exist")
    code, _, err = run("create", "a")
    assert code == ValidationError.exit_code and "already exists" in err
    code, _, err = run("export", "a", "--format", "numpy")
    assert code == ValidationError.exit_code and "--out" in err


@pytest.mark.fiftyone
def test_cli_exports_a_version_to_fiftyone(settings, fiftyone_db, capsys, monkeypatch):
    import fiftyone

    from curator.cli import main

    images, labels = digits(20)
    ingest_arrays(images, labels, dataset="digits", split="test", name="d", settings=settings)
    with transaction(settings) as s:
        ids = s.scalars(select(Sample.id).order_by(Sample.id)).all()
    annotate(settings, [(sid, str(lab)) for sid, lab in zip(ids[:8], labels[:8])])
    V.create_version("v1", settings=settings)
    monkeypatch.setenv("CURATOR_WORKSPACE", str(settings.workspace))
    try:
        with pytest.raises(SystemExit) as ex:
            main(["version", "export", "v1", "--format", "fiftyone", "--out", "digits-v1", "--json"])
        assert ex.value.code == 0, capsys.readouterr().err
        assert json.loads(capsys.readouterr().out)["out"] == "digits-v1"
        ds = fiftyone.load_dataset("digits-v1")
        members = {smp.curator_id: smp.version_label.label for smp in ds if smp.version_label is not None}
        assert members == V.read_version("v1", settings=settings).as_dict()
    finally:
        fiftyone.delete_datasets("*")


def test_array_checksum_equals_the_reference_definition():
    rng = np.random.default_rng(0)
    shas = [hashlib.sha256(bytes([i % 7])).hexdigest() for i in range(300)]  # many equal hashes
    vocab = ("7", "10", "a", "a\x01", "ab", "é", "")  # prefixes, control and non-ASCII characters
    codes = rng.integers(0, len(vocab), 300)
    assert V._checksum(shas, codes, vocab) == V.checksum_of((s, vocab[c]) for s, c in zip(shas, codes.tolist()))


def test_delta_arithmetic_round_trips():
    rng = np.random.default_rng(1)
    old = {int(i): str(rng.integers(0, 5)) for i in rng.choice(1000, 400, replace=False)}
    new = {k: v for k, v in old.items() if rng.random() > 0.1}
    new.update({int(i): str(rng.integers(0, 6)) for i in rng.choice(1000, 100)})
    a, b = V._Labels.from_dict(old), V._Labels.from_dict(new)
    delta, changes = V._delta_of(a, b)
    assert V._apply(a, delta).to_dict() == new
    assert V._decode([c[2:] for c in V._encode(delta)]).to_dict() == delta.to_dict()
    assert changes["removed"] == len(set(old) - set(new))
    assert changes["added"] == len(set(new) - set(old))
    assert changes["relabeled"] == sum(1 for k in set(old) & set(new) if old[k] != new[k])


def test_agreed_labels_majority_ties_skips_and_deletions(settings):
    """The fast path of store.queries.agreed_labels keeps its documented rule."""
    from curator.store.queries import agreed_labels

    images, labels = digits(6)
    ingest_arrays(images, labels, dataset="digits", name="d", settings=settings)
    with transaction(settings) as s:
        ids = s.scalars(select(Sample.id).order_by(Sample.id)).all()
    annotate(settings, [(ids[0], "1")])                                   # single answer
    annotate(settings, [(ids[1], "1"), (ids[1], "2"), (ids[1], "1")])    # majority 1
    annotate(settings, [(ids[2], "1"), (ids[2], "2")])                    # tie: the newest wins
    annotate(settings, [(ids[3], "4"), (ids[3], "5")])
    retract(settings, [ids[4]])
    with transaction(settings) as s:
        s.execute(insert(Annotation), [
            {"sample_id": ids[3], "tool": "test", "external_id": "del", "label": "9", "deleted": True},
            {"sample_id": ids[5], "tool": "test", "external_id": "skip", "label": None, "skipped": True},
        ])
        got = agreed_labels(s, 1)
    assert got == {ids[0]: ("1", 1.0, 1), ids[1]: ("1", 2 / 3, 3), ids[2]: ("2", 0.5, 2), ids[3]: ("5", 0.5, 2)}
