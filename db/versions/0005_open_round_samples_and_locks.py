"""open_round_samples: a sample is in at most one open round; curator_locks: named locks on SQLite

Four ``curator select`` at once used to put the same samples in several open
rounds: the pool was read in one transaction and the round written in
another, and nothing in the database said no. ``open_round_samples`` holds
one row per sample of a round whose status is open (pending, selected,
pushed); its primary key is the sample id, so a second open round cannot
take the same sample whoever writes it (curator select, the loop, a script).
Triggers keep it in step with ``round_items`` and ``rounds.status``, so no
Python code has to remember it:

- an item added to an open round adds its row (a sample already in another
  open round is refused with a message that says so);
- a round whose status leaves the open set frees its samples (a sample that
  an older, overlapping round still holds passes to that round);
- a round reopened takes its samples back, or is refused if another open
  round holds one; deleted items and rounds take their rows with them.

Existing open rounds are back-filled (where old rounds overlap, the oldest
open round holds the sample).

``curator_locks`` is a lock row per name for SQLite, which has no advisory
locks (PostgreSQL uses ``pg_try_advisory_xact_lock``): see curator/store/locks.py.

Revision ID: 0005
Revises: 0004
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = "0005"
down_revision: Union[str, None] = "0004"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

OPEN = "('pending', 'selected', 'pushed')"
TAKEN = "a sample can be in only one open round: it is already selected in another round that is not finished"

#: Samples of round NEW.id that no open round holds any more, given to the oldest open round that has them.
HANDOVER = (
    "INSERT INTO open_round_samples (sample_id, round_id) "
    "SELECT ri.sample_id, MIN(ri.round_id) FROM round_items ri JOIN rounds r ON r.id = ri.round_id "
    f"WHERE r.status IN {OPEN} AND ri.sample_id IN (SELECT sample_id FROM round_items WHERE round_id = NEW.id) "
    "AND NOT EXISTS (SELECT 1 FROM open_round_samples o WHERE o.sample_id = ri.sample_id) "
    "GROUP BY ri.sample_id"
)


def upgrade() -> None:
    op.create_table(
        "open_round_samples",
        sa.Column("sample_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("round_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["sample_id"], ["samples.id"], name=op.f("fk_open_round_samples_sample_id_samples")),
        sa.ForeignKeyConstraint(
            ["round_id"], ["rounds.id"], name=op.f("fk_open_round_samples_round_id_rounds"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("sample_id", name=op.f("pk_open_round_samples")),
    )
    op.create_index(op.f("ix_open_round_samples_round_id"), "open_round_samples", ["round_id"])
    op.create_table(
        "curator_locks",
        sa.Column("name", sa.String(length=300), nullable=False),
        sa.Column("holder", sa.String(length=300), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_curator_locks")),
    )
    op.execute(
        "INSERT INTO open_round_samples (sample_id, round_id) "
        "SELECT ri.sample_id, MIN(ri.round_id) FROM round_items ri JOIN rounds r ON r.id = ri.round_id "
        f"WHERE r.status IN {OPEN} GROUP BY ri.sample_id"
    )
    if op.get_bind().dialect.name == "postgresql":
        _postgres_triggers()
    else:
        _sqlite_triggers()


def _sqlite_triggers() -> None:
    # BEFORE + RAISE: a clear message, and no conflict clause of the outer statement can bypass it.
    op.execute(
        "CREATE TRIGGER round_items_one_open_round BEFORE INSERT ON round_items "
        f"WHEN (SELECT status FROM rounds WHERE id = NEW.round_id) IN {OPEN} AND EXISTS "
        "(SELECT 1 FROM open_round_samples WHERE sample_id = NEW.sample_id AND round_id <> NEW.round_id) "
        f"BEGIN SELECT RAISE(ABORT, '{TAKEN}'); END"
    )
    op.execute(
        "CREATE TRIGGER round_items_open_insert AFTER INSERT ON round_items "
        f"WHEN (SELECT status FROM rounds WHERE id = NEW.round_id) IN {OPEN} "
        "BEGIN INSERT INTO open_round_samples (sample_id, round_id) SELECT NEW.sample_id, NEW.round_id "
        "WHERE NOT EXISTS (SELECT 1 FROM open_round_samples WHERE sample_id = NEW.sample_id); END"
    )
    op.execute(
        "CREATE TRIGGER round_items_open_delete AFTER DELETE ON round_items "
        "BEGIN DELETE FROM open_round_samples WHERE sample_id = OLD.sample_id AND round_id = OLD.round_id; END"
    )
    op.execute(
        "CREATE TRIGGER rounds_open_close AFTER UPDATE OF status ON rounds "
        f"WHEN OLD.status IN {OPEN} AND NEW.status NOT IN {OPEN} "
        f"BEGIN DELETE FROM open_round_samples WHERE round_id = NEW.id; {HANDOVER}; END"
    )
    op.execute(
        "CREATE TRIGGER rounds_open_reopen AFTER UPDATE OF status ON rounds "
        f"WHEN OLD.status NOT IN {OPEN} AND NEW.status IN {OPEN} "
        "BEGIN INSERT INTO open_round_samples (sample_id, round_id) "
        "SELECT sample_id, round_id FROM round_items WHERE round_id = NEW.id; END"
    )


def _postgres_triggers() -> None:
    taken = f"RAISE EXCEPTION '{TAKEN} (%)', SQLERRM USING ERRCODE = 'unique_violation';"
    op.execute(
        "CREATE FUNCTION curator_open_round_items() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "INSERT INTO open_round_samples (sample_id, round_id) SELECT n.sample_id, n.round_id "
        f"FROM new_items n JOIN rounds r ON r.id = n.round_id WHERE r.status IN {OPEN}; RETURN NULL; "
        f"EXCEPTION WHEN unique_violation THEN {taken} END $$"
    )
    op.execute(
        "CREATE FUNCTION curator_closed_round_items() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "DELETE FROM open_round_samples o USING old_items d WHERE o.sample_id = d.sample_id "
        "AND o.round_id = d.round_id; RETURN NULL; END $$"
    )
    op.execute(
        "CREATE FUNCTION curator_round_status() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"IF OLD.status IN {OPEN} AND NEW.status NOT IN {OPEN} THEN "
        f"DELETE FROM open_round_samples WHERE round_id = NEW.id; {HANDOVER}; "
        f"ELSIF OLD.status NOT IN {OPEN} AND NEW.status IN {OPEN} THEN "
        "INSERT INTO open_round_samples (sample_id, round_id) SELECT sample_id, round_id FROM round_items "
        "WHERE round_id = NEW.id; END IF; RETURN NULL; "
        f"EXCEPTION WHEN unique_violation THEN {taken} END $$"
    )
    # Statement level with transition tables: one check per INSERT, not per row (10,000-sample rounds).
    op.execute(
        "CREATE TRIGGER round_items_open_insert AFTER INSERT ON round_items REFERENCING NEW TABLE AS new_items "
        "FOR EACH STATEMENT EXECUTE FUNCTION curator_open_round_items()"
    )
    op.execute(
        "CREATE TRIGGER round_items_open_delete AFTER DELETE ON round_items REFERENCING OLD TABLE AS old_items "
        "FOR EACH STATEMENT EXECUTE FUNCTION curator_closed_round_items()"
    )
    op.execute(
        "CREATE TRIGGER rounds_open_status AFTER UPDATE OF status ON rounds FOR EACH ROW "
        "WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION curator_round_status()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS round_items_open_insert ON round_items")
        op.execute("DROP TRIGGER IF EXISTS round_items_open_delete ON round_items")
        op.execute("DROP TRIGGER IF EXISTS rounds_open_status ON rounds")
        for fn in ("curator_open_round_items", "curator_closed_round_items", "curator_round_status"):
            op.execute(f"DROP FUNCTION IF EXISTS {fn}()")
    else:
        for name in ("round_items_one_open_round", "round_items_open_insert", "round_items_open_delete",
                     "rounds_open_close", "rounds_open_reopen"):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.drop_table("curator_locks")
    op.drop_index(op.f("ix_open_round_samples_round_id"), table_name="open_round_samples")
    op.drop_table("open_round_samples")
