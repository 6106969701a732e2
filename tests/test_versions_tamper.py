"""Versions cannot be changed unseen (issue 13), on SQLite and PostgreSQL.

Every SQL path that could rename or replace a version is either refused by the
database (the database digest is unchanged afterwards) or, for someone who
first lifts the triggers, detected by ``verify`` through the version's seal;
an edited manifest is refused and stores nothing.
"""

from __future__ import annotations

import json
import sqlite3

import pytest
from sqlalchemy import select, text

from curator import ingest_arrays
from curator import versions as V
from curator.exceptions import ValidationError
from curator.store.schema import Dataset, LabelVersionSeal, Sample
from curator.store.session import get_engine, transaction

from badinput import db_digest
from test_versions import annotate, digits


def postgres(settings) -> bool:
    return settings.database_url.startswith("postgresql")


def on(backend: str, *values, id: str | None = None):
    """A case that exists on one database only: ``db_settings`` is parametrized with that backend
    alone (no skip on the other one)."""
    marks = [pytest.mark.postgres] if backend == "postgres" else []
    return pytest.param(backend, *values, marks=marks, id=id or "-".join([backend, *map(str, values)]))


SQLITE_ONLY = pytest.mark.parametrize("db_settings", [on("sqlite")], indirect=True)


@pytest.fixture
def lines(db_settings):
    """Dataset 'digits' with versions base -> v1 (v1 relabels one sample) and a root 'other'."""
    images, labels = digits(30)
    ingest_arrays(images, labels, dataset="digits", split="test", name="d", settings=db_settings)
    with transaction(db_settings) as s:
        ids = s.scalars(select(Sample.id).order_by(Sample.id)).all()
    gt = [str(x) for x in labels]
    annotate(db_settings, zip(ids[:10], gt[:10]))
    V.create_version("base", settings=db_settings)
    annotate(db_settings, [(ids[0], "x")] * 3)
    V.create_version("v1", settings=db_settings)
    annotate(db_settings, zip(ids[10:20], gt[10:20]))
    V.create_version("other", parent=None, split="test", settings=db_settings)
    return db_settings


def refused_sql(settings, sql: str) -> str:
    """Run ``sql`` on curator's own connection; assert the database refuses it and is unchanged."""
    before = db_digest(settings)
    with pytest.raises(Exception) as err:
        with transaction(settings) as s:
            s.execute(text(sql))
    assert db_digest(settings) == before, f"{sql!r} changed the database"
    return str(err.value)


def all_verify(settings) -> dict[str, bool]:
    return {v.name: V.verify_version(v.name, settings=settings).ok for v in V.list_versions(settings=settings)}


COLUMNS = "id, dataset_id, name, message, parent_id, checksum, size, counts, lineage, created_at, snapshot, chain_rows, changes, filters"

SQLITE_REPLACE = {
    "rename-same-id": f"INSERT OR REPLACE INTO label_versions ({COLUMNS}) SELECT "
                      + COLUMNS.replace("name,", "'renamed',", 1) + " FROM label_versions WHERE name = 'v1'",
    "steal-name": f"REPLACE INTO label_versions ({COLUMNS}) SELECT "
                  + COLUMNS.replace("id,", "100,", 1).replace("name,", "'v1',", 1) + " FROM label_versions WHERE name = 'other'",
    "upsert": f"INSERT INTO label_versions ({COLUMNS}) SELECT "
              + COLUMNS.replace("name,", "'renamed',", 1) + " FROM label_versions WHERE name = 'v1' "
              "ON CONFLICT (id) DO UPDATE SET name = excluded.name",
    "update-or-replace": "UPDATE OR REPLACE label_versions SET name = 'v1' WHERE name = 'other'",
    "seal": "INSERT OR REPLACE INTO label_version_seals (version_id, digest) SELECT version_id, 'f' FROM label_version_seals",
    "blob": "INSERT OR REPLACE INTO label_version_blobs SELECT * FROM label_version_blobs",
    "dataset": "INSERT OR REPLACE INTO datasets (id, name, classes, created_at) SELECT id, 'renamed', classes, created_at FROM datasets",
}

