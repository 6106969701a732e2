"""versioned labeled sets: delta/snapshot rows, seals and immutability triggers

Replaces the placeholder ``label_version_items`` (one row per member per
version) by ``label_version_rows`` (changes against the parent, plus full
snapshots now and then) so a version changing k labels adds O(k) rows.
Triggers make versions append-only on SQLite and PostgreSQL alike: UPDATE,
DELETE (and TRUNCATE) are refused, and once a version is sealed no row can
be added to it.

Revision ID: 0002
Revises: 0001
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = "0002"
down_revision: Union[str, None] = "0001"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

IMMUTABLE = ("label_versions", "label_version_rows", "label_version_seals")
MESSAGE = "label versions are immutable: create a new version instead"
SEALED = "label version is sealed: rows cannot be added to an existing version"


def upgrade() -> None:
    op.drop_table("label_version_items")
    with op.batch_alter_table("label_versions") as batch:
        batch.add_column(sa.Column("snapshot", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch.add_column(sa.Column("chain_rows", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("changes", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("filters", sa.JSON(), nullable=True))
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
    op.create_table(
        "label_version_seals",
        sa.Column("version_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.ForeignKeyConstraint(
            ["version_id"], ["label_versions.id"], name=op.f("fk_label_version_seals_version_id_label_versions")
        ),
        sa.PrimaryKeyConstraint("version_id", name=op.f("pk_label_version_seals")),
    )
    if op.get_bind().dialect.name == "postgresql":
        _postgres_triggers()
    else:
        _sqlite_triggers()


def _sqlite_triggers() -> None:
    for table in IMMUTABLE:
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{event.lower()} BEFORE {event} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
            )
    op.execute(
        "CREATE TRIGGER label_version_rows_sealed BEFORE INSERT ON label_version_rows "
        "WHEN EXISTS (SELECT 1 FROM label_version_seals WHERE version_id = NEW.version_id) "
        f"BEGIN SELECT RAISE(ABORT, '{SEALED}'); END"
    )


def _postgres_triggers() -> None:
    op.execute(
        "CREATE FUNCTION curator_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"RAISE EXCEPTION '{MESSAGE} (% on %)', TG_OP, TG_TABLE_NAME USING ERRCODE = 'restrict_violation'; "
        "END $$"
    )
    op.execute(
        "CREATE FUNCTION curator_refuse_sealed_rows() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF EXISTS (SELECT 1 FROM new_rows n JOIN label_version_seals s ON s.version_id = n.version_id) THEN "
        f"RAISE EXCEPTION '{SEALED}' USING ERRCODE = 'restrict_violation'; END IF; RETURN NULL; END $$"
    )
    for table in IMMUTABLE:
        op.execute(
            f"CREATE TRIGGER {table}_immutable BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION curator_refuse_change()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION curator_refuse_change()"
        )
    # Statement level with a transition table: one check per INSERT or COPY, not per row.
    op.execute(
        "CREATE TRIGGER label_version_rows_sealed AFTER INSERT ON label_version_rows "
        "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION curator_refuse_sealed_rows()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in IMMUTABLE:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_immutable ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        op.execute("DROP TRIGGER IF EXISTS label_version_rows_sealed ON label_version_rows")
        op.execute("DROP FUNCTION IF EXISTS curator_refuse_change()")
        op.execute("DROP FUNCTION IF EXISTS curator_refuse_sealed_rows()")
    else:
        for table in IMMUTABLE:
            for event in ("update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{event}")
        op.execute("DROP TRIGGER IF EXISTS label_version_rows_sealed")
    op.drop_table("label_version_seals")
    op.drop_table("label_version_rows")
    with op.batch_alter_table("label_versions") as batch:
        batch.drop_column("filters")
        batch.drop_column("changes")
        batch.drop_column("chain_rows")
        batch.drop_column("snapshot")
    op.create_table(
        "label_version_items",
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("sample_id", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(["sample_id"], ["samples.id"], name=op.f("fk_label_version_items_sample_id_samples")),
        sa.ForeignKeyConstraint(
            ["version_id"], ["label_versions.id"], name=op.f("fk_label_version_items_version_id_label_versions")
        ),
        sa.PrimaryKeyConstraint("version_id", "sample_id", name=op.f("pk_label_version_items")),
    )
