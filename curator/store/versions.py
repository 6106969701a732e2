"""The versions aggregate: every query on label_versions, their blobs and seals.

``curator.versions`` computes (labels as arrays, deltas, checksums, seals)
and builds no query; it reads and writes through these functions. Each takes
the caller's ``Session`` (or, where a migration calls it, a ``Connection``)
and returns plain dataclasses, dicts or arrays, never ORM rows, so the
caller owns the transaction and what leaves the store cannot be mutated
into the database by accident.

Labels cross this edge encoded (``curator.versions.labels`` is the codec):
``load_blobs`` returns the stored chunks, ``store_blobs`` inserts encoded
ones.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session, aliased

from curator.exceptions import NotFoundError, ValidationError
from curator.names import dataset_name
from curator.store.schema import (
    Dataset,
    LabelVersion,
    LabelVersionBlob,
    LabelVersionSeal,
    Model,
    Round,
    RoundItem,
    Sample,
)
from curator.store.annotations import agreed_labels
from curator.store.queries import dataset_id, fetch_all, resolve_dataset


@dataclasses.dataclass(frozen=True)
class VersionInfo:
    """What a version is, without its labels (``read_version`` returns those)."""

    id: int
    dataset: str
    name: str
    message: str | None
    parent: str | None
    created_at: str
    size: int
    checksum: str
    counts: dict[str, int]
    lineage: dict[str, Any]
    filters: dict[str, Any]
    changes: dict[str, int]
    snapshot: bool
    chain_rows: int

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class VersionRow:
    """The columns of a version that reading its labels needs (the chain of deltas)."""

    id: int
    name: str
    parent_id: int | None
    snapshot: bool
    size: int
    chain_rows: int
    checksum: str
    counts: dict
    filters: dict


@dataclasses.dataclass(frozen=True)
class RoundSource:
    """A round that selected some of a version's samples, with its model (lineage)."""

    id: int
    number: int
    policy: str
    params: Any
    seed: int
    model_name: str | None
    model_version: str | None
    model_checksum: str | None


# --------------------------------------------------------------------------- datasets


def lock_dataset(s: Session, dataset: str | None) -> tuple[int, str]:
    """Take the dataset's write lock before reading anything (serialises version creators).

    A no-op UPDATE locks the row on PostgreSQL and takes the database write
    lock on SQLite; reads that follow see every version committed before.
    """
    if dataset is None:
        _, dataset = resolve_dataset(s, None)
    s.execute(update(Dataset).where(func.lower(Dataset.name) == dataset_name(dataset)).values(name=Dataset.name))
    return resolve_dataset(s, dataset)  # NotFoundError naming the known datasets when absent


def find_dataset(s: Session, name: str) -> int | None:
    """The id of dataset ``name`` (already normalised, lower-case), or None: no error, for imports that may create it."""
    return s.scalar(select(Dataset.id).where(func.lower(Dataset.name) == name))


# --------------------------------------------------------------------------- versions


def versions(s: Session, ds: int) -> dict[int, VersionRow]:
    """Every version of dataset ``ds`` by id, oldest first."""
    LV = LabelVersion
    rows = s.execute(
        select(LV.id, LV.name, LV.parent_id, LV.snapshot, LV.size, LV.chain_rows, LV.checksum, LV.counts, LV.filters)
        .where(LV.dataset_id == ds)
        .order_by(LV.id)
    ).all()
    return {r[0]: VersionRow(*r[:7], r[7] or {}, r[8] or {}) for r in rows}


def by_name(versions: Mapping[int, VersionRow], name: str, dataset: str) -> VersionRow:
    """The version called ``name`` among ``versions`` (names are case-insensitive; see ``curator.names``)."""
    wanted = name.lower() if isinstance(name, str) else name
    for v in versions.values():
        if v.name.lower() == wanted:
            return v
    known = [v.name for v in versions.values()]
    shown = ", ".join(known[-10:]) or "none"
    raise NotFoundError(
        f"version {name!r} does not exist in dataset {dataset!r} (known: {shown}); "
        "list them with: curator version list"
    )