POSTGRES_UPSERT = {
    "rename-same-id": f"INSERT INTO label_versions ({COLUMNS}) SELECT "
                      + COLUMNS.replace("name,", "'renamed',", 1) + " FROM label_versions WHERE name = 'v1' "
                      "ON CONFLICT (id) DO UPDATE SET name = excluded.name",
    "steal-name": f"INSERT INTO label_versions ({COLUMNS}) SELECT "
                  + COLUMNS.replace("id,", "100,", 1).replace("name,", "'V1',", 1) + " FROM label_versions WHERE name = 'other'",
    "upsert-on-name": f"INSERT INTO label_versions ({COLUMNS}) SELECT "
                      + COLUMNS.replace("id,", "100,", 1).replace("name,", "'v1',", 1) + " FROM label_versions WHERE name = 'other' "
                      "ON CONFLICT (dataset_id, name) DO UPDATE SET checksum = excluded.checksum",
    "seal": "INSERT INTO label_version_seals (version_id, digest) SELECT version_id, 'f' FROM label_version_seals "
            "ON CONFLICT (version_id) DO UPDATE SET digest = excluded.digest",
    "blob": "INSERT INTO label_version_blobs SELECT * FROM label_version_blobs "
            "ON CONFLICT (version_id, kind, chunk) DO UPDATE SET labels = excluded.labels",
    "dataset": "INSERT INTO datasets (id, name, classes, created_at) SELECT id, 'renamed', classes, created_at FROM datasets "
               "ON CONFLICT (id) DO UPDATE SET name = excluded.name",
}


@pytest.mark.parametrize("db_settings, case",
                         [on("sqlite", c) for c in sorted(SQLITE_REPLACE)]
                         + [on("postgres", c) for c in sorted(POSTGRES_UPSERT)], indirect=["db_settings"])
def test_replace_and_upsert_are_refused(lines, case):
    settings = lines
    statements = POSTGRES_UPSERT if postgres(settings) else SQLITE_REPLACE
    message = refused_sql(settings, statements[case])
    assert "immutable" in message or "versions" in message, message
    assert all_verify(settings) == {"base": True, "v1": True, "other": True}


@SQLITE_ONLY
def test_replace_is_refused_from_a_plain_sqlite_connection(lines):
    """A script with Python's sqlite3 (no recursive_triggers, no foreign keys) hits the insert triggers."""
    settings = lines
    before = db_digest(settings)
    conn = sqlite3.connect(settings.database_url.split("///", 1)[1])
    try:
        assert conn.execute("PRAGMA recursive_triggers").fetchone() == (0,)
        for case, sql in SQLITE_REPLACE.items():
            with pytest.raises(sqlite3.DatabaseError, match="immutable|versions"):
                conn.execute(sql)
            conn.rollback()
        with pytest.raises(sqlite3.DatabaseError, match="immutable"):  # even a harmless-looking OR IGNORE
            conn.execute("INSERT OR IGNORE INTO label_version_seals SELECT * FROM label_version_seals")
        conn.commit()
    finally:
        conn.close()
    assert db_digest(settings) == before


RENAMES = {
    "update-name": "UPDATE label_versions SET name = 'renamed' WHERE name = 'v1'",
    "update-name-case": "UPDATE label_versions SET name = 'V1' WHERE name = 'v1'",
    "swap-names": "UPDATE label_versions SET name = CASE name WHEN 'v1' THEN 'other' ELSE 'v1' END "
                  "WHERE name IN ('v1', 'other')",
    "rename-dataset": "UPDATE datasets SET name = 'renamed'",
    "delete-dataset": "DELETE FROM datasets",
    "delete-seal": "DELETE FROM label_version_seals WHERE version_id = (SELECT id FROM label_versions WHERE name = 'v1')",
    "update-seal": "UPDATE label_version_seals SET digest = NULL",
    "delete-blob": "DELETE FROM label_version_blobs WHERE kind = 'delta'",
    "insert-seal-for-new": "INSERT INTO label_version_seals (version_id, digest) VALUES (999, NULL)",
}
POSTGRES_ONLY = {
    "truncate-datasets": "TRUNCATE datasets CASCADE",
    "truncate-versions": "TRUNCATE label_versions CASCADE",
    "truncate-seals": "TRUNCATE label_version_seals",
}


@pytest.mark.parametrize("db_settings, case",
                         [on(b, c) for b in ("sqlite", "postgres") for c in sorted(RENAMES)]
                         + [on("postgres", c) for c in sorted(POSTGRES_ONLY)], indirect=["db_settings"])
