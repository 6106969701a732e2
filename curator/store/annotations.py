"""The annotations aggregate: labeling projects, task links and human answers, read and written here only.

Push records a labeling project and one task link per pushed sample; pull
adds, changes and marks deleted the answers it finds on the server; the
agreed label of a sample is derived from those answers here, once. Every
function takes the caller's session (the caller owns the transaction, so
push's one-transaction-per-batch and pull's one write transaction stay the
caller's choice) and returns frozen dataclasses, dicts or numbers, never ORM
rows.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import Counter
from typing import Iterable, Sequence

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from curator.store.queries import fetch_all
from curator.store.schema import (
    Annotation,
    Dataset,
    EmbeddingSet,
    LabelEvent,
    LabelProject,
    Model,
    Sample,
    Score,
    TaskLink,
    utcnow,
)

__all__ = [
    "ProjectInfo", "StoredAnnotation", "NewAnnotation", "AnnotationChange", "DatasetInfo", "SampleRow",
    "project", "project_names", "add_project", "drop_project", "set_pulled_at",
    "links", "link_index", "add_links", "drop_links", "linked_truth",
    "annotations_of", "add_annotations", "change_annotations", "mark_deleted", "count_skipped", "agreed_labels",
    "dataset_info", "sample_files", "sample_rows", "latest_scores", "newest_trained_embeddings",
    "model_label", "newest_model_with_file", "naive_utc",
    "AnswerState", "EventRow", "project_by_external_id", "link_of_task", "answer_state", "claim_event", "set_event_outcome",
    "deleted_by_event", "events_of", "stored_predictions", "answers_of_project",
    "answers_of_dataset",
]

_CHUNK = 5000


# --------------------------------------------------------------------------- projects


@dataclasses.dataclass(frozen=True)
class ProjectInfo:
    """A labeling project as recorded: ``external_id`` is the tool's id, ``pulled_at`` the pull cursor (UTC)."""

    id: int
    tool: str
    name: str
    external_id: int
    dataset_id: int
    label_config: str
    from_name: str
    to_name: str
    image_field: str
    pulled_at: dt.datetime | None


def _project(p: LabelProject) -> ProjectInfo:
    return ProjectInfo(id=p.id, tool=p.tool, name=p.name, external_id=int(p.external_id), dataset_id=p.dataset_id,
                       label_config=p.label_config, from_name=p.from_name, to_name=p.to_name,
                       image_field=p.image_field, pulled_at=p.pulled_at)


def project(s: Session, tool: str, name: str) -> ProjectInfo | None:
    """Project ``name`` of ``tool``, or None when curator never recorded it."""
    p = s.scalar(select(LabelProject).where(LabelProject.tool == tool, LabelProject.name == name))
    return _project(p) if p is not None else None


def project_names(s: Session, tool: str) -> list[str]:
    """The recorded projects of ``tool``, by name."""
    return list(s.scalars(select(LabelProject.name).where(LabelProject.tool == tool).order_by(LabelProject.name)))


def add_project(s: Session, tool: str, name: str, *, external_id: int, dataset_id: int, label_config: str,
                from_name: str, to_name: str, image_field: str) -> ProjectInfo:
    """Record a project created (or found) on the tool's server; (tool, name) is unique."""
    p = LabelProject(tool=tool, name=name, external_id=int(external_id), dataset_id=dataset_id,
                     label_config=label_config, from_name=from_name, to_name=to_name, image_field=image_field)
    s.add(p)
    s.flush()
    return _project(p)


def drop_project(s: Session, tool: str, name: str) -> None:
    """Forget project ``name`` (deleted on the server): its links go, its answers stay, detached."""
    drop_links(s, tool, name)
    s.execute(delete(LabelProject).where(LabelProject.tool == tool, LabelProject.name == name))


def set_pulled_at(s: Session, project_id: int, when: dt.datetime | None) -> None:
    """Move the project's pull cursor (the newest task time the last pull saw)."""
    s.execute(update(LabelProject).where(LabelProject.id == project_id).values(pulled_at=when))


# --------------------------------------------------------------------------- task links


def links(s: Session, tool: str, project: str) -> dict[int, int]:
    """sample id -> task id of every sample linked to the project."""
    return dict(s.execute(select(TaskLink.sample_id, TaskLink.task_id)
                          .where(TaskLink.tool == tool, TaskLink.project == project)).all())


def link_index(s: Session, tool: str, project: str) -> dict[int, tuple[int, int]]:
    """task id -> (link id, sample id) of the project's links (pull attaches answers to links)."""
    return {int(tid): (int(lid), int(sid)) for lid, sid, tid in s.execute(
        select(TaskLink.id, TaskLink.sample_id, TaskLink.task_id)
        .where(TaskLink.tool == tool, TaskLink.project == project))}