def info(s: Session, ds_name: str, vid: int) -> VersionInfo:
    """Version ``vid`` as recorded, with its parent's name."""
    LV = LabelVersion
    P = aliased(LV)
    v, parent = s.execute(select(LV, P.name).outerjoin(P, P.id == LV.parent_id).where(LV.id == vid)).one()
    return VersionInfo(
        id=v.id, dataset=ds_name, name=v.name, message=v.message, parent=parent,
        created_at=v.created_at.isoformat() if v.created_at else "", size=v.size, checksum=v.checksum,
        counts=dict(v.counts or {}), lineage=dict(v.lineage or {}), filters=dict(v.filters or {}),
        changes=dict(v.changes or {}), snapshot=bool(v.snapshot), chain_rows=v.chain_rows,
    )


def infos(s: Session, ds: int, ds_name: str) -> list[VersionInfo]:
    """Every version of dataset ``ds``, oldest first."""
    LV = LabelVersion
    return [info(s, ds_name, vid) for vid in s.scalars(select(LV.id).where(LV.dataset_id == ds).order_by(LV.id))]


def insert_version(s: Session, **values) -> int:
    """Insert a version row (columns of ``label_versions``); returns its id."""
    return s.scalar(insert(LabelVersion).values(**values).returning(LabelVersion.id))


# --------------------------------------------------------------------------- blobs


def load_blobs(s: Session, vid: int, kind: str) -> list[tuple[bytes, bytes, list]]:
    """The stored chunks (ids, codes, vocabulary) of version ``vid``'s ``kind`` ('delta' or 'snapshot'), in order."""
    B = LabelVersionBlob
    rows = s.execute(
        select(B.sample_ids, B.labels, B.vocabulary).where(B.version_id == vid, B.kind == kind).order_by(B.chunk)
    ).all()
    return [tuple(r) for r in rows]


def store_blobs(s: Session, vid: int, kind: str, chunks: Iterable[tuple[int, int, bytes, bytes, list]]) -> None:
    """Insert encoded chunks ``(chunk, count, ids, codes, vocabulary)`` of version ``vid``."""
    rows = [
        {"version_id": vid, "kind": kind, "chunk": k, "count": n, "sample_ids": ids, "labels": codes, "vocabulary": vocab}
        for k, n, ids, codes, vocab in chunks
    ]
    if rows:
        s.execute(insert(LabelVersionBlob), rows)


# --------------------------------------------------------------------------- seals


def identity_rows(s, columns: Sequence[str], ds: int | None = None) -> list[dict]:
    """Every version (of dataset ``ds``, or all) as ``columns`` of ``label_versions`` plus
    its dataset's name (``dataset``), whether it has a seal row (``sealed``) and the
    seal's digest (``digest``), oldest first. ``s``: a Session or a Connection (a migration)."""
    LV, Seal = LabelVersion, LabelVersionSeal
    stmt = (
        select(*(getattr(LV, c) for c in columns), Dataset.name.label("dataset"),
               Seal.version_id.label("sealed"), Seal.digest.label("digest"))
        .join(Dataset, Dataset.id == LV.dataset_id)
        .outerjoin(Seal, Seal.version_id == LV.id)
        .order_by(LV.id)
    )
    if ds is not None:
        stmt = stmt.where(LV.dataset_id == ds)
    return [dict(r._mapping) for r in s.execute(stmt)]


def insert_seal(s: Session, vid: int, digest: str) -> None:
    s.execute(insert(LabelVersionSeal).values(version_id=vid, digest=digest))


def set_seal_digest(connection, vid: int, digest: str) -> None:
    """Fill in the digest of an existing seal (only migration 0006 does, with the seals' trigger lifted)."""
    connection.execute(update(LabelVersionSeal).where(LabelVersionSeal.version_id == vid).values(digest=digest))


def sealed_ids(s: Session, ids: Iterable[int]) -> set[int]:
    """Which of the versions ``ids`` have a seal (their creation finished)."""
    return set(s.scalars(select(LabelVersionSeal.version_id).where(LabelVersionSeal.version_id.in_(list(ids)))))


