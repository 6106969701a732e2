"""Bad-input corpus for `curator version ...` (issue 13): every case is refused with one
`error:` line, a non-zero exit, the database unchanged and nothing written outside the
workspace (``badinput.refused``), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from curator import ingest_arrays
from curator import versions as V
from curator.store.schema import Dataset, Sample
from curator.store.session import transaction

from badinput import refused, run, sandbox  # noqa: F401 - sandbox is a fixture
from test_versions import annotate, digits


@pytest.fixture
def box(sandbox):  # noqa: F811
    """The sandbox with dataset 'digits' (12 labeled digits), version 'v1', its manifest
    'good.json' beside the workspace, and dataset 'second' holding its own version 'v1'."""
    settings = sandbox.settings
    images, labels = digits(20)
    ingest_arrays(images[:12], labels[:12], dataset="digits", name="d", settings=settings)
    ingest_arrays(images[12:], labels[12:], dataset="second", name="s", settings=settings)
    with transaction(settings) as s:
        rows = s.execute(select(Sample.id, Dataset.name).join(Dataset, Dataset.id == Sample.dataset_id)
                         .order_by(Sample.id)).all()
    annotate(settings, [(sid, "1" if ds == "digits" else "2") for sid, ds in rows])
    V.create_version("v1", dataset="digits", settings=settings)
    V.create_version("v1", dataset="second", settings=settings)
    doc = V.export_manifest("v1", sandbox.path("good.json"), dataset="digits", settings=settings)
    return sandbox, doc


def write(box_, name: str, content) -> Path:
    sandbox, _ = box_
    path = sandbox.path(name)
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    return path


def edited(doc: dict, **changes) -> dict:
    out = json.loads(json.dumps(doc))
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def _item_edit(doc: dict, **changes) -> dict:
    out = json.loads(json.dumps(doc))
    out["items"][0].update(changes)
    return out


def _prepare(box_, case: str) -> list:
    """argv of a case (files it needs are written first, beside the workspace)."""
    sandbox, doc = box_
    p = sandbox.path
    good = str(p("good.json"))
    (p("a-folder")).mkdir(exist_ok=True)
    (p("plain-file")).write_text("not a folder")
    cases = {
        # names
        "create-name-with-slash": ["version", "create", "a/b", "-d", "digits"],
        "create-name-dotdot": ["version", "create", "..", "-d", "digits"],
        "create-name-newline": ["version", "create", "v\n2", "-d", "digits"],
        "create-name-empty": ["version", "create", "", "-d", "digits"],
        "create-name-reserved-at": ["version", "create", "@latest", "-d", "digits"],
        "create-name-exists-other-case": ["version", "create", "V1", "-d", "digits"],
        "create-unknown-dataset": ["version", "create", "v2", "-d", "nope"],
        "create-dataset-name-escapes": ["version", "create", "v2", "-d", "../x"],
        "create-unknown-parent": ["version", "create", "v2", "-d", "digits", "--parent", "ghost"],
        "create-root-and-parent": ["version", "create", "v2", "-d", "digits", "--root", "--parent", "v1"],
        "create-unknown-round": ["version", "create", "v2", "-d", "digits", "--round", "7"],
        # lookups
        "show-unknown-version": ["version", "show", "ghost", "-d", "digits"],
        "diff-unknown-version": ["version", "diff", "v1", "ghost", "-d", "digits"],
        "verify-unknown-version": ["version", "verify", "ghost", "-d", "digits"],
        "list-no-dataset-chosen": ["version", "list"],
        # exports
        "export-out-existing-folder": ["version", "export", "v1", "-d", "digits", "--format", "manifest", "--out", p("a-folder")],
        "export-numpy-out-existing-folder": ["version", "export", "v1", "-d", "digits", "--format", "numpy", "--out", p("a-folder")],
        "export-torch-out-under-a-file": ["version", "export", "v1", "-d", "digits", "--format", "torch", "--out", p("plain-file") / "v.pt"],
        "export-out-unwritable-place": ["version", "export", "v1", "-d", "digits", "--format", "numpy", "--out", "/proc/self/v1.npz"],
        "export-manifest-unwritable-place": ["version", "export", "v1", "-d", "digits", "--format", "manifest", "--out", "/proc/self/v1.json"],
        "export-bad-format": ["version", "export", "v1", "-d", "digits", "--format", "zip", "--out", p("v1.zip")],
        "export-no-format": ["version", "export", "v1", "-d", "digits", "--out", p("v1.npz")],
        "export-no-out": ["version", "export", "v1", "-d", "digits", "--format", "numpy"],
        "export-unknown-version": ["version", "export", "ghost", "-d", "digits", "--format", "manifest", "--out", p("g.json")],
        # imports
        "import-missing-file": ["version", "import", p("missing.json")],
        "import-a-folder": ["version", "import", p("a-folder")],
        "import-not-json": ["version", "import", write(box_, "not.json", b"\x89PNG\r\n\x1a\n garbage")],
        "import-truncated": ["version", "import", write(box_, "cut.json", Path(good).read_bytes()[:300])],
        "import-empty-file": ["version", "import", write(box_, "empty.json", b"")],
        "import-not-a-manifest": ["version", "import", write(box_, "list.json", [1, 2, 3])],
        "import-no-checksum": ["version", "import", write(box_, "nock.json", edited(doc, checksum=None)), "--name", "x"],
        "import-no-checksum-label-edited": ["version", "import", write(
            box_, "nock2.json", edited(_item_edit(doc, label="9"), checksum=None)), "--name", "x"],
        "import-wrong-checksum": ["version", "import", write(box_, "wrong.json", edited(doc, checksum="ab" * 32)), "--name", "x"],
        "import-edited-version-field": ["version", "import", write(box_, "ident.json", edited(doc, version="v9"))],
        "import-items-not-a-list": ["version", "import", write(box_, "shape1.json", edited(doc, items={"a": 1}))],
        "import-item-without-label": ["version", "import", write(
            box_, "shape2.json", edited(doc, items=[{"uri": "x", "sha256": "0" * 64}])), "--allow-unverified"],
        "import-sha-not-hex": ["version", "import", write(
            box_, "shape3.json", _item_edit(doc, sha256="z" * 64)), "--allow-unverified", "--name", "x"],
        "import-checksum-not-a-string": ["version", "import", write(box_, "shape4.json", edited(doc, checksum=5))],
        "import-no-items": ["version", "import", write(box_, "noitems.json", edited(doc, items=[])), "--allow-unverified"],
        "import-repeated-uri": ["version", "import", write(box_, "repeat.json", edited(
            doc, items=[doc["items"][0], doc["items"][0]])), "--allow-unverified", "--name", "x"],
        "import-unknown-samples": ["version", "import", write(box_, "unknown.json", _item_edit(
            doc, uri=str(p("nowhere.png")))), "--allow-unverified", "--name", "x"],
        "import-name-exists-after-writing-samples": ["version", "import", good, "-d", "second"],
        "import-bad-name": ["version", "import", good, "--name", "a/../b"],
        "import-bad-dataset-name": ["version", "import", good, "-d", "/abs/path", "--name", "x"],
    }
    return cases[case]


CASES = [
    "create-name-with-slash", "create-name-dotdot", "create-name-newline", "create-name-empty",
    "create-name-reserved-at", "create-name-exists-other-case", "create-unknown-dataset",
    "create-dataset-name-escapes", "create-unknown-parent", "create-root-and-parent", "create-unknown-round",
    "show-unknown-version", "diff-unknown-version", "verify-unknown-version", "list-no-dataset-chosen",
    "export-out-existing-folder", "export-numpy-out-existing-folder", "export-torch-out-under-a-file",
    "export-out-unwritable-place", "export-manifest-unwritable-place", "export-bad-format", "export-no-format",
    "export-no-out", "export-unknown-version",
    "import-missing-file", "import-a-folder", "import-not-json", "import-truncated", "import-empty-file",
    "import-not-a-manifest", "import-no-checksum", "import-no-checksum-label-edited", "import-wrong-checksum",
    "import-edited-version-field", "import-items-not-a-list", "import-item-without-label", "import-sha-not-hex",
    "import-checksum-not-a-string", "import-no-items", "import-repeated-uri", "import-unknown-samples",
    "import-name-exists-after-writing-samples", "import-bad-name", "import-bad-dataset-name",
]

#: What the one error line must mention.
MATCH = {
    "create-name-with-slash": "version name", "create-name-dotdot": "version name",
    "create-name-newline": "version name", "create-name-empty": "version name is empty",
    "create-name-reserved-at": "version name", "create-name-exists-other-case": "already exists",
    "create-unknown-dataset": "dataset 'nope' does not exist", "create-dataset-name-escapes": "dataset",
    "create-unknown-parent": "'ghost' does not exist", "create-root-and-parent": "--root and --parent",
    "create-unknown-round": "rounds [7]", "show-unknown-version": "'ghost' does not exist",
    "diff-unknown-version": "'ghost' does not exist", "verify-unknown-version": "'ghost' does not exist",
    "list-no-dataset-chosen": "--dataset", "export-out-existing-folder": "is a folder",
    "export-numpy-out-existing-folder": "is a folder", "export-torch-out-under-a-file": "not a folder",
    "export-out-unwritable-place": "not writable", "export-manifest-unwritable-place": "not writable",
    "export-bad-format": "--format 'zip'", "export-no-format": "--format: required", "export-no-out": "--out",
    "export-unknown-version": "'ghost' does not exist", "import-missing-file": "does not exist",
    "import-a-folder": "is a folder", "import-not-json": "not readable json", "import-truncated": "not readable json",
    "import-empty-file": "not readable json", "import-not-a-manifest": "not a curator version manifest",
    "import-no-checksum": "--allow-unverified", "import-no-checksum-label-edited": "no checksum",
    "import-wrong-checksum": "changed since it was exported", "import-edited-version-field": "seal",
    "import-items-not-a-list": "not a curator version manifest", "import-item-without-label": "item 0",
    "import-sha-not-hex": "64 hex", "import-checksum-not-a-string": "'checksum' must be a string",
    "import-no-items": "no items", "import-repeated-uri": "repeated uri", "import-unknown-samples": "neither in dataset",
    "import-name-exists-after-writing-samples": "already exists", "import-bad-name": "version name",
    "import-bad-dataset-name": "dataset name",
}


@pytest.mark.parametrize("case", CASES)
def test_version_command_refuses_bad_input(box, case):
    sandbox, _ = box
    argv = _prepare(box, case)
    refused(sandbox, argv, match=MATCH[case])
    assert not list(sandbox.root.glob("**/*.tmp")), "a temporary file was left behind"


def test_the_good_manifest_still_imports(box):
    """The corpus' manifest is valid: the import cases fail for their edit, not for the fixture."""
    sandbox, _ = box
    code, out, err = run(["version", "import", sandbox.path("good.json"), "--name", "again", "-d", "digits"])
    assert code == 0 and "matches the manifest" in out, err


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), RuntimeError("writer crashed")])
def test_a_failed_export_write_leaves_no_file_and_no_folder(tmp_path, error):
    """The atomic writer itself: whatever fails mid-write, no partial, temporary or folder is left."""
    from curator.exceptions import ValidationError

    target = tmp_path / "new" / "deeper" / "v1.npz"

    def writer(fh):
        fh.write(b"partial")
        raise error

    with pytest.raises(ValidationError if isinstance(error, OSError) else RuntimeError, match="No space|crashed"):
        V._write_atomic(target, writer)
    assert list(tmp_path.iterdir()) == []
    V._write_atomic(target, lambda fh: fh.write(b"whole"))
    assert target.read_bytes() == b"whole" and [p.name for p in target.parent.iterdir()] == ["v1.npz"]