def test_renaming_or_rewriting_by_sql_is_refused(lines, case):
    settings = lines
    refused_sql(settings, {**RENAMES, **POSTGRES_ONLY}[case])
    assert all_verify(settings) == {"base": True, "v1": True, "other": True}
    # the lock curator itself takes (a no-op UPDATE of the dataset's name) still works
    with transaction(settings) as s:
        s.execute(text("UPDATE datasets SET name = name"))


def lift_triggers(settings) -> None:
    """What an administrator could do: drop (SQLite) or disable (PostgreSQL) every user trigger."""
    tables = ("datasets", "label_versions", "label_version_blobs", "label_version_seals")
    with transaction(settings) as s:
        if postgres(settings):
            for table in tables:
                s.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
        else:
            names = s.scalars(text("SELECT name FROM sqlite_master WHERE type = 'trigger'")).all()
            for name in names:
                s.execute(text(f"DROP TRIGGER {name}"))


def delete_version(s, name: str) -> None:
    vid = f"(SELECT id FROM label_versions WHERE name = '{name}')"
    for table in ("label_version_blobs", "label_version_seals"):
        s.execute(text(f"DELETE FROM {table} WHERE version_id = {vid}"))
    s.execute(text(f"DELETE FROM label_versions WHERE name = '{name}'"))


BEHIND_THE_TRIGGERS = {
    # case: (statements, the version that must fail verify, versions that must still pass)
    "rename": (["UPDATE label_versions SET name = 'renamed' WHERE name = 'v1'"], "renamed", ["base", "other"]),
    "rename-dataset": (["UPDATE datasets SET name = 'renamed'"], "v1", []),
    "rename-parent": (["UPDATE label_versions SET name = 'old' WHERE name = 'base'"], "v1", ["other"]),
    "new-message": (["UPDATE label_versions SET message = 'approved' WHERE name = 'other'"], "other", ["base", "v1"]),
    "reparent": ([f"UPDATE label_versions SET parent_id = NULL, snapshot = {'true'} WHERE name = 'v1'"], "v1", ["base", "other"]),
    "replace-by-another": ([delete_version, "UPDATE label_versions SET name = 'v1' WHERE name = 'other'"], "v1", ["base"]),
    "checksum-and-counts": (["UPDATE label_versions SET checksum = (SELECT checksum FROM label_versions WHERE name = 'base'), "
                             "counts = (SELECT counts FROM label_versions WHERE name = 'base') WHERE name = 'v1'"], "v1", ["base"]),
}


@pytest.mark.parametrize("case", sorted(BEHIND_THE_TRIGGERS))
def test_verify_detects_changes_made_behind_the_triggers(lines, case):
    settings = lines
    statements, broken, intact = BEHIND_THE_TRIGGERS[case]
    lift_triggers(settings)
    with transaction(settings) as s:
        for sql in statements:
            sql(s, "v1") if callable(sql) else s.execute(text(sql))
    report = V.verify_version(broken, settings=settings)
    assert not report.ok and any("does not match its seal" in p for p in report.problems), report.problems
    for name in intact:
        assert V.verify_version(name, settings=settings).ok, name


@SQLITE_ONLY
def test_replace_on_sqlite_behind_the_triggers_is_detected(lines):
    """REPLACE with the insert triggers gone and recursive_triggers off: the seal still tells."""
    settings = lines
    lift_triggers(settings)
    conn = sqlite3.connect(settings.database_url.split("///", 1)[1])
    try:
        conn.execute(SQLITE_REPLACE["rename-same-id"])
        conn.commit()
    finally:
        conn.close()
    report = V.verify_version("renamed", settings=settings)
    assert not report.ok and "does not match its seal" in " ".join(report.problems)


def test_migration_seals_versions_made_before_it(lines):
    """Migration 0006 seals existing versions with the digest curator would have written."""
    from alembic import command
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from curator.store.session import MIGRATIONS_DIR

    settings = lines
    with transaction(settings) as s:
        sealed = dict(s.execute(select(LabelVersionSeal.version_id, LabelVersionSeal.digest)).all())
    assert len(sealed) == 3 and all(len(d) == 64 for d in sealed.values())
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    before = ScriptDirectory.from_config(cfg).get_revision("0006").down_revision
    engine = get_engine(settings.database_url)
    for target, step in ((before, command.downgrade), ("head", command.upgrade)):
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            step(cfg, target)
        if target == before:
            with engine.connect() as conn:
                assert "digest" not in [c for c in conn.execute(text("SELECT * FROM label_version_seals")).keys()]
    with transaction(settings) as s:
        assert dict(s.execute(select(LabelVersionSeal.version_id, LabelVersionSeal.digest)).all()) == sealed
    assert all_verify(settings) == {"base": True, "v1": True, "other": True}
    refused_sql(settings, SQLITE_REPLACE["seal"] if not postgres(settings) else POSTGRES_UPSERT["seal"])


