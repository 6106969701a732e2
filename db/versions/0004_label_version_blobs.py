"""label versions stored as compressed array blobs (snapshot chunks and deltas)

Migration 0002 stored one row per changed label. At a million labels the
row-by-row insert, foreign-key checks and read-back dominated the time to
create and read a version (tens of seconds on 2 cores), so this replaces
``label_version_rows`` by ``label_version_blobs``: per version, its changes
against the parent (kind 'delta') and, now and then, its full set (kind
'snapshot'), each as zlib-compressed arrays of sorted sample ids and label
codes into a small vocabulary, in chunks of at most 2^20 entries. The same
append-only triggers guard it on SQLite and PostgreSQL.

Revision ID: 0004
Revises: 0003
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = "0004"
down_revision: Union[str, None] = "0003"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

MESSAGE = "label versions are immutable: create a new version instead"
SEALED = "label version is sealed: rows cannot be added to an existing version"


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        op.execute("DROP TRIGGER IF EXISTS label_version_rows_immutable ON label_version_rows")
        op.execute("DROP TRIGGER IF EXISTS label_version_rows_no_truncate ON label_version_rows")
        op.execute("DROP TRIGGER IF EXISTS label_version_rows_sealed ON label_version_rows")
        op.execute("DROP FUNCTION IF EXISTS curator_refuse_sealed_rows()")
    else:
        for name in ("no_update", "no_delete", "sealed"):
            op.execute(f"DROP TRIGGER IF EXISTS label_version_rows_{name}")
    op.drop_table("label_version_rows")
    op.create_table(
        "label_version_blobs",
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("chunk", sa.Integer(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("sample_ids", sa.LargeBinary(), nullable=False),
        sa.Column("labels", sa.LargeBinary(), nullable=False),
        sa.Column("vocabulary", sa.JSON(), nullable=False),
        sa.CheckConstraint("kind IN ('delta', 'snapshot')", name=op.f("ck_label_version_blobs_kind")),
        sa.CheckConstraint("chunk >= 0 AND count >= 0", name=op.f("ck_label_version_blobs_chunk_count")),
        sa.ForeignKeyConstraint(
            ["version_id"], ["label_versions.id"], name=op.f("fk_label_version_blobs_version_id_label_versions")
        ),
        sa.PrimaryKeyConstraint("version_id", "kind", "chunk", name=op.f("pk_label_version_blobs")),
    )
    if postgres:
        op.execute(
            "CREATE FUNCTION curator_refuse_sealed_blobs() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF EXISTS (SELECT 1 FROM label_version_seals WHERE version_id = NEW.version_id) THEN "
            f"RAISE EXCEPTION '{SEALED}' USING ERRCODE = 'restrict_violation'; END IF; RETURN NEW; END $$"
        )
        op.execute(
            "CREATE TRIGGER label_version_blobs_immutable BEFORE UPDATE OR DELETE ON label_version_blobs "
            "FOR EACH ROW EXECUTE FUNCTION curator_refuse_change()"
        )
        op.execute(
            "CREATE TRIGGER label_version_blobs_no_truncate BEFORE TRUNCATE ON label_version_blobs "
            "FOR EACH STATEMENT EXECUTE FUNCTION curator_refuse_change()"
        )
        op.execute(
            "CREATE TRIGGER label_version_blobs_sealed BEFORE INSERT ON label_version_blobs "
            "FOR EACH ROW EXECUTE FUNCTION curator_refuse_sealed_blobs()"
        )
    else:
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER label_version_blobs_no_{event.lower()} BEFORE {event} ON label_version_blobs "
                f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
            )
        op.execute(
            "CREATE TRIGGER label_version_blobs_sealed BEFORE INSERT ON label_version_blobs "
            "WHEN EXISTS (SELECT 1 FROM label_version_seals WHERE version_id = NEW.version_id) "
            f"BEGIN SELECT RAISE(ABORT, '{SEALED}'); END"
        )


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        for name in ("immutable", "no_truncate", "sealed"):
            op.execute(f"DROP TRIGGER IF EXISTS label_version_blobs_{name} ON label_version_blobs")
        op.execute("DROP FUNCTION IF EXISTS curator_refuse_sealed_blobs()")
    else:
        for name in ("no_update", "no_delete", "sealed"):
            op.execute(f"DROP TRIGGER IF EXISTS label_version_blobs_{name}")
    op.drop_table("label_version_blobs")
    op.create_table(
        "label_version_rows",
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("part", sa.SmallInteger(), nullable=False),
        sa.Column("sample_id", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=True),
        sa.CheckConstraint("part IN (0, 1)", name=op.f("ck_label_version_rows_part")),
        sa.CheckConstraint("part = 0 OR label IS NOT NULL", name=op.f("ck_label_version_rows_snapshot_label")),
        sa.ForeignKeyConstraint(["sample_id"], ["samples.id"], name=op.f("fk_label_version_rows_sample_id_samples")),
        sa.ForeignKeyConstraint(
            ["version_id"], ["label_versions.id"], name=op.f("fk_label_version_rows_version_id_label_versions")
        ),
        sa.PrimaryKeyConstraint("version_id", "part", "sample_id", name=op.f("pk_label_version_rows")),
        sqlite_with_rowid=False,
    )
    if postgres:
        op.execute(
            "CREATE FUNCTION curator_refuse_sealed_rows() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF EXISTS (SELECT 1 FROM new_rows n JOIN label_version_seals s ON s.version_id = n.version_id) THEN "
            f"RAISE EXCEPTION '{SEALED}' USING ERRCODE = 'restrict_violation'; END IF; RETURN NULL; END $$"
        )
        op.execute(
            "CREATE TRIGGER label_version_rows_immutable BEFORE UPDATE OR DELETE ON label_version_rows "
            "FOR EACH ROW EXECUTE FUNCTION curator_refuse_change()"
        )
        op.execute(
            "CREATE TRIGGER label_version_rows_no_truncate BEFORE TRUNCATE ON label_version_rows "
            "FOR EACH STATEMENT EXECUTE FUNCTION curator_refuse_change()"
        )
        op.execute(
            "CREATE TRIGGER label_version_rows_sealed AFTER INSERT ON label_version_rows "
            "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION curator_refuse_sealed_rows()"
        )
    else:
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER label_version_rows_no_{event.lower()} BEFORE {event} ON label_version_rows "
                f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
            )
        op.execute(
            "CREATE TRIGGER label_version_rows_sealed BEFORE INSERT ON label_version_rows "
            "WHEN EXISTS (SELECT 1 FROM label_version_seals WHERE version_id = NEW.version_id) "
            f"BEGIN SELECT RAISE(ABORT, '{SEALED}'); END"
        )
