"""datasets.classes_declared: a class list the user declared, not one read from ground truth

A pool with no labels yet has no ground truth to take its classes from, so
the user declares them (``--classes a,b,c``, a file, or a Label Studio
labeling config). The list is kept in ``datasets.classes`` as before; this
flag says it was declared, so a later ingest with ground truth checks its
labels against it (a label outside the list is refused) instead of extending
and re-sorting it. Existing datasets took their classes from ground truth:
false.

Revision ID: 0007
Revises: 0006
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = "0007"
down_revision: Union[str, None] = "0006"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    # a plain ADD COLUMN on both backends: no table rebuild, so 0006's triggers on datasets stay
    op.add_column("datasets", sa.Column("classes_declared", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    # a plain DROP COLUMN too (SQLite >= 3.35): a batch rebuild would drop the table other tables
    # reference, which SQLite refuses with foreign keys on
    op.drop_column("datasets", "classes_declared")