# --------------------------------------------------------------------------- what versions are made of


def current_labels(s: Session, ds: int, split: Sequence[str] | None, rounds: Sequence[int] | None) -> dict[int, str]:
    """The agreed labels (``annotations.agreed_labels``) of dataset ``ds``, of samples in
    ``split`` and in rounds numbered ``rounds`` when given."""
    labels = {sid: lab for sid, (lab, _, _) in agreed_labels(s, ds).items()}
    if split:
        keep = {r[0] for r in fetch_all(s, select(Sample.id).where(Sample.dataset_id == ds, Sample.split.in_(list(split))))}
        labels = {sid: lab for sid, lab in labels.items() if sid in keep}
    if rounds:
        numbers = set(s.scalars(select(Round.number).where(Round.dataset_id == ds, Round.number.in_(list(rounds)))))
        missing = sorted(set(rounds) - numbers)
        if missing:
            raise NotFoundError(f"rounds {missing} do not exist in this dataset; check --round")
        keep = set(
            s.scalars(
                select(RoundItem.sample_id)
                .join(Round, Round.id == RoundItem.round_id)
                .where(Round.dataset_id == ds, Round.number.in_(list(rounds)))
            )
        )
        labels = {sid: lab for sid, lab in labels.items() if sid in keep}
    return labels


def sample_hashes(s: Session, ds: int) -> tuple[np.ndarray, np.ndarray]:
    """Sample ids (int64) and their sha256 (hex as ``S64``) of dataset ``ds``, unsorted."""
    rows = fetch_all(s, select(Sample.id, Sample.sha256).where(Sample.dataset_id == ds))
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    return ids, np.array([r[1] for r in rows], dtype="S64")


def sample_uris(s: Session, ds: int) -> dict[int, str]:
    """sample id -> file URI of every sample of dataset ``ds``."""
    return dict(fetch_all(s, select(Sample.id, Sample.uri).where(Sample.dataset_id == ds)))


def sample_files(s: Session, ds: int) -> list[tuple[int, str, str, int, int, int]]:
    """(id, uri, sha256, height, width, channels) of every sample of dataset ``ds``, by id."""
    return fetch_all(
        s,
        select(Sample.id, Sample.uri, Sample.sha256, Sample.height, Sample.width, Sample.channels)
        .where(Sample.dataset_id == ds)
        .order_by(Sample.id),
    )


def samples_by_uri(s: Session, ds: int | None) -> dict[str, tuple[int, str]]:
    """uri -> (sample id, sha256) of dataset ``ds`` (empty when there is no such dataset yet)."""
    if ds is None:
        return {}
    return {uri: (sid, sha) for uri, sid, sha in s.execute(
        select(Sample.uri, Sample.id, Sample.sha256).where(Sample.dataset_id == ds)).all()}


def round_items(s: Session, ds: int) -> tuple[np.ndarray, np.ndarray]:
    """(round ids, sample ids) of every item of every round of dataset ``ds``."""
    items = fetch_all(
        s,
        select(RoundItem.round_id, RoundItem.sample_id)
        .join(Round, Round.id == RoundItem.round_id)
        .where(Round.dataset_id == ds),
    )
    rids = np.fromiter((r[0] for r in items), dtype=np.int64, count=len(items))
    sids = np.fromiter((r[1] for r in items), dtype=np.int64, count=len(items))
    return rids, sids


def round_sources(s: Session, round_ids: Iterable[int]) -> list[RoundSource]:
    """Rounds ``round_ids`` with policy, parameters, seed and model, by round number."""
    rows = s.execute(
        select(Round.id, Round.number, Round.policy, Round.params, Round.seed, Model.name, Model.version, Model.checksum)
        .outerjoin(Model, Model.id == Round.model_id)
        .where(Round.id.in_(list(round_ids)))
        .order_by(Round.number)
    ).all()
    return [RoundSource(*r) for r in rows]