def add_links(s: Session, tool: str, project: str, round_id: int, pairs: Sequence[tuple[int, int]]) -> None:
    """Link ``(sample id, task id)`` pairs; the unique (tool, project, sample) constraint refuses a second link."""
    if pairs:
        s.execute(insert(TaskLink), [{"sample_id": int(sid), "task_id": int(tid), "round_id": round_id,
                                      "tool": tool, "project": project} for sid, tid in pairs])


def drop_links(s: Session, tool: str, project: str, sample_ids: Iterable[int] | None = None) -> int:
    """Forget the project's task links (of ``sample_ids`` only, when given): the server lost the tasks.

    Their annotations stay, detached (``task_link_id`` NULL): answers are never lost. Returns how many went.
    """
    q = select(TaskLink.id).where(TaskLink.tool == tool, TaskLink.project == project)
    if sample_ids is not None:
        q = q.where(TaskLink.sample_id.in_([int(i) for i in sample_ids]))
    ids = list(s.scalars(q))
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start: start + _CHUNK]
        s.execute(update(Annotation).where(Annotation.task_link_id.in_(chunk)).values(task_link_id=None))
        s.execute(delete(TaskLink).where(TaskLink.id.in_(chunk)))
    return len(ids)


def linked_truth(s: Session, tool: str, project: str) -> dict[int, str | None]:
    """sample id -> ground-truth label of every sample linked to the project (the oracle's answers)."""
    return dict(s.execute(select(TaskLink.sample_id, Sample.gt_label)
                          .join(Sample, Sample.id == TaskLink.sample_id)
                          .where(TaskLink.tool == tool, TaskLink.project == project)).all())


# --------------------------------------------------------------------------- answers


@dataclasses.dataclass(frozen=True)
class StoredAnnotation:
    """An answer as stored, with the task it is linked to; ``updated_at`` is naive UTC on every database."""

    id: int
    external_id: str
    task_id: int
    label: str | None
    skipped: bool
    deleted: bool
    annotator: str | None
    updated_at: dt.datetime | None


@dataclasses.dataclass(frozen=True)
class NewAnnotation:
    """An answer seen for the first time (``external_id``: the tool's annotation id, unique per tool)."""

    sample_id: int
    task_link_id: int
    external_id: str
    label: str | None
    skipped: bool
    annotator: str | None
    created_at: dt.datetime
    updated_at: dt.datetime | None


@dataclasses.dataclass(frozen=True)
class AnnotationChange:
    """New values of a stored answer (it is live again if it had been marked deleted)."""

    id: int
    label: str | None
    skipped: bool
    annotator: str | None
    updated_at: dt.datetime | None


def naive_utc(value: dt.datetime | None) -> dt.datetime | None:
    """UTC without tzinfo: SQLite returns naive datetimes, PostgreSQL aware ones; compare them this way."""
    if value is not None and value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value


def annotations_of(s: Session, tool: str, project: str) -> list[StoredAnnotation]:
    """Every answer (deleted ones too) linked to a task of the project."""
    rows = s.execute(
        select(Annotation.id, Annotation.external_id, TaskLink.task_id, Annotation.label, Annotation.skipped,
               Annotation.deleted, Annotation.annotator, Annotation.updated_at)
        .join(TaskLink, TaskLink.id == Annotation.task_link_id)
        .where(Annotation.tool == tool, TaskLink.tool == tool, TaskLink.project == project)
        .order_by(Annotation.id)
    ).all()
    return [StoredAnnotation(int(a), ext, int(t), lab, bool(sk), bool(de), who, naive_utc(up))
            for a, ext, t, lab, sk, de, who, up in rows]


def add_annotations(s: Session, tool: str, rows: Sequence[NewAnnotation]) -> None:
    """Insert new answers; (tool, external_id) is unique, so one seen twice is refused, not doubled."""
    if rows:
        s.execute(insert(Annotation), [
            {"sample_id": r.sample_id, "task_link_id": r.task_link_id, "tool": tool, "external_id": r.external_id,
             "label": None if r.skipped else r.label, "skipped": r.skipped, "deleted": False,
             "annotator": r.annotator, "created_at": r.created_at, "updated_at": r.updated_at}
            for r in rows])