# --------------------------------------------------------------------------- manifests


def _edit(doc: dict, case: str) -> dict:
    doc = json.loads(json.dumps(doc))
    item = doc["items"][0]
    flipped = "7" if item["label"] != "7" else "1"
    if case == "label":
        item["label"] = flipped
    elif case == "label-and-no-checksum":
        item["label"] = flipped
        del doc["checksum"]
    elif case == "no-checksum":
        del doc["checksum"]
    elif case == "no-seal":
        del doc["seal"]
    elif case == "wrong-checksum":
        doc["checksum"] = "0" * 64
    elif case == "label-and-checksum-recomputed":
        item["label"] = flipped
        doc["checksum"] = V.checksum_of((i["sha256"], i["label"]) for i in doc["items"])
    elif case in ("version", "dataset", "parent", "message"):
        doc[case] = "edited"
    elif case == "counts":
        doc["counts"] = {k: n + 1 for k, n in doc["counts"].items()}
    elif case == "uri":
        item["uri"] = doc["items"][1]["uri"] + "#"
    return doc


MANIFEST_EDITS = ["label", "label-and-no-checksum", "no-checksum", "no-seal", "wrong-checksum",
                  "label-and-checksum-recomputed", "version", "dataset", "parent", "message", "counts", "uri"]


@pytest.mark.parametrize("case", MANIFEST_EDITS)
def test_an_edited_manifest_is_refused_and_stores_nothing(lines, tmp_path, case):
    settings = lines
    doc = V.export_manifest("v1", tmp_path / "v1.json", settings=settings)
    assert V.manifest_seal(doc) == doc["seal"]
    (tmp_path / "edited.json").write_text(json.dumps(_edit(doc, case)))
    before = db_digest(settings)
    with pytest.raises(ValidationError, match="cannot be verified|changed since it was exported"):
        V.import_manifest(tmp_path / "edited.json", name="copy", dataset="fresh", settings=settings)
    assert db_digest(settings) == before


def test_allow_unverified_imports_an_edited_manifest_and_says_so(lines, tmp_path):
    settings = lines
    doc = _edit(V.export_manifest("v1", settings=settings), "label-and-no-checksum")
    (tmp_path / "edited.json").write_text(json.dumps(doc))
    made = V.import_manifest(tmp_path / "edited.json", name="copy", allow_unverified=True, settings=settings)
    assert made.filters["source"].endswith("(unverified)")
    assert V.read_version("copy", settings=settings).as_dict() != V.read_version("v1", settings=settings).as_dict()
    assert V.verify_version("copy", settings=settings).ok


def test_a_refused_import_leaves_no_samples_and_no_dataset(lines, tmp_path):
    """The failure comes after the samples were written (the name exists): one transaction rolls all back."""
    settings = lines
    V.export_manifest("v1", tmp_path / "v1.json", settings=settings)
    images, labels = digits(40)
    ingest_arrays(images[30:], labels[30:], dataset="second", name="s", settings=settings)
    with transaction(settings) as s:
        ids = s.scalars(select(Sample.id).join(Dataset, Dataset.id == Sample.dataset_id)
                        .where(Dataset.name == "second")).all()
    annotate(settings, [(i, "3") for i in ids])
    V.create_version("v1", dataset="second", settings=settings)
    before = db_digest(settings)
    with pytest.raises(ValidationError, match="'v1' already exists"):
        V.import_manifest(tmp_path / "v1.json", dataset="second", settings=settings)
    assert db_digest(settings) == before
    # and a good import into a new dataset writes samples, dataset and version together
    made = V.import_manifest(tmp_path / "v1.json", dataset="third", settings=settings)
    assert made.dataset == "third" and V.verify_version("v1", dataset="third", settings=settings).ok
