"""The samples aggregate: datasets, their samples, ground truth, scores; read and written here only.

Every function takes the caller's session (the caller owns the transaction, see
``curator.steps``) and returns ids as int64 arrays, plain tuples or frozen
dataclasses, never an ORM row. Lists of ids are sent in chunks, so a pool of
millions never builds one statement with millions of parameters.
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Iterable, Sequence

import numpy as np
from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.orm import Session

from curator.exceptions import NotFoundError, ValidationError
from curator.store import rounds as store_rounds
from curator.store.queries import agreed_labels, fetch_all
from curator.store.schema import Dataset, Sample, Score

__all__ = [
    "SampleRows", "SampleHashes", "hash_arrays", "Truth", "ClassList", "classes", "set_classes", "class_list", "declare_classes", "truth_classes", "pool_ids", "candidate_ids", "ids", "uris", "listing",
    "truth", "in_split", "count", "all_uris", "stored_uris", "summaries", "write_scores",
    "lock_dataset_name", "find_or_create_dataset", "first_of_hashes", "known_uris", "insert_samples",
    "mark_duplicates",
]

_CHUNK = 5000


@dataclasses.dataclass(frozen=True)
class SampleRows:
    """Samples of a dataset in id order: what ``curator dedup`` groups and names."""

    ids: np.ndarray  # (n,) int64
    uris: list[str]
    sha256: list[str]


@dataclasses.dataclass(frozen=True)
class SampleHashes:
    """Ids and content hashes of a dataset's samples in id order, as arrays: 40 bytes a sample and
    no Python object per sample (``listing``'s strings cost ~1 KB of heap a sample at 100k)."""

    ids: np.ndarray  # (n,) int64
    sha256: np.ndarray  # (n,) S32: the raw 32-byte digests (``bytes.fromhex`` of the stored hex)

    def __len__(self) -> int:
        return len(self.ids)


@dataclasses.dataclass(frozen=True)
class Truth:
    """Ground truth of samples in id order; ``labels[i]`` is None where a sample has none."""

    ids: np.ndarray  # (n,) int64
    labels: list[str | None]

    def __len__(self) -> int:
        return len(self.ids)


def _chunks(values: Sequence, size: int = _CHUNK):
    for s0 in range(0, len(values), size):
        yield values[s0: s0 + size]


def _int_list(values) -> list[int]:
    return [int(i) for i in np.asarray(values, dtype=np.int64).ravel()]


# -- datasets ---------------------------------------------------------------------------------

def classes(session: Session, dataset_id: int) -> list[str]:
    """The dataset's class names in their stored order (empty before any ground truth)."""
    return [str(c) for c in session.scalar(select(Dataset.classes).where(Dataset.id == dataset_id)) or []]


def set_classes(session: Session, dataset_id: int, names: Sequence[str]) -> None:
    session.execute(update(Dataset).where(Dataset.id == dataset_id).values(classes=list(names)))


@dataclasses.dataclass(frozen=True)
class ClassList:
    """A dataset's classes in order; ``declared``: the user declared them (else: read from ground truth)."""

    names: tuple[str, ...]
    declared: bool


def class_list(session: Session, dataset_id: int) -> ClassList:
    row = session.execute(select(Dataset.classes, Dataset.classes_declared).where(Dataset.id == dataset_id)).first()
    if row is None:
        raise NotFoundError(f"dataset id {dataset_id} does not exist")
    return ClassList(names=tuple(str(c) for c in row[0] or []), declared=bool(row[1]))


def truth_classes(session: Session, dataset_id: int) -> set[str]:
    """The distinct ground-truth labels of the dataset's samples."""
    return {str(r[0]) for r in session.execute(select(Sample.gt_label).distinct().where(
        Sample.dataset_id == dataset_id, Sample.gt_label.is_not(None)))}


def declare_classes(session: Session, dataset_id: int, names: Sequence[str], *, dataset: str = "") -> bool:
    """Record ``names`` as the dataset's declared class list; whether anything changed.

    Refused (ValidationError, nothing written): a ground-truth label outside ``names`` (a
    mismatch between the declaration and the data), or a dataset that declared another list
    already (models, labeling configurations and label versions use its order).
    """
    names = [str(n) for n in names]
    what = f"dataset {dataset!r}" if dataset else f"dataset id {dataset_id}"
    current = class_list(session, dataset_id)
    if current.declared and list(current.names) != names:
        raise ValidationError(
            f"{what} has declared classes {list(current.names)}; now given {names}. A dataset's class list "
            "cannot change (its models and labeling configuration use it): pass the same list, or none"
        )
    extra = sorted(truth_classes(session, dataset_id) - set(names))
    if extra:
        raise ValidationError(
            f"{what}: its ground truth has classes {extra[:10]} that the declared list {names[:20]} lacks; "
            "declare every class of the ground truth (or declare none: the classes then come from it)"
        )
    if current.declared:
        return False
    session.execute(update(Dataset).where(Dataset.id == dataset_id).values(classes=names, classes_declared=True))
    return True


def summaries(session: Session) -> list[dict]:
    """Every dataset with its sample count per split, exact duplicates and classes, by name."""
    out = []
    for ds, name, cls in session.execute(select(Dataset.id, Dataset.name, Dataset.classes).order_by(Dataset.name)):
        splits = dict(session.execute(
            select(func.coalesce(Sample.split, "-"), func.count()).where(Sample.dataset_id == ds)
            .group_by(Sample.split)).all())
        dups = session.scalar(select(func.count()).where(Sample.dataset_id == ds, Sample.duplicate_of_id.is_not(None)))
        out.append({"name": name, "samples": sum(splits.values()), "splits": splits, "duplicates": dups,
                    "classes": list(cls or [])})
    return out


# -- the pool ---------------------------------------------------------------------------------

def candidate_ids(session: Session, dataset_id: int, split: str | None = None) -> np.ndarray:
    """Samples of the dataset (of ``split``) that copy no earlier sample, ascending."""
    q = select(Sample.id).where(Sample.dataset_id == dataset_id, Sample.duplicate_of_id.is_(None))
    if split:
        q = q.where(Sample.split == split)
    return np.array([r[0] for r in fetch_all(session, q.order_by(Sample.id))], dtype=np.int64)


def pool_ids(session: Session, dataset_id: int, split: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(unlabeled pool ids, labeled-or-pending ids) of the dataset, ascending.

    The pool: samples (of ``split``) that copy no other sample, have no agreed label and are not
    waiting for one in an open round. "Taken" (labeled or pending) is dataset-wide.
    """
    candidates = candidate_ids(session, dataset_id, split)
    taken = np.union1d(np.fromiter(agreed_labels(session, dataset_id), dtype=np.int64),
                       store_rounds.open_sample_ids(session, dataset_id)).astype(np.int64)
    return candidates[~np.isin(candidates, taken)], taken


def ids(session: Session, dataset_id: int) -> np.ndarray:
    """Every sample id of the dataset, ascending."""
    return np.array([r[0] for r in fetch_all(
        session, select(Sample.id).where(Sample.dataset_id == dataset_id).order_by(Sample.id))], dtype=np.int64)


def count(session: Session, dataset_id: int) -> int:
    return int(session.scalar(select(func.count()).select_from(Sample).where(Sample.dataset_id == dataset_id)))


def uris(session: Session, sample_ids) -> list[str]:
    """The URI of each of ``sample_ids``, in their order; NotFoundError naming ids that do not exist."""
    wanted = _int_list(sample_ids)
    found: dict[int, str] = {}
    for chunk in _chunks(sorted(set(wanted))):
        found.update(session.execute(select(Sample.id, Sample.uri).where(Sample.id.in_(chunk))).all())
    missing = [i for i in wanted if i not in found]
    if missing:
        raise NotFoundError(f"sample ids {missing[:5]} do not exist")
    return [found[i] for i in wanted]


def listing(session: Session, dataset_id: int) -> SampleRows:
    """(ids, URIs, content hashes) of every sample of the dataset, in id order."""
    rows = fetch_all(session, select(Sample.id, Sample.uri, Sample.sha256)
                     .where(Sample.dataset_id == dataset_id).order_by(Sample.id))
    return SampleRows(ids=np.array([r[0] for r in rows], dtype=np.int64), uris=[r[1] for r in rows],
                      sha256=[r[2] for r in rows])


#: Rows ``hash_arrays`` reads at once (keyset pages by id): the Python tuples of one page are the
#: only per-sample objects it makes (~10 MB), whatever the dataset's size.
HASH_PAGE = 50_000


def hash_arrays(session: Session, dataset_id: int, *, page: int | None = None) -> SampleHashes:
    """(ids, sha256 digests) of every sample of the dataset in id order, as arrays, read page by
    page: what de-duplication needs for the whole pool (URIs only for the groups: ``uris``)."""
    page = int(page or HASH_PAGE)
    ids_parts, sha_parts, last = [], [], None
    while True:
        q = select(Sample.id, Sample.sha256).where(Sample.dataset_id == dataset_id)
        if last is not None:
            q = q.where(Sample.id > last)
        rows = fetch_all(session, q.order_by(Sample.id).limit(page))
        if not rows:
            break
        ids_parts.append(np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)))
        sha_parts.append(np.frombuffer(bytes.fromhex("".join(r[1] for r in rows)), dtype="S32"))
        last = int(ids_parts[-1][-1])
        del rows
        if len(ids_parts[-1]) < page:
            break
    if not ids_parts:
        return SampleHashes(ids=np.zeros(0, np.int64), sha256=np.zeros(0, "S32"))
    return SampleHashes(ids=np.concatenate(ids_parts), sha256=np.concatenate(sha_parts))


def truth(session: Session, dataset_id: int | None = None, *, split: str | None = None,
          sample_ids=None, pool_only: bool = False, known_only: bool = False) -> Truth:
    """Ground truth in id order: of the dataset's samples (of ``split``; ``pool_only``: those that copy
    no other sample), or of ``sample_ids``; ``known_only`` leaves out samples without ground truth."""
    if dataset_id is None and sample_ids is None:
        raise ValueError("truth() needs a dataset or sample ids")
    q = select(Sample.id, Sample.gt_label)
    if dataset_id is not None:
        q = q.where(Sample.dataset_id == dataset_id)
    if split:
        q = q.where(Sample.split == split)
    if pool_only:
        q = q.where(Sample.duplicate_of_id.is_(None))
    if known_only:
        q = q.where(Sample.gt_label.is_not(None))
    if sample_ids is None:
        rows = fetch_all(session, q.order_by(Sample.id))
    else:
        rows = []
        for chunk in _chunks(sorted(set(_int_list(sample_ids)))):
            rows += session.execute(q.where(Sample.id.in_(chunk))).all()
        rows.sort()
    return Truth(ids=np.array([r[0] for r in rows], dtype=np.int64), labels=[r[1] for r in rows])


def in_split(session: Session, sample_ids, split: str | None) -> np.ndarray:
    """Those of ``sample_ids`` in ``split`` (all of them when ``split`` is None), ascending."""
    wanted = sorted(set(_int_list(sample_ids)))
    if not split:
        return np.array(wanted, dtype=np.int64)
    out: list[int] = []
    for chunk in _chunks(wanted):
        out += session.scalars(select(Sample.id).where(Sample.id.in_(chunk), Sample.split == split)).all()
    return np.array(sorted(out), dtype=np.int64)


def all_uris(session: Session) -> list[str]:
    """Every sample URI of every dataset (``curator doctor`` matches files against them)."""
    return [r[0] for r in fetch_all(session, select(Sample.uri))]


def stored_uris(session: Session, candidates: Sequence[str]) -> set[str]:
    """The URIs among ``candidates`` that some sample holds."""
    found: set[str] = set()
    for chunk in _chunks(list(candidates)):
        found.update(session.scalars(select(Sample.uri).where(Sample.uri.in_(chunk))))
    return found


# -- scores -----------------------------------------------------------------------------------

def write_scores(session: Session, model_id: int, sample_ids, scores: dict[str, np.ndarray]) -> int:
    """Store ``scores`` (kind -> one value per sample; NaN: none) of ``model_id``, replacing the
    earlier scores of the same (sample, kind, model): scoring twice stores nothing twice. Returns the
    number of rows written."""
    sids = _int_list(sample_ids)
    written = 0
    for kind, values in scores.items():
        values = np.asarray(values, dtype=np.float64)
        for chunk in _chunks(sids):
            session.execute(delete(Score).where(Score.kind == kind, Score.model_id == model_id,
                                                Score.sample_id.in_(chunk)))
        rows = [{"sample_id": i, "kind": kind, "value": float(v), "model_id": model_id}
                for i, v in zip(sids, values) if np.isfinite(v)]
        if rows:
            session.execute(insert(Score), rows)
        written += len(rows)
    return written


# -- ingest -----------------------------------------------------------------------------------

def lock_dataset_name(session: Session, name: str) -> None:
    """Serialise the writers of dataset ``name`` (ingest) until this transaction ends.

    Two ingests into one dataset at once: the second waits for the first and then finds its rows
    (adds nothing), instead of failing on the unique name or URI. PostgreSQL: an advisory lock on
    the name. SQLite: a first statement that writes takes the database's write lock (waiting up to
    the busy timeout; a longer wait is the one-line "database is locked" StoreError).
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": zlib.crc32(f"ingest:{name}".encode())})
    else:
        session.execute(text("UPDATE datasets SET name = name WHERE 0 = 1"))


