"""label_events: each webhook event received from a labeling tool, once

Label Studio sends a webhook per annotation created, updated or deleted, at
least once and in no guaranteed order. ``label_events`` holds one row per
event key (the annotation id and its ``updated_at``, or ``:deleted``), unique
per tool: a second delivery of the same event inserts nothing and so changes
nothing; a delete's row is the tombstone that keeps a late, older update from
bringing the annotation back. ``outcome`` says what the event did (added,
updated, deleted, stale, unlinked).

Revision ID: 0008
Revises: 0007
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = "0008"
down_revision: Union[str, None] = "0007"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "label_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tool", sa.String(length=50), nullable=False),
        sa.Column("project", sa.String(length=200), nullable=False),
        sa.Column("event_key", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=50), nullable=False),
        sa.Column("annotation_id", sa.String(length=100), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_label_events"),
        sa.UniqueConstraint("tool", "event_key", name="uq_label_events_tool_event_key"),
    )
    op.create_index("ix_label_events_tool_annotation_id", "label_events", ["tool", "annotation_id"])


def downgrade() -> None:
    op.drop_index("ix_label_events_tool_annotation_id", table_name="label_events")
    op.drop_table("label_events")
