"""SQLAlchemy 2.0 typed models: the tables of curator and their invariants.

Invariants live in the database (foreign keys, unique and check constraints),
not only in Python: a second process, a crash or a hand-written SQL statement
cannot break them. Schema changes go through Alembic migrations in ``db/``.

Embeddings are not stored here: an ``EmbeddingSet`` row points to a
memory-mapped float32 array on disk.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Optional

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: Constraint names are fixed so migrations can refer to them on every backend.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}




class Dataset(Base):
    """A named pool of samples; ``classes`` lists the label names in order; ``classes_declared``:
    the user declared them (a pool with no labels yet), rather than ingest reading ground truth."""

    __tablename__ = "datasets"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    classes: Mapped[Optional[list[Any]]]
    classes_declared: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow
    )


class Sample(Base):
    """One image. ``gt_label`` is benchmark ground truth, kept apart from human labels.

    ``duplicate_of_id`` marks an exact copy (same sha256) of an earlier sample
    of the same dataset; the URI is unique per dataset, which makes re-ingest
    idempotent.
    """

    __tablename__ = "samples"
    __table_args__ = (
        UniqueConstraint("dataset_id", "uri"),
        Index("ix_samples_dataset_sha256", "dataset_id", "sha256"),
        Index("ix_samples_dataset_split", "dataset_id", "split"),
        CheckConstraint("width > 0 AND height > 0", name="positive_size"),
        CheckConstraint("channels IN (1, 3, 4)", name="channels"),
        CheckConstraint("length(sha256) = 64", name="sha256_hex"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE")
    )
    uri: Mapped[str] = mapped_column(String(1024))
    sha256: Mapped[str] = mapped_column(String(64))
    width: Mapped[int]
    height: Mapped[int]
    channels: Mapped[int]
    split: Mapped[Optional[str]] = mapped_column(String(32))
    gt_label: Mapped[Optional[str]] = mapped_column(String(200))
    duplicate_of_id: Mapped[Optional[int]] = mapped_column(ForeignKey("samples.id"))
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow
    )


class Model(Base):
    """A trained model version, identified by the checksum of its weights."""

    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("name", "version"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[str] = mapped_column(String(200))
    checksum: Mapped[str] = mapped_column(String(64))
    path: Mapped[Optional[str]] = mapped_column(String(1024))
    params: Mapped[Optional[dict[str, Any]]]
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow
    )


class EmbeddingSet(Base):
    """Embeddings of a dataset by one model: a float32 (count, dim) array on disk.

    ``sample_ids_path`` holds the int64 sample ids, row for row; ``done`` counts
    rows written so far, so an interrupted computation resumes.
    """

    __tablename__ = "embedding_sets"
    __table_args__ = (
        UniqueConstraint("dataset_id", "model_id"),
        CheckConstraint("dim > 0", name="positive_dim"),
        CheckConstraint("done >= 0 AND done <= count", name="done_range"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE")
    )
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    dim: Mapped[int]
    count: Mapped[int]
    done: Mapped[int] = mapped_column(default=0)
    path: Mapped[str] = mapped_column(String(1024))
    sample_ids_path: Mapped[str] = mapped_column(String(1024))
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow
    )


class Round(Base):
    """A selection round: which policy, with what, chose which samples."""

    __tablename__ = "rounds"
    __table_args__ = (
        UniqueConstraint("dataset_id", "number"),
        CheckConstraint("budget > 0", name="positive_budget"),
        CheckConstraint(
            "status IN ('pending', 'selected', 'pushed', 'labeled', 'versioned', 'done', 'failed')",
            name="status",
        ),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE")
    )
    number: Mapped[int]
    policy: Mapped[str] = mapped_column(String(200))
    params: Mapped[Optional[dict[str, Any]]]
    budget: Mapped[int]
    seed: Mapped[int]
    model_id: Mapped[Optional[int]] = mapped_column(ForeignKey("models.id"))
    status: Mapped[str] = mapped_column(String(20), default="pending")
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow
    )
    finished_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime(timezone=True))


class RoundItem(Base):
    """A ranked sample of a round (rank 0 is labeled first)."""

    __tablename__ = "round_items"
    __table_args__ = (
        UniqueConstraint("round_id", "rank"),
        CheckConstraint("rank >= 0", name="rank_nonnegative"),
    )
    round_id: Mapped[int] = mapped_column(
        ForeignKey("rounds.id", ondelete="CASCADE"), primary_key=True
    )
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id"), primary_key=True)
    rank: Mapped[int]
    score: Mapped[Optional[float]]


class OpenRoundSample(Base):
    """A sample of a round that is still open (migration 0005): at most one per sample.

    Filled and emptied by triggers on ``round_items`` and ``rounds.status``
    (open: pending, selected, pushed), so the database itself refuses a second
    open round holding the same sample, whoever writes it.
    """

    __tablename__ = "open_round_samples"
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id"), primary_key=True, autoincrement=False)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id", ondelete="CASCADE"), index=True)


class CuratorLock(Base):
    """A named lock held by one process (SQLite; PostgreSQL uses advisory locks), see store/locks.py."""

    __tablename__ = "curator_locks"
    name: Mapped[str] = mapped_column(String(300), primary_key=True)
    holder: Mapped[str] = mapped_column(String(300))
    acquired_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Score(Base):
    """One score of one sample by one model (``kind``: entropy, margin, novelty ...)."""

    __tablename__ = "scores"
    __table_args__ = (UniqueConstraint("sample_id", "kind", "model_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    sample_id: Mapped[int] = mapped_column(
        ForeignKey("samples.id", ondelete="CASCADE")
    )
    kind: Mapped[str] = mapped_column(String(50))
    value: Mapped[float]
    model_id: Mapped[Optional[int]] = mapped_column(ForeignKey("models.id"))
    round_id: Mapped[Optional[int]] = mapped_column(ForeignKey("rounds.id"))


class TaskLink(Base):
    """A sample pushed to a labeling tool. Unique per (tool, project, sample):
    a sample is never pushed twice to one project."""

    __tablename__ = "task_links"
    __table_args__ = (
        UniqueConstraint("tool", "project", "sample_id"),
        UniqueConstraint("tool", "project", "task_id"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id"))
    round_id: Mapped[Optional[int]] = mapped_column(ForeignKey("rounds.id"))
    tool: Mapped[str] = mapped_column(String(50))
    project: Mapped[str] = mapped_column(String(200))
    task_id: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow
    )


class Annotation(Base):
    """One human answer for one sample. ``label`` is NULL when the task was skipped.

    ``external_id`` is the labeling tool's annotation id; (tool, external_id)
    is unique so a pull that runs twice stores nothing twice.
    """

    __tablename__ = "annotations"
    __table_args__ = (
        UniqueConstraint("tool", "external_id"),
        CheckConstraint("skipped OR label IS NOT NULL", name="label_or_skipped"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id"))
    task_link_id: Mapped[Optional[int]] = mapped_column(ForeignKey("task_links.id"))
    tool: Mapped[str] = mapped_column(String(50))
    external_id: Mapped[str] = mapped_column(String(100))
    annotator: Mapped[Optional[str]] = mapped_column(String(200))
    label: Mapped[Optional[str]] = mapped_column(String(200))
    skipped: Mapped[bool] = mapped_column(Boolean, default=False)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow
    )
    updated_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime(timezone=True))


class LabelVersion(Base):
    """An immutable labeled set with its lineage (written by ``curator.versions``).

    The labels themselves are ``LabelVersionBlob``s: every version stores its
    changes against its parent, and some also store their full set
    (``snapshot``), so a version that changes k labels adds O(k) storage
    while reading one back walks at most ``chain_rows`` entries. Triggers
    (migrations 0002, 0004) make these tables append-only: UPDATE and DELETE
    are refused by the database, and nothing can be added to a sealed version.
    """

    __tablename__ = "label_versions"
    __table_args__ = (UniqueConstraint("dataset_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    name: Mapped[str] = mapped_column(String(200))
    message: Mapped[Optional[str]] = mapped_column(Text)
    parent_id: Mapped[Optional[int]] = mapped_column(ForeignKey("label_versions.id"))
    checksum: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer, default=0)
    counts: Mapped[Optional[dict[str, Any]]]
    lineage: Mapped[Optional[dict[str, Any]]]
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow
    )
    # --- added by migration 0002 (versioned labeled sets) ---
    snapshot: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    chain_rows: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    changes: Mapped[Optional[dict[str, Any]]]
    filters: Mapped[Optional[dict[str, Any]]]


class LabelVersionBlob(Base):
    """Labels of a version as compressed arrays (migration 0004).

    ``kind`` 'delta': the changes against the parent (a vocabulary entry of
    None marks a removed sample); 'snapshot': the full set. ``sample_ids`` is
    zlib(int64 gaps between sorted ids), ``labels`` zlib(uint32 codes into
    ``vocabulary``); at most 2^20 entries per chunk.
    """

    __tablename__ = "label_version_blobs"
    __table_args__ = (
        CheckConstraint("kind IN ('delta', 'snapshot')", name="kind"),
        CheckConstraint("chunk >= 0 AND count >= 0", name="chunk_count"),
    )
    version_id: Mapped[int] = mapped_column(
        ForeignKey("label_versions.id"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(10), primary_key=True)
    chunk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    count: Mapped[int]
    sample_ids: Mapped[bytes] = mapped_column(LargeBinary)
    labels: Mapped[bytes] = mapped_column(LargeBinary)
    vocabulary: Mapped[list[Any]]


class LabelVersionSeal(Base):
    """Written last when a version is created; no row can join a sealed version.

    ``digest`` (migration 0006) covers the version's identity and content
    checksum (``curator.versions.seal_digest``), so ``verify`` detects a
    version renamed or replaced behind the triggers.
    """

    __tablename__ = "label_version_seals"
    version_id: Mapped[int] = mapped_column(
        ForeignKey("label_versions.id"), primary_key=True, autoincrement=False
    )
    digest: Mapped[Optional[str]] = mapped_column(String(64))


class Evaluation(Base):
    """Test error of a model after a round (the learning curve)."""

    __tablename__ = "evaluations"
    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    round_id: Mapped[Optional[int]] = mapped_column(ForeignKey("rounds.id"))
    model_id: Mapped[Optional[int]] = mapped_column(ForeignKey("models.id"))
    n_labels: Mapped[int]
    metric: Mapped[str] = mapped_column(String(50))
    value: Mapped[float] = mapped_column(Float)
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow
    )


# -- Label Studio projects (issue 6, migration 0003) ---------------------------------------


class LabelProject(Base):
    """A labeling project on a tool's server, named by curator (``TaskLink.project``).

    ``external_id`` is the tool's project id: when the project was deleted on
    the server, push and pull notice (the id answers 404) instead of silently
    creating a second project. ``label_config`` and the tag names are what
    push generated or validated; pull reads labels through them.
    """

    __tablename__ = "label_projects"
    __table_args__ = (UniqueConstraint("tool", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    tool: Mapped[str] = mapped_column(String(50))
    name: Mapped[str] = mapped_column(String(200))
    external_id: Mapped[int] = mapped_column(BigInteger)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    label_config: Mapped[str] = mapped_column(Text)
    from_name: Mapped[str] = mapped_column(String(200))
    to_name: Mapped[str] = mapped_column(String(200))
    image_field: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    pulled_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime(timezone=True))


# -- webhook events (issue 17, migration 0008) ----------------------------------------------


class LabelEvent(Base):
    """One webhook event received from a labeling tool; (tool, event_key) is unique, so an event
    delivered twice is recorded once. A delete's row is the tombstone that keeps a late, older
    update from reviving the annotation."""

    __tablename__ = "label_events"
    __table_args__ = (
        UniqueConstraint("tool", "event_key"),
        Index("ix_label_events_tool_annotation_id", "tool", "annotation_id"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    tool: Mapped[str] = mapped_column(String(50))
    project: Mapped[str] = mapped_column(String(200))
    event_key: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(50))
    annotation_id: Mapped[str] = mapped_column(String(100))
    outcome: Mapped[str] = mapped_column(String(20))
    received_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


# -- the live loop's queue (issue 17 item 3, migration 0009_liveloop17) --------------------------


class LiveGeneration(Base):
    """One retrain of the live loop for a project: the model, the label count it was trained on,
    the top-up round it selected (None: nothing to add) and the queue size it aimed at."""

    __tablename__ = "live_generations"
    __table_args__ = (UniqueConstraint("project_id", "number"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("label_projects.id", ondelete="CASCADE"))
    number: Mapped[int]
    model_id: Mapped[Optional[int]] = mapped_column(ForeignKey("models.id"))
    n_labels: Mapped[int]
    round_number: Mapped[Optional[int]]
    queue_size: Mapped[int]
    seconds: Mapped[float]
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LiveRank(Base):
    """The queue order a generation wrote to the server: one position per unstarted sample."""

    __tablename__ = "live_ranks"
    __table_args__ = (UniqueConstraint("generation_id", "sample_id"), UniqueConstraint("generation_id", "position"))
    id: Mapped[int] = mapped_column(primary_key=True)
    generation_id: Mapped[int] = mapped_column(ForeignKey("live_generations.id", ondelete="CASCADE"))
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id"))
    position: Mapped[int]
    score: Mapped[Optional[float]]
