"""label versions: seals over identity, no REPLACE or upsert over a version, no dataset rename

Migrations 0002 and 0004 refuse UPDATE and DELETE on the version tables, but
SQLite's ``INSERT OR REPLACE`` deletes the row it replaces without firing
delete triggers (unless ``PRAGMA recursive_triggers`` is on), so a version
could be renamed or silently replaced. This migration closes that at the
database and makes it detectable afterwards:

- BEFORE INSERT triggers refuse a version whose id or name (case-insensitive)
  exists in its dataset, a seal for a version already sealed, and a blob
  whose (version, kind, chunk) exists: so REPLACE fails on SQLite even from
  a connection without ``recursive_triggers`` (curator's own connections set
  it too, see ``store.session``); on PostgreSQL an ``INSERT ... ON CONFLICT DO
  UPDATE`` is already refused by the UPDATE triggers of 0002/0004;
- a dataset that has versions can be neither renamed, deleted nor replaced
  (its name is part of each version's identity); the no-op ``UPDATE datasets SET name =
  name`` that ``curator.versions`` takes as a lock is still allowed;
- ``label_version_seals.digest``: a sha256 over each version's identity and
  content checksum (``curator.versions.seal_digest``), which ``curator version
  verify`` recomputes. Existing versions are sealed here as they are now.

Revision ID: 0006
Revises: 0005
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = "0006"
down_revision: Union[str, None] = "0005"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

EXISTS = "label versions are immutable: this version, seal or blob exists already; create a new version instead"
DATASET = "dataset has label versions: it cannot be renamed or deleted (its name is part of their seals)"

#: table -> the SQL condition (on NEW) of an existing row that an INSERT would replace.
DUPLICATE = {
    "label_versions": (
        "EXISTS (SELECT 1 FROM label_versions v WHERE v.id = NEW.id "
        "OR (v.dataset_id = NEW.dataset_id AND lower(v.name) = lower(NEW.name)))"
    ),
    "label_version_seals": "EXISTS (SELECT 1 FROM label_version_seals v WHERE v.version_id = NEW.version_id)",
    "label_version_blobs": (
        "EXISTS (SELECT 1 FROM label_version_blobs v WHERE v.version_id = NEW.version_id "
        "AND v.kind = NEW.kind AND v.chunk = NEW.chunk)"
    ),
}
HAS_VERSIONS = "EXISTS (SELECT 1 FROM label_versions v WHERE v.dataset_id = OLD.id)"


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.add_column("label_version_seals", sa.Column("digest", sa.String(length=64), nullable=True))
    _backfill(postgres)
    if postgres:
        _postgres_triggers()
    else:
        _sqlite_triggers()


def _backfill(postgres: bool) -> None:
    """Seal the versions that exist (the seals' UPDATE trigger is lifted for this step only)."""
    from curator.versions import seal_existing

    if postgres:
        op.execute("ALTER TABLE label_version_seals DISABLE TRIGGER label_version_seals_immutable")
        seal_existing(op.get_bind())
        op.execute("ALTER TABLE label_version_seals ENABLE TRIGGER label_version_seals_immutable")
    else:
        op.execute("DROP TRIGGER IF EXISTS label_version_seals_no_update")
        seal_existing(op.get_bind())
        op.execute(
            "CREATE TRIGGER label_version_seals_no_update BEFORE UPDATE ON label_version_seals "
            "BEGIN SELECT RAISE(ABORT, 'label versions are immutable: create a new version instead'); END"
        )


def _sqlite_triggers() -> None:
    for table, exists in DUPLICATE.items():
        op.execute(
            f"CREATE TRIGGER {table}_no_replace BEFORE INSERT ON {table} WHEN {exists} "
            f"BEGIN SELECT RAISE(ABORT, '{EXISTS}'); END"
        )
    op.execute(
        "CREATE TRIGGER datasets_versions_no_rename BEFORE UPDATE OF name ON datasets "
        f"WHEN NEW.name IS NOT OLD.name AND {HAS_VERSIONS} BEGIN SELECT RAISE(ABORT, '{DATASET}'); END"
    )
    op.execute(
        f"CREATE TRIGGER datasets_versions_no_delete BEFORE DELETE ON datasets WHEN {HAS_VERSIONS} "
        f"BEGIN SELECT RAISE(ABORT, '{DATASET}'); END"
    )
    # REPLACE INTO datasets from a connection without recursive_triggers deletes without the trigger above
    op.execute(
        "CREATE TRIGGER datasets_versions_no_replace BEFORE INSERT ON datasets WHEN EXISTS (SELECT 1 FROM datasets d "
        "JOIN label_versions v ON v.dataset_id = d.id WHERE d.id = NEW.id OR d.name = NEW.name) "
        f"BEGIN SELECT RAISE(ABORT, '{DATASET}'); END"
    )


def _postgres_triggers() -> None:
    for table, exists in DUPLICATE.items():  # one function per table: NEW has that table's columns
        op.execute(
            f"CREATE FUNCTION curator_refuse_existing_{table}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF {exists} THEN RAISE EXCEPTION '{EXISTS}' USING ERRCODE = 'restrict_violation'; END IF; "
            "RETURN NEW; END $$"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_replace BEFORE INSERT ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION curator_refuse_existing_{table}()"
        )
    op.execute(
        "CREATE FUNCTION curator_refuse_versioned_dataset() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF TG_OP = 'UPDATE' THEN IF NEW.name IS NOT DISTINCT FROM OLD.name THEN RETURN NEW; END IF; END IF; "
        f"IF {HAS_VERSIONS} THEN RAISE EXCEPTION '{DATASET}' USING ERRCODE = 'restrict_violation'; END IF; "
        "IF TG_OP = 'DELETE' THEN RETURN OLD; END IF; RETURN NEW; END $$"
    )
    op.execute(
        "CREATE TRIGGER datasets_versions_fixed BEFORE UPDATE OR DELETE ON datasets "
        "FOR EACH ROW EXECUTE FUNCTION curator_refuse_versioned_dataset()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in DUPLICATE:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_replace ON {table}")
        op.execute("DROP TRIGGER IF EXISTS datasets_versions_fixed ON datasets")
        for table in DUPLICATE:
            op.execute(f"DROP FUNCTION IF EXISTS curator_refuse_existing_{table}()")
        op.execute("DROP FUNCTION IF EXISTS curator_refuse_versioned_dataset()")
    else:
        for table in DUPLICATE:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_replace")
        op.execute("DROP TRIGGER IF EXISTS datasets_versions_no_rename")
        op.execute("DROP TRIGGER IF EXISTS datasets_versions_no_delete")
        op.execute("DROP TRIGGER IF EXISTS datasets_versions_no_replace")
    op.drop_column("label_version_seals", "digest")