def change_annotations(s: Session, changes: Sequence[AnnotationChange]) -> None:
    """Overwrite stored answers with what the server now says (live again)."""
    if changes:
        s.execute(update(Annotation), [
            {"id": c.id, "label": None if c.skipped else c.label, "skipped": c.skipped, "deleted": False,
             "annotator": c.annotator, "updated_at": c.updated_at} for c in changes])


def mark_deleted(s: Session, ids: Iterable[int], when: dt.datetime | None = None) -> int:
    """Mark answers gone from the server as deleted (kept, never removed: versions may hold them)."""
    when = when or utcnow()
    rows = [{"id": int(i), "deleted": True, "updated_at": when} for i in ids]
    if rows:
        s.execute(update(Annotation), rows)
    return len(rows)


def count_skipped(s: Session, tool: str, project: str) -> int:
    """Live skipped answers of the project's tasks."""
    return int(s.scalar(
        select(func.count()).select_from(Annotation).join(TaskLink, TaskLink.id == Annotation.task_link_id)
        .where(TaskLink.tool == tool, TaskLink.project == project,
               Annotation.skipped.is_(True), Annotation.deleted.is_(False))))


def agreed_labels(session: Session, dataset: int) -> dict[int, tuple[str, float, int]]:
    """Current agreed label of every annotated sample: sample_id -> (label, agreement, n).

    The one definition of "the label of a sample", used by versions, the loop
    and FiftyOne: the most frequent label among live (not deleted, not
    skipped) annotations; ties go to the most recent annotation. ``agreement``
    is the fraction of annotators who gave the agreed label.
    """
    rows = fetch_all(
        session,
        select(Annotation.sample_id, Annotation.label)
        .join(Sample, Sample.id == Annotation.sample_id)
        .where(
            Sample.dataset_id == dataset,
            Annotation.deleted.is_(False),
            Annotation.skipped.is_(False),
        )
        .order_by(Annotation.sample_id, Annotation.id),
    )
    # One pass for the common case (one answer per sample); samples with
    # several answers are collected, in annotation order, and decided after.
    out: dict[int, tuple[str, float, int]] = {}
    several: dict[int, list[str]] = {}
    for sample_id, label in rows:
        if sample_id in out:
            several.setdefault(sample_id, [out[sample_id][0]]).append(label)
        out[sample_id] = (label, 1.0, 1)
    for sample_id, labels in several.items():
        counts = Counter(labels)
        top = max(counts.values())
        winner = next(lab for lab in reversed(labels) if counts[lab] == top)
        out[sample_id] = (winner, top / len(labels), len(labels))
    return out


# --------------------------------------------------------------------------- reads of other aggregates
# Push, pull and the FiftyOne sync need a few reads of samples, scores, embeddings and models. They live
# here until the samples / embeddings / models store modules (another branch of issue 14) exist; the
# lead moves them there at merge. Same rules: the caller's session in, plain data out.


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    id: int
    name: str
    classes: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class SampleRow:
    """The columns of a sample the edges show or check (FiftyOne's fields, push's files)."""

    id: int
    dataset_id: int
    uri: str
    sha256: str
    split: str | None
    gt_label: str | None
    duplicate_of_id: int | None


def dataset_info(s: Session, dataset_id: int) -> DatasetInfo:
    """Name and classes of dataset ``dataset_id`` (found by ``queries.dataset_id`` / ``resolve_dataset``)."""
    name, classes = s.execute(select(Dataset.name, Dataset.classes).where(Dataset.id == dataset_id)).one()
    return DatasetInfo(id=dataset_id, name=name, classes=tuple(classes or ()))


def sample_files(s: Session, ids: Iterable[int]) -> dict[int, tuple[str, str]]:
    """sample id -> (uri, sha256) of the samples ``ids`` (samples aggregate)."""
    ids = [int(i) for i in ids]
    out: dict[int, tuple[str, str]] = {}
    for start in range(0, len(ids), _CHUNK):
        out.update((sid, (uri, sha)) for sid, uri, sha in s.execute(
            select(Sample.id, Sample.uri, Sample.sha256).where(Sample.id.in_(ids[start: start + _CHUNK]))))
    return out


def sample_rows(s: Session, dataset_id: int) -> list[SampleRow]:
    """Every sample of the dataset, by id (samples aggregate)."""
    return [SampleRow(*r) for r in fetch_all(
        s, select(Sample.id, Sample.dataset_id, Sample.uri, Sample.sha256, Sample.split, Sample.gt_label,
                  Sample.duplicate_of_id).where(Sample.dataset_id == dataset_id).order_by(Sample.id))]


