"""Exports people load: ImageFolder (links or copies), CSV / JSONL tables and Hugging Face
``datasets``, each read back with a reader that knows nothing of curator, on SQLite and
PostgreSQL; bad targets are one clear error line with nothing written.

The pool is a small folder of real PNG files (RGB and grayscale, mixed sizes) whose labels
come from annotations that disagree with the class folders, so a count that matches can only
come from the version, not from the folder names.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import sys
import types
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from curator import versions as V
from curator.exceptions import MissingExtraError, ValidationError
from curator.ingest import ingest_folder
from curator.store import annotations as A
from curator.store import samples as S
from curator.store.session import transaction

from conftest import unavailable


@pytest.fixture
def version(db_settings, tmp_path):
    """(settings, {sample id: label} of version v1, {sample id: path}) over 7 real images, 6 labeled."""
    rng = np.random.default_rng(7)
    shapes = {"cat": [(10, 12, 3), (14, 9, 3), (10, 12, 3)], "dog": [(8, 8), (11, 7), (8, 8)], "owl": [(9, 9, 3)]}
    for cls, dims in shapes.items():
        (tmp_path / "pics" / cls).mkdir(parents=True)
        for i, shape in enumerate(dims):
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(tmp_path / "pics" / cls / f"{i}.png")
    ingest_folder(tmp_path / "pics", dataset="pets", settings=db_settings)
    with transaction(db_settings) as s:
        ds_id, _ = S.find_or_create_dataset(s, "pets")
        ids = [int(i) for i in S.ids(s, ds_id)]
        paths = dict(zip(ids, map(Path, S.uris(s, ids))))
    by_name = {f"{p.parent.name}/{p.name}": sid for sid, p in paths.items()}
    labels = {by_name["cat/0.png"]: "cat", by_name["cat/1.png"]: "dog", by_name["cat/2.png"]: "cat",
              by_name["dog/0.png"]: "dog", by_name["dog/1.png"]: "dog", by_name["owl/0.png"]: "owl"}
    now = dt.datetime(2026, 1, 1)
    with transaction(db_settings) as s:  # dog/2.png stays unlabeled: not in the version
        A.add_annotations(s, "test", [A.NewAnnotation(sid, None, f"t{sid}", lab, False, "me", now, None)
                                      for sid, lab in labels.items()])
    V.create_version("v1", dataset="pets", settings=db_settings)
    return db_settings, labels, paths


def _cli(settings, monkeypatch, capsys, *args):
    from curator.cli import main

    monkeypatch.setenv("CURATOR_DB_URL", settings.database_url)
    monkeypatch.setenv("CURATOR_WORKSPACE", str(settings.workspace))
    with pytest.raises(SystemExit) as ex:
        main(["version", "export", "v1", "-d", "pets", *args])
    cap = capsys.readouterr()
    return ex.value.code, cap.out, cap.err


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


def test_imagefolder_links_and_copies_read_back(version, tmp_path, monkeypatch, capsys):
    settings, labels, paths = version
    code, out, err = _cli(settings, monkeypatch, capsys, "--format", "imagefolder", "--out", str(tmp_path / "links"),
                          "--json")
    assert code == 0, err
    assert json.loads(out)["samples"] == 6
    V.export_imagefolder("v1", tmp_path / "copies", copy=True, dataset="pets", settings=settings)
    for root, linked in ((tmp_path / "links", True), (tmp_path / "copies", False)):
        files = sorted(root.glob("*/*"))
        got = {int(f.stem): f.parent.name for f in files}
        assert got == labels  # the version's labels (cat/1.png sits in dog/), not the folder names
        assert sorted(p.name for p in root.iterdir()) == ["cat", "dog", "owl"]
        for f in files:
            assert f.is_symlink() is linked
            np.testing.assert_array_equal(_pixels(f), _pixels(paths[int(f.stem)]))
    assert not list(tmp_path.glob(".*.tmp"))


def test_csv_and_jsonl_tables_read_back(version, tmp_path, monkeypatch, capsys):
    settings, labels, paths = version
    for fmt in ("csv", "jsonl"):
        code, _, err = _cli(settings, monkeypatch, capsys, "--format", fmt, "--out", str(tmp_path / f"v1.{fmt}"))
        assert code == 0, err
    with open(tmp_path / "v1.csv", newline="") as fh:
        rows_csv = list(csv.DictReader(fh))
    rows_jsonl = [json.loads(line) for line in (tmp_path / "v1.jsonl").read_text().splitlines()]
    assert len(rows_csv) == len(rows_jsonl) == 6
    for rows in (rows_csv, rows_jsonl):
        assert {int(r["sample_id"]): r["label"] for r in rows} == labels
        assert {int(r["sample_id"]): Path(r["path"]) for r in rows} == {i: paths[i] for i in labels}
        classes = {r["label"]: int(r["label_index"]) for r in rows}
        assert sorted(classes.values()) == [0, 1, 2] and len(classes) == 3  # one index per class
        for r in rows:
            h, w = _pixels(Path(r["path"])).shape[:2]
            assert (int(r["height"]), int(r["width"])) == (h, w)
    assert Counter(r["label"] for r in rows_csv) == Counter(labels.values())


def test_hf_dataset_reads_back(version, tmp_path, monkeypatch, capsys):
    try:
        import datasets as hf
    except ImportError:
        hf = None
    if getattr(hf, "load_from_disk", None) is None:
        unavailable("Hugging Face datasets is not installed: pip install 'curator-loop[hf]'")
    settings, labels, paths = version
    code, _, err = _cli(settings, monkeypatch, capsys, "--format", "hf", "--out", str(tmp_path / "hf"))
    assert code == 0, err
    ds = hf.load_from_disk(str(tmp_path / "hf"))
    assert len(ds) == 6 and set(ds.features["label"].names) == {"cat", "dog", "owl"}
    for row in ds:
        sid = row["sample_id"]
        assert ds.features["label"].int2str(row["label"]) == labels[sid]
        np.testing.assert_array_equal(np.asarray(row["image"]), _pixels(paths[sid]))
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_bad_targets_are_one_line_and_write_nothing(version, tmp_path, monkeypatch, capsys):
    settings, labels, paths = version
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    for fmt in ("imagefolder", "hf"):
        code, out, err = _cli(settings, monkeypatch, capsys, "--format", fmt, "--out", str(existing))
        assert code == ValidationError.exit_code and err.count("\n") == 1, err
        assert err.startswith(f"error: output {existing} already exists; give a new folder")
    assert [p.name for p in existing.iterdir()] == ["keep.txt"] and (existing / "keep.txt").read_text() == "mine"
    code, _, err = _cli(settings, monkeypatch, capsys, "--format", "csv", "--out", str(existing))
    assert code == ValidationError.exit_code and "is a folder" in err
    code, _, err = _cli(settings, monkeypatch, capsys, "--format", "imagefolder", "--out", "/proc/self/v1-images")
    assert code == ValidationError.exit_code and err.startswith("error: output /proc/self/v1-images") and "\n" == err[-1]
    code, _, err = _cli(settings, monkeypatch, capsys, "--format", "csv", "--out", str(tmp_path / "v1.csv"), "--copy")
    assert code == ValidationError.exit_code and "--copy: only for --format imagefolder" in err

    # an image gone from disk half-way: a clear error naming it, and no tree, staging folder or parent left
    gone = sorted(labels)[-1]
    paths[gone].rename(tmp_path / "moved.png")
    target = tmp_path / "new" / "deeper" / "tree"
    with pytest.raises(ValidationError, match=f"image file {paths[gone]} of sample {gone} is missing"):
        V.export_imagefolder("v1", target, copy=True, dataset="pets", settings=settings)
    assert not (tmp_path / "new").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_hf_missing_is_a_clear_error(version, tmp_path, monkeypatch, capsys):
    settings, _, _ = version
    # not installed at all, and a checkout's datasets/ data folder seen as a namespace package
    for stand_in in (None, types.ModuleType("datasets")):
        monkeypatch.setitem(sys.modules, "datasets", stand_in)
        code, _, err = _cli(settings, monkeypatch, capsys, "--format", "hf", "--out", str(tmp_path / "hf"))
        assert code == MissingExtraError.exit_code, err
        assert err == "error: datasets (Hugging Face) is not installed; install it with: pip install 'curator-loop[hf]'\n"
        assert not (tmp_path / "hf").exists()


def test_folder_names_never_leave_the_tree():
    from curator.versions.exports import folder_name

    assert [folder_name(x) for x in ("cat", "7", "sea lion", "a-b_c.d")] == ["cat", "7", "sea lion", "a-b_c.d"]
    for odd in ("../up", "a/b", ".", "..", ".hidden", "", "tab\there", "back\\slash"):
        name = folder_name(odd)
        assert "/" not in name and "\\" not in name and not name.startswith(".") and name and name.isprintable()
    assert len({folder_name(x) for x in ("a/b", "a%2Fb", "a_b")}) == 3