def find_or_create_dataset(session: Session, name: str) -> tuple[int, list[str]]:
    """(id, classes) of dataset ``name`` (a checked lower-case name), created empty if new."""
    row = session.execute(select(Dataset.id, Dataset.classes).where(func.lower(Dataset.name) == name)
                          .order_by(Dataset.id)).first()
    if row is not None:
        return int(row[0]), [str(c) for c in row[1] or []]
    ds = session.scalar(insert(Dataset).values(name=name).returning(Dataset.id))
    return int(ds), []


def first_of_hashes(session: Session, dataset_id: int) -> dict[str, int]:
    """Content hash -> lowest sample id holding it, in the dataset (exact copies point there)."""
    return dict(fetch_all(session, select(Sample.sha256, func.min(Sample.id))
                          .where(Sample.dataset_id == dataset_id).group_by(Sample.sha256)))


def known_uris(session: Session, dataset_id: int, candidates: Sequence[str]) -> dict[str, str]:
    """URI -> content hash of those of ``candidates`` the dataset holds already."""
    found: dict[str, str] = {}
    for chunk in _chunks(list(candidates)):
        found.update(session.execute(select(Sample.uri, Sample.sha256)
                                     .where(Sample.dataset_id == dataset_id, Sample.uri.in_(chunk))).all())
    return found


def insert_samples(session: Session, dataset_id: int, rows: Iterable[dict]) -> list[int]:
    """Insert samples (dicts of Sample columns without ``dataset_id``); their new ids, in order."""
    rows = [{**r, "dataset_id": dataset_id} for r in rows]
    if not rows:
        return []
    return [int(i) for i in session.scalars(
        insert(Sample).returning(Sample.id, sort_by_parameter_order=True), rows).all()]


def mark_duplicates(session: Session, duplicate_of: dict[int, int]) -> None:
    """Mark sample ``k`` an exact copy of sample ``v`` for each item."""
    if duplicate_of:
        session.execute(update(Sample), [{"id": int(k), "duplicate_of_id": int(v)} for k, v in duplicate_of.items()])