def latest_scores(s: Session, dataset_id: int, *, model_id: int | None = None, kinds: Sequence[str] | None = None,
                  sample_ids: Iterable[int] | None = None) -> dict[str, dict[int, float]]:
    """kind -> {sample id: value} of the dataset's stored scores; the most recent row of a kind wins.

    ``model_id``, ``kinds`` and ``sample_ids`` narrow the read (push: the round's model's predictions
    of the round's samples). Scores aggregate.
    """
    q = (select(Score.sample_id, Score.kind, Score.value).join(Sample, Sample.id == Score.sample_id)
         .where(Sample.dataset_id == dataset_id))
    if model_id is not None:
        q = q.where(Score.model_id == model_id)
    if kinds is not None:
        q = q.where(Score.kind.in_(list(kinds)))
    if sample_ids is None:
        parts = [q]
    else:  # chunks hold all the rows of their samples, so "most recent wins" holds per chunk
        ids = sorted({int(i) for i in sample_ids})
        parts = [q.where(Score.sample_id.in_(ids[k: k + _CHUNK])) for k in range(0, len(ids), _CHUNK)]
    out: dict[str, dict[int, float]] = {}
    for part in parts:
        for sid, kind, value in fetch_all(s, part.order_by(Score.id)):
            out.setdefault(kind, {})[sid] = value
    return out


def model_label(s: Session, model_id: int) -> str | None:
    """``name:version`` of model ``model_id`` (a prediction's model version), or None. Models aggregate."""
    row = s.execute(select(Model.name, Model.version).where(Model.id == model_id)).first()
    return None if row is None else f"{row[0]}:{row[1]}"


def newest_trained_embeddings(s: Session, dataset_id: int, *, exclude_model: str) -> tuple[int, str, str] | None:
    """(model id, name, version) of the newest complete embedding set of the dataset by a model not called
    ``exclude_model`` (the cold-start embedder), or None. Embeddings aggregate."""
    row = s.execute(
        select(EmbeddingSet.model_id, Model.name, Model.version)
        .join(Model, Model.id == EmbeddingSet.model_id)
        .where(EmbeddingSet.dataset_id == dataset_id, EmbeddingSet.done == EmbeddingSet.count,
               Model.name != exclude_model)
        .order_by(EmbeddingSet.id.desc())
    ).first()
    return None if row is None else (int(row[0]), row[1], row[2])


def newest_model_with_file(s: Session, dataset: str) -> int | None:
    """The id of the newest model saved to a file and trained on dataset ``dataset`` (by its
    recorded ``params["dataset"]``), or None. Models aggregate."""
    rows = s.execute(select(Model.id, Model.params).where(Model.path.is_not(None)).order_by(Model.id.desc()))
    return next((int(mid) for mid, params in rows if (params or {}).get("dataset") == dataset), None)


# --------------------------------------------------------------------------- webhook events (issue 17)
# The webhook receiver records each event once (``claim_event``) and applies it in the same
# transaction with the answer functions above, so a redelivered event finds its key taken and
# changes nothing, and a crash between the two leaves neither.


@dataclasses.dataclass(frozen=True)
class AnswerState:
    """What an event must know of a stored answer: is it live, and how new is it (naive UTC)."""

    id: int
    deleted: bool
    updated_at: dt.datetime | None


@dataclasses.dataclass(frozen=True)
class EventRow:
    event_key: str
    action: str
    annotation_id: str
    outcome: str
    received_at: dt.datetime


def project_by_external_id(s: Session, tool: str, external_id: int) -> ProjectInfo | None:
    """The recorded project whose id on the tool's server is ``external_id`` (a webhook names it so)."""
    p = s.scalar(select(LabelProject).where(LabelProject.tool == tool, LabelProject.external_id == int(external_id))
                 .order_by(LabelProject.id.desc()).limit(1))
    return _project(p) if p is not None else None


def link_of_task(s: Session, tool: str, project: str, task_id: int) -> tuple[int, int] | None:
    """(link id, sample id) of the project's task ``task_id``, or None when curator did not push it."""
    row = s.execute(select(TaskLink.id, TaskLink.sample_id).where(
        TaskLink.tool == tool, TaskLink.project == project, TaskLink.task_id == int(task_id))).first()
    return None if row is None else (int(row[0]), int(row[1]))


def answer_state(s: Session, tool: str, external_id: str) -> AnswerState | None:
    """The stored answer with the tool's id ``external_id``, or None."""
    row = s.execute(select(Annotation.id, Annotation.deleted, Annotation.updated_at)
                    .where(Annotation.tool == tool, Annotation.external_id == str(external_id))).first()
    return None if row is None else AnswerState(int(row[0]), bool(row[1]), naive_utc(row[2]))


