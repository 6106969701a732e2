"""live_generations / live_ranks: the queue order the live loop gave Label Studio, per retrain

``curator loop --labeler labelstudio --live`` keeps a short queue of tasks
ahead of the labelers and re-ranks it each time it retrains. A generation is
one retrain (its model, the label count it was trained on, the top-up round it
selected, the seconds it took); its ranks are the queue order it wrote to the
server (``data.rank`` of each unstarted task). A loop restarted after a kill
reads the newest generation to know when to retrain next and writes its ranks
to the server again (idempotent), so the queue the labelers see is the one the
database says.

Revision ID: 0009_liveloop17
Revises: 0008
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = "0009_liveloop17"
down_revision: Union[str, None] = "0008"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "live_generations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=True),
        sa.Column("n_labels", sa.Integer(), nullable=False),
        sa.Column("round_number", sa.Integer(), nullable=True),
        sa.Column("queue_size", sa.Integer(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["label_projects.id"], ondelete="CASCADE",
                                name="fk_live_generations_project_id_label_projects"),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name="fk_live_generations_model_id_models"),
        sa.PrimaryKeyConstraint("id", name="pk_live_generations"),
        sa.UniqueConstraint("project_id", "number", name="uq_live_generations_project_id_number"),
    )
    op.create_table(
        "live_ranks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("generation_id", sa.Integer(), nullable=False),
        sa.Column("sample_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["generation_id"], ["live_generations.id"], ondelete="CASCADE",
                                name="fk_live_ranks_generation_id_live_generations"),
        sa.ForeignKeyConstraint(["sample_id"], ["samples.id"], name="fk_live_ranks_sample_id_samples"),
        sa.PrimaryKeyConstraint("id", name="pk_live_ranks"),
        sa.UniqueConstraint("generation_id", "sample_id", name="uq_live_ranks_generation_id_sample_id"),
        sa.UniqueConstraint("generation_id", "position", name="uq_live_ranks_generation_id_position"),
    )


def downgrade() -> None:
    op.drop_table("live_ranks")
    op.drop_table("live_generations")