def claim_event(s: Session, tool: str, project: str, key: str, action: str, annotation_id: str) -> bool:
    """Record event ``key``; False when it was recorded already (a redelivery: apply nothing).

    INSERT ... ON CONFLICT DO NOTHING on both databases: two deliveries at once both try, the
    unique (tool, event_key) lets one in, the other waits for it and inserts nothing.
    """
    values = {"tool": tool, "project": project, "event_key": key, "action": action,
              "annotation_id": str(annotation_id), "outcome": "pending", "received_at": utcnow()}
    if s.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    stmt = (dialect_insert(LabelEvent).values(**values)
            .on_conflict_do_nothing(index_elements=["tool", "event_key"]).returning(LabelEvent.id))
    return s.execute(stmt).scalar() is not None


def set_event_outcome(s: Session, tool: str, key: str, outcome: str) -> None:
    """What the event did: added, updated, deleted, stale (older than what is stored), unlinked."""
    s.execute(update(LabelEvent).where(LabelEvent.tool == tool, LabelEvent.event_key == key).values(outcome=outcome))


def deleted_by_event(s: Session, tool: str, annotation_id: str) -> bool:
    """Whether a delete event of this answer was received (its tombstone)."""
    return s.scalar(select(func.count()).select_from(LabelEvent).where(
        LabelEvent.tool == tool, LabelEvent.annotation_id == str(annotation_id),
        LabelEvent.outcome.in_(("deleted", "gone")))) > 0


def events_of(s: Session, tool: str, project: str) -> list[EventRow]:
    """The project's received events, in order of arrival."""
    return [EventRow(k, a, ann, o, naive_utc(r)) for k, a, ann, o, r in s.execute(
        select(LabelEvent.event_key, LabelEvent.action, LabelEvent.annotation_id, LabelEvent.outcome,
               LabelEvent.received_at).where(LabelEvent.tool == tool, LabelEvent.project == project)
        .order_by(LabelEvent.id))]


def stored_predictions(s: Session, sample_ids: Iterable[int]) -> dict[int, tuple[int, float, int]]:
    """sample id -> (predicted class index, confidence, model id) by the newest model that stored a
    prediction of the sample (scores of kinds "prediction" and "confidence"). Scores aggregate."""
    ids = sorted({int(i) for i in sample_ids})
    got: dict[tuple[int, int], dict[str, float]] = {}
    for start in range(0, len(ids), _CHUNK):
        for sid, kind, value, mid in s.execute(
            select(Score.sample_id, Score.kind, Score.value, Score.model_id)
            .where(Score.sample_id.in_(ids[start: start + _CHUNK]), Score.kind.in_(("prediction", "confidence")),
                   Score.model_id.is_not(None)).order_by(Score.id)):
            got.setdefault((int(sid), int(mid)), {})[kind] = float(value)
    out: dict[int, tuple[int, float, int]] = {}
    for (sid, mid), kinds in sorted(got.items()):  # ascending model id: the newest model wins
        if "prediction" in kinds:
            out[sid] = (int(kinds["prediction"]), float(kinds.get("confidence", 0.0)), mid)
    return out


def answers_of_project(s: Session, tool: str, project: str) -> list[tuple[int, str, str]]:
    """(sample id, annotator, label) of the project's live, not skipped answers (agreement's input);
    an answer without annotator counts as its own labeler."""
    rows = s.execute(
        select(Annotation.sample_id, Annotation.annotator, Annotation.external_id, Annotation.label)
        .join(TaskLink, TaskLink.id == Annotation.task_link_id)
        .where(Annotation.tool == tool, TaskLink.tool == tool, TaskLink.project == project,
               Annotation.deleted.is_(False), Annotation.skipped.is_(False))
        .order_by(Annotation.id)).all()
    return [(int(sid), who or f"annotation {ext}", label) for sid, who, ext, label in rows]


def answers_of_dataset(s: Session, dataset: int) -> list[tuple[int, str, str]]:
    """(sample id, annotator, label) of every live, not skipped answer to samples of ``dataset``,
    in every project and tool (agreement and aggregation's input, as ``answers_of_project``)."""
    rows = s.execute(
        select(Annotation.sample_id, Annotation.annotator, Annotation.external_id, Annotation.label)
        .join(Sample, Sample.id == Annotation.sample_id)
        .where(Sample.dataset_id == dataset, Annotation.deleted.is_(False), Annotation.skipped.is_(False))
        .order_by(Annotation.id)).all()
    return [(int(sid), who or f"annotation {ext}", label) for sid, who, ext, label in rows]
