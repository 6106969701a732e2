"""Versioned labeled sets: immutable versions with lineage, diffs and exports.

A version freezes the agreed labels of a dataset (``store.queries.agreed_labels``,
optionally filtered by split or rounds) under a name. It records its parent,
the rounds, policies and models behind its samples, counts per class and a
checksum over the sorted ``(sample sha256, label)`` pairs (see ``checksum_of``),
so a model trained on it can be traced to exactly what it saw.

Storage is compact: each version stores only its changes against its parent
(added, relabeled, removed samples), and a full snapshot when reading through
the chain of changes would cost more than twice the size of the set; so k
changed labels add O(k) bytes and a read walks at most ~2x the set. Labels
are stored as zlib-compressed arrays (sorted sample ids as gaps, codes into a
small vocabulary; ``LabelVersionBlob``), not one row per label: at a million
labels, row-by-row inserts and reads took tens of seconds on 2 cores, arrays
take about one. Nothing rewrites a version: there is no update function, and
triggers (migrations 0002, 0004, 0006) make the database refuse UPDATE and
DELETE on version tables, anything added to a version once it is sealed, an
INSERT (or SQLite's REPLACE, or an upsert) over an existing version, seal or
blob, and renaming or deleting a dataset that has versions.

What the database cannot refuse (someone who drops the triggers), ``verify``
detects: a version's seal (``seal_digest``, written last when it is created)
is a sha256 over its identity (id, name, dataset id and name, parent and the
parent's seal, message, filters, lineage, counts, size, creation time) and its
content checksum, so a renamed version, one replaced by another, or an edited
ancestor no longer matches its seal. The seal has no secret key: it detects
changes made behind the database's back, not a forger who recomputes it.
Creation runs in one transaction that first locks the dataset row, so two
processes creating versions at once get serial results (the second's parent
is the first) or a clear error, never a half-written version.

Exports: ``export_numpy``, ``torch_dataset`` / ``export_torch``,
``export_manifest`` (re-imported by ``import_manifest`` to the same
checksum); a FiftyOne dataset of a version comes from the FiftyOne
integration, ``curator.integrations.fiftyone.sync(settings, dataset,
version=NAME)`` (``curator version export NAME --format fiftyone``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import hashlib
import json
import os
import tempfile
import zlib
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from curator.exceptions import NotFoundError, StoreError, ValidationError
from curator.names import dataset_name, version_name

#: ``parent=LATEST`` (the default) derives from the newest version with the same filters.
LATEST = "@latest"
MANIFEST_FORMAT = "curator-version-manifest/1"
SEAL_FORMAT = "curator-version-seal/1"


# --------------------------------------------------------------------------- results


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
class LabeledSet:
    """The members of a version, sorted by sample id."""

    version: str
    checksum: str
    sample_ids: np.ndarray
    labels: list[str]

    def __len__(self) -> int:
        return len(self.sample_ids)

    def as_dict(self) -> dict[int, str]:
        return dict(zip(self.sample_ids.tolist(), self.labels))


@dataclasses.dataclass(frozen=True)
class VersionDiff:
    """Changes from version ``a`` to version ``b`` (lists sorted by sample id)."""

    a: str
    b: str
    added: list[tuple[int, str]]
    removed: list[tuple[int, str]]
    relabeled: list[tuple[int, str, str]]
    per_class: dict[str, dict[str, int]]

    @property
    def unchanged(self) -> bool:
        return not (self.added or self.removed or self.relabeled)

    def as_dict(self, limit: int | None = None) -> dict:
        cut = slice(None) if limit is None else slice(limit)
        return {
            "a": self.a,
            "b": self.b,
            "counts": {"added": len(self.added), "removed": len(self.removed), "relabeled": len(self.relabeled)},
            "added": [{"sample_id": s, "label": lab} for s, lab in self.added[cut]],
            "removed": [{"sample_id": s, "label": lab} for s, lab in self.removed[cut]],
            "relabeled": [{"sample_id": s, "from": a, "to": b} for s, a, b in self.relabeled[cut]],
            "per_class": self.per_class,
        }


@dataclasses.dataclass(frozen=True)
class VerifyReport:
    version: str
    ok: bool
    stored_checksum: str
    computed_checksum: str
    size: int
    problems: list[str]

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- pure helpers


def checksum_of(pairs: Iterable[tuple[str, str]]) -> str:
    """sha256 over the sorted lines ``"<sample sha256>\\t<label>\\n"`` of a labeled set.

    Depends only on content and labels, never on ids, so the same set
    re-imported into another database has the same checksum. (The reference
    definition; versions compute the same value with ``_checksum``.)
    """
    h = hashlib.sha256()
    lines = sorted(f"{sha}\t{label}\n" for sha, label in pairs)
    for start in range(0, len(lines), 65536):
        h.update("".join(lines[start : start + 65536]).encode())
    return h.hexdigest()


def _checksum(shas: Sequence[str] | np.ndarray, codes: np.ndarray, vocab: Sequence[str]) -> str:
    """``checksum_of`` for arrays: the sort runs in NumPy over 64-byte keys (a million pairs in about a second)."""
    suffix = [f"\t{v}\n".encode() for v in vocab]
    rank = np.empty(len(vocab), dtype=np.int64)
    rank[sorted(range(len(vocab)), key=lambda i: suffix[i])] = np.arange(len(vocab))
    sha = np.array(shas, dtype="S64")  # hex digests: ASCII, so bytes order = str order
    order = np.lexsort((rank[codes], sha)) if len(sha) else np.zeros(0, dtype=np.int64)
    h = hashlib.sha256()
    for start in range(0, len(order), 1 << 18):
        part = order[start : start + (1 << 18)]
        h.update(b"".join(map(bytes.__add__, sha[part].tolist(), map(suffix.__getitem__, codes[part].tolist()))))
    return h.hexdigest()


def check_name(name: str, what: str = "name") -> str:
    """A new version name, normalised (``curator.names.version_name``: one check for all names)."""
    return version_name(name)


#: The columns of ``label_versions`` a seal covers (with the dataset's name and the parent's seal).
SEALED_COLUMNS = (
    "id", "dataset_id", "name", "message", "parent_id", "checksum", "size", "counts",
    "lineage", "filters", "changes", "snapshot", "chain_rows", "created_at",
)


def _canonical(value):
    """A value as the seal sees it, whatever the driver returned (aware or naive UTC times, 0/1 booleans)."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return value.isoformat(timespec="microseconds")
    if isinstance(value, bool) or value is None or isinstance(value, (str, dict, list)):
        return value
    return int(value) if isinstance(value, (int, np.integer)) else value


def seal_digest(row: dict, dataset: str, parent_seal: str | None) -> str:
    """The seal of a version: sha256 over its identity and its content checksum.

    ``row`` maps ``SEALED_COLUMNS`` to the stored values. The parent's seal is
    part of it, so replacing or editing any ancestor breaks its descendants'
    seals too.
    """
    fields = {k: _canonical(row[k]) for k in SEALED_COLUMNS}
    fields["snapshot"] = bool(fields["snapshot"])
    fields.update(format=SEAL_FORMAT, dataset=dataset, parent_seal=parent_seal)
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _ordered_counts(counts: dict[str, int], classes: Sequence[str]) -> dict[str, int]:
    """Counts in the dataset's class order, then other labels (numbers numerically)."""
    from curator.ingest._common import sort_classes

    known = [c for c in classes if counts.get(c)]
    rest = sort_classes({c for c, n in counts.items() if n} - set(known))
    return {c: int(counts[c]) for c in known + rest}


@dataclasses.dataclass(frozen=True)
class _Labels:
    """A labeled set as arrays: sorted unique sample ids, codes into ``vocab``.

    In a delta, a vocabulary entry ``None`` marks a removed sample.
    """

    ids: np.ndarray
    codes: np.ndarray
    vocab: tuple

    @classmethod
    def empty(cls) -> "_Labels":
        return cls(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), ())

    @classmethod
    def from_dict(cls, labels: dict[int, str | None]) -> "_Labels":
        vocab = tuple(dict.fromkeys(labels.values()))
        index = {v: i for i, v in enumerate(vocab)}
        ids = np.fromiter(labels.keys(), dtype=np.int64, count=len(labels))
        codes = np.fromiter(map(index.__getitem__, labels.values()), dtype=np.int64, count=len(labels))
        order = np.argsort(ids, kind="stable")
        return cls(ids[order], codes[order], vocab)

    def __len__(self) -> int:
        return len(self.ids)

    def labels(self) -> list:
        return [self.vocab[c] for c in self.codes.tolist()]

    def to_dict(self) -> dict[int, str]:
        return dict(zip(self.ids.tolist(), self.labels()))

    def counts(self) -> dict[str, int]:
        n = np.bincount(self.codes, minlength=len(self.vocab)) if len(self.codes) else np.zeros(len(self.vocab), int)
        return {v: int(k) for v, k in zip(self.vocab, n) if k and v is not None}

    def recode(self, vocab: tuple) -> np.ndarray:
        """Codes of this set in a larger vocabulary holding all of ours."""
        pos = {v: i for i, v in enumerate(vocab)}
        table = np.array([pos[v] for v in self.vocab], dtype=np.int64)
        return table[self.codes] if len(self.codes) else self.codes


def _shared_vocab(*sets: _Labels) -> tuple:
    return tuple(dict.fromkeys(v for s in sets for v in s.vocab))


def _apply(base: _Labels, delta: _Labels) -> _Labels:
    """``base`` with the changes of ``delta`` applied (vectorised: a million labels in well under a second)."""
    if not len(delta):
        return base
    vocab = _shared_vocab(base, delta)
    keep = ~np.isin(base.ids, delta.ids, assume_unique=True)
    dcodes = delta.recode(vocab)
    live = dcodes != vocab.index(None) if None in vocab else np.ones(len(dcodes), dtype=bool)
    ids = np.concatenate([base.ids[keep], delta.ids[live]])
    codes = np.concatenate([base.recode(vocab)[keep], dcodes[live]])
    order = np.argsort(ids, kind="stable")
    return _Labels(ids[order], codes[order], vocab)


def _compare(old: _Labels, new: _Labels) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple, np.ndarray, np.ndarray]:
    """(added, removed, relabeled) sample ids from ``old`` to ``new``, the shared
    vocabulary, and the codes of both sets in it."""
    vocab = _shared_vocab(old, new)
    co, cn = old.recode(vocab), new.recode(vocab)
    pos = np.searchsorted(old.ids, new.ids)
    clipped = np.minimum(pos, max(len(old.ids) - 1, 0))
    found = (pos < len(old.ids)) & (old.ids[clipped] == new.ids) if len(old.ids) else np.zeros(len(new.ids), bool)
    relabeled = found.copy()
    relabeled[found] = co[clipped[found]] != cn[found]
    removed = old.ids[~np.isin(old.ids, new.ids, assume_unique=True)]
    return new.ids[~found], removed, new.ids[relabeled], vocab, co, cn


def _delta_of(old: _Labels, new: _Labels) -> tuple[_Labels, dict[str, int]]:
    added, removed, relabeled, vocab, _, cn = _compare(old, new)
    vocab = vocab + ((None,) if None not in vocab else ())
    changed = np.isin(new.ids, np.concatenate([added, relabeled]), assume_unique=True)
    ids = np.concatenate([new.ids[changed], removed])
    codes = np.concatenate([cn[changed], np.full(len(removed), vocab.index(None), dtype=np.int64)])
    order = np.argsort(ids, kind="stable")
    changes = {"added": len(added), "relabeled": len(relabeled), "removed": len(removed)}
    return _Labels(ids[order], codes[order], vocab), changes


CHUNK = 1 << 20


def _encode(labels: _Labels) -> list[tuple[int, int, bytes, bytes, list]]:
    """(chunk, count, zlib(int64 id gaps), zlib(uint32 codes), vocabulary) per 2^20 entries."""
    out = []
    for k, start in enumerate(range(0, len(labels), CHUNK)):
        ids = labels.ids[start : start + CHUNK]
        gaps = np.diff(ids, prepend=np.int64(0)).astype("<i8")
        codes = labels.codes[start : start + CHUNK].astype("<u4")
        out.append((k, len(ids), zlib.compress(gaps.tobytes()), zlib.compress(codes.tobytes()), list(labels.vocab)))
    return out


def _decode(chunks: Iterable[tuple[bytes, bytes, list]]) -> _Labels:
    parts = [
        _Labels(
            np.cumsum(np.frombuffer(zlib.decompress(ids), dtype="<i8")).astype(np.int64),
            np.frombuffer(zlib.decompress(codes), dtype="<u4").astype(np.int64),
            tuple(vocab),
        )
        for ids, codes, vocab in chunks
    ]
    if not parts:
        return _Labels.empty()
    if len(parts) == 1:
        return parts[0]
    vocab = _shared_vocab(*parts)
    return _Labels(np.concatenate([p.ids for p in parts]), np.concatenate([p.recode(vocab) for p in parts]), vocab)


# --------------------------------------------------------------------------- store access


@dataclasses.dataclass(frozen=True)
class _V:
    id: int
    name: str
    parent_id: int | None
    snapshot: bool
    size: int
    chain_rows: int
    checksum: str
    counts: dict
    filters: dict


def _resolve_dataset(s, dataset: str | None) -> tuple[int, str]:
    from sqlalchemy import select

    from curator.store.models import Dataset
    from curator.store.queries import dataset_id

    if dataset is not None:
        return dataset_id(s, dataset), dataset
    rows = s.execute(select(Dataset.id, Dataset.name).order_by(Dataset.name)).all()
    if len(rows) == 1:
        return rows[0][0], rows[0][1]
    if not rows:
        raise NotFoundError("no dataset exists yet; create one with: curator ingest PATH --dataset NAME")
    raise ValidationError(
        f"dataset: several exist ({', '.join(r[1] for r in rows)}); pass --dataset NAME"
    )


def _lock_dataset(s, dataset: str | None) -> tuple[int, str]:
    """Take the dataset's write lock before reading anything (serialises creators).

    A no-op UPDATE locks the row on PostgreSQL and takes the database write
    lock on SQLite; reads that follow see every version committed before.
    """
    from sqlalchemy import update

    from curator.store.models import Dataset

    if dataset is None:
        _, dataset = _resolve_dataset(s, None)
    from sqlalchemy import func

    from curator.names import dataset_name

    s.execute(update(Dataset).where(func.lower(Dataset.name) == dataset_name(dataset)).values(name=Dataset.name))
    return _resolve_dataset(s, dataset)  # NotFoundError naming the known datasets when absent


def _versions(s, ds: int) -> dict[int, _V]:
    from sqlalchemy import select

    from curator.store.models import LabelVersion as LV

    rows = s.execute(
        select(LV.id, LV.name, LV.parent_id, LV.snapshot, LV.size, LV.chain_rows, LV.checksum, LV.counts, LV.filters)
        .where(LV.dataset_id == ds)
        .order_by(LV.id)
    ).all()
    return {r[0]: _V(*r[:7], r[7] or {}, r[8] or {}) for r in rows}


def _by_name(versions: dict[int, _V], name: str, dataset: str) -> _V:
    """The version called ``name`` (names are case-insensitive; see ``curator.names``)."""
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


def _identity_rows(s, ds: int | None = None) -> list[dict]:
    """Every version (of dataset ``ds``, or all) as the seal sees it, with its dataset's
    name and its stored seal digest, oldest first. ``s``: a Session or a Connection."""
    from sqlalchemy import select

    from curator.store.models import Dataset, LabelVersion as LV, LabelVersionSeal as Seal

    stmt = (
        select(*(getattr(LV, c) for c in SEALED_COLUMNS), Dataset.name.label("dataset"),
               Seal.version_id.label("sealed"), Seal.digest.label("digest"))
        .join(Dataset, Dataset.id == LV.dataset_id)
        .outerjoin(Seal, Seal.version_id == LV.id)
        .order_by(LV.id)
    )
    if ds is not None:
        stmt = stmt.where(LV.dataset_id == ds)
    return [dict(r._mapping) for r in s.execute(stmt)]


def seal_existing(connection) -> int:
    """Write the digest of every seal that has none (migration 0006 seals older versions
    with their identity as it is then). Returns how many were sealed."""
    from sqlalchemy import update

    from curator.store.models import LabelVersionSeal as Seal

    rows = _identity_rows(connection)
    digests = {r["id"]: r["digest"] for r in rows}
    done = 0
    for r in rows:  # oldest first: a parent is sealed before its children
        if r["sealed"] is None or r["digest"] is not None:
            continue
        digests[r["id"]] = seal_digest(r, r["dataset"], digests.get(r["parent_id"]))
        connection.execute(update(Seal).where(Seal.version_id == r["id"]).values(digest=digests[r["id"]]))
        done += 1
    return done


def _identity_problems(s, ds: int, vid: int) -> list[str]:
    """What no longer matches the seals of version ``vid`` and of its ancestors."""
    rows = {r["id"]: r for r in _identity_rows(s, ds)}
    problems = []
    seen = set()
    while vid is not None and vid not in seen:
        seen.add(vid)
        r = rows.get(vid)
        if r is None:
            problems.append(f"version id {vid} (an ancestor) is missing from dataset; a version was deleted or moved")
            break
        parent = rows.get(r["parent_id"])
        if r["sealed"] is not None and r["digest"] is None:
            problems.append(f"version {r['name']!r} has a seal without a digest; its identity cannot be checked")
        elif r["digest"] is not None:
            expected = seal_digest(r, r["dataset"], parent["digest"] if parent else None)
            if expected != r["digest"]:
                problems.append(
                    f"version {r['name']!r} (id {vid}) does not match its seal: its name, dataset, parent, "
                    "checksum or another recorded field changed after it was created, or another row replaced it"
                )
        vid = r["parent_id"]
    return problems


def _fetch(s, stmt) -> list[tuple]:
    from curator.store.queries import fetch_all

    return fetch_all(s, stmt)


def _load(s, vid: int, kind: str) -> _Labels:
    from sqlalchemy import select

    from curator.store.models import LabelVersionBlob as B

    rows = s.execute(
        select(B.sample_ids, B.labels, B.vocabulary).where(B.version_id == vid, B.kind == kind).order_by(B.chunk)
    ).all()
    return _decode(rows)


def _chain(versions: dict[int, _V], vid: int) -> tuple[list[int], int]:
    """Versions whose changes lead from the nearest snapshot to ``vid`` (newest first), and that snapshot."""
    chain = []
    while not versions[vid].snapshot:
        chain.append(vid)
        vid = versions[vid].parent_id
    return chain, vid


def _reconstruct(s, versions: dict[int, _V], vid: int) -> _Labels:
    chain, base = _chain(versions, vid)
    labels = _load(s, base, "snapshot")
    for v in reversed(chain):
        labels = _apply(labels, _load(s, v, "delta"))
    return labels


def _current_labels(s, ds: int, split: Sequence[str] | None, rounds: Sequence[int] | None) -> dict[int, str]:
    from sqlalchemy import select

    from curator.store.models import Round, RoundItem, Sample
    from curator.store.queries import agreed_labels

    labels = {sid: lab for sid, (lab, _, _) in agreed_labels(s, ds).items()}
    if split:
        keep = {r[0] for r in _fetch(s, select(Sample.id).where(Sample.dataset_id == ds, Sample.split.in_(list(split))))}
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


def _hashes_of(s, ds: int, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """sha256 (hex, as bytes) of each sample in ``ids`` (sorted), and the ids that are not samples of the dataset."""
    from sqlalchemy import select

    from curator.store.models import Sample

    rows = _fetch(s, select(Sample.id, Sample.sha256).where(Sample.dataset_id == ds))  # sorted below, in NumPy
    known = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    shas = np.array([r[1] for r in rows] + [""], dtype="S64")  # the last entry stands for "missing"
    order = np.argsort(known, kind="stable")
    known, shas = known[order], np.append(shas[order], shas[-1:])
    pos = np.searchsorted(known, ids)
    clipped = np.minimum(pos, max(len(known) - 1, 0))
    ok = (pos < len(known)) & (known[clipped] == ids) if len(known) else np.zeros(len(ids), bool)
    return shas[np.where(ok, clipped, len(known))], ids[~ok]


def _lineage(s, ds: int, members: _Labels) -> dict[str, Any]:
    """Rounds, policies and models that selected the version's samples (RoundItem -> Round -> Model)."""
    from sqlalchemy import select

    from curator.store.models import Model, Round, RoundItem

    items = _fetch(
        s,
        select(RoundItem.round_id, RoundItem.sample_id)
        .join(Round, Round.id == RoundItem.round_id)
        .where(Round.dataset_id == ds),
    )
    rids = np.fromiter((r[0] for r in items), dtype=np.int64, count=len(items))
    sids = np.fromiter((r[1] for r in items), dtype=np.int64, count=len(items))
    inside = np.isin(sids, members.ids)
    per_round = Counter(rids[inside].tolist())
    covered = len(np.unique(sids[inside]))
    rounds, policies, models = [], set(), {}
    if per_round:
        rows = s.execute(
            select(Round.id, Round.number, Round.policy, Round.params, Round.seed, Model.name, Model.version, Model.checksum)
            .outerjoin(Model, Model.id == Round.model_id)
            .where(Round.id.in_(list(per_round)))
            .order_by(Round.number)
        ).all()
        for rid, number, policy, params, seed, mname, mversion, mchecksum in rows:
            model = None if mname is None else f"{mname}:{mversion}"
            if model:
                models[model] = {"name": mname, "version": mversion, "checksum": mchecksum}
            policies.add(policy)
            rounds.append({
                "number": number, "policy": policy, "params": params, "seed": seed,
                "model": model, "samples": per_round[rid],
            })
    return {
        "rounds": rounds,
        "policies": sorted(policies),
        "models": [models[k] for k in sorted(models)],
        "outside_rounds": len(members) - covered,
    }


def _store(s, vid: int, kind: str, labels: _Labels) -> None:
    from sqlalchemy import insert

    from curator.store.models import LabelVersionBlob

    rows = [
        {"version_id": vid, "kind": kind, "chunk": k, "count": n, "sample_ids": ids, "labels": codes, "vocabulary": vocab}
        for k, n, ids, codes, vocab in _encode(labels)
    ]
    if rows:
        s.execute(insert(LabelVersionBlob), rows)


def _info(s, ds_name: str, vid: int) -> VersionInfo:
    from sqlalchemy import select
    from sqlalchemy.orm import aliased

    from curator.store.models import LabelVersion as LV

    P = aliased(LV)
    v, parent = s.execute(select(LV, P.name).outerjoin(P, P.id == LV.parent_id).where(LV.id == vid)).one()
    return VersionInfo(
        id=v.id, dataset=ds_name, name=v.name, message=v.message, parent=parent,
        created_at=v.created_at.isoformat() if v.created_at else "", size=v.size, checksum=v.checksum,
        counts=dict(v.counts or {}), lineage=dict(v.lineage or {}), filters=dict(v.filters or {}),
        changes=dict(v.changes or {}), snapshot=bool(v.snapshot), chain_rows=v.chain_rows,
    )


# --------------------------------------------------------------------------- session-level API


def create(
    s,
    name: str,
    *,
    dataset: str | None = None,
    message: str | None = None,
    parent: str | None = LATEST,
    split: Sequence[str] | None = None,
    rounds: Sequence[int] | None = None,
    labels: dict[int, str] | None = None,
    source: str | None = None,
) -> VersionInfo:
    """Freeze labels into a new version inside the caller's transaction.

    ``labels`` (sample_id -> label) replaces the agreed labels; it is how a
    manifest is re-imported. ``parent=None`` starts a new line of versions.
    """
    from sqlalchemy import insert

    from curator.store.models import LabelVersion
    from curator.store.queries import dataset_classes

    name = version_name(name)
    ds, ds_name = _lock_dataset(s, dataset)
    versions = _versions(s, ds)
    if any(v.name.lower() == name for v in versions.values()):
        raise ValidationError(
            f"version {name!r} already exists in dataset {ds_name!r}; versions are immutable, choose another name"
        )
    filters = {k: v for k, v in (("split", sorted(split or [])), ("rounds", sorted(rounds or []))) if v}
    if source:
        filters["source"] = source
    if labels is None:
        labels = _current_labels(s, ds, split, rounds)
    if not labels:
        where = f" matching {filters}" if filters else ""
        raise ValidationError(
            f"nothing to version: dataset {ds_name!r} has no agreed labels{where}; "
            "pull annotations first (curator pull) or change --split/--round"
        )
    if parent == LATEST:
        same = [v for v in versions.values() if v.filters == filters]
        pv = (same or list(versions.values()) or [None])[-1]
    elif parent is None:
        pv = None
    else:
        pv = _by_name(versions, version_name(parent), ds_name)
    new = _Labels.from_dict(labels)
    old = _reconstruct(s, versions, pv.id) if pv else _Labels.empty()
    delta, changes = _delta_of(old, new)

    shas, unknown = _hashes_of(s, ds, new.ids)
    if len(unknown):
        raise ValidationError(f"labels: sample ids {unknown[:5].tolist()} are not samples of dataset {ds_name!r}")
    size = len(new)
    chain_rows = (pv.chain_rows + len(delta)) if pv else size
    snapshot = pv is None or chain_rows > 2 * size
    if snapshot:
        chain_rows = size
    vid = s.scalar(
        insert(LabelVersion)
        .values(
            dataset_id=ds, name=name, message=message, parent_id=pv.id if pv else None,
            checksum=_checksum(shas, new.codes, new.vocab), size=size,
            counts=_ordered_counts(new.counts(), dataset_classes(s, ds_name)), lineage=_lineage(s, ds, new),
            filters=filters, changes=changes, snapshot=snapshot, chain_rows=chain_rows,
        )
        .returning(LabelVersion.id)
    )
    if pv:
        _store(s, vid, "delta", delta)
    if snapshot:
        _store(s, vid, "snapshot", new)
    _seal(s, ds, vid)
    return _info(s, ds_name, vid)


def _seal(s, ds: int, vid: int) -> None:
    """Seal version ``vid`` last, over its row as stored (so verify recomputes the same digest)."""
    from sqlalchemy import insert

    from curator.store.models import LabelVersionSeal

    rows = {r["id"]: r for r in _identity_rows(s, ds)}
    row = rows[vid]
    parent = rows.get(row["parent_id"])
    digest = seal_digest(row, row["dataset"], parent["digest"] if parent else None)
    s.execute(insert(LabelVersionSeal).values(version_id=vid, digest=digest))


def versions_of(s, dataset: str | None = None) -> list[VersionInfo]:
    from sqlalchemy import select

    from curator.store.models import LabelVersion as LV

    ds, ds_name = _resolve_dataset(s, dataset)
    return [_info(s, ds_name, vid) for vid in s.scalars(select(LV.id).where(LV.dataset_id == ds).order_by(LV.id))]


def info(s, name: str, dataset: str | None = None) -> VersionInfo:
    ds, ds_name = _resolve_dataset(s, dataset)
    return _info(s, ds_name, _by_name(_versions(s, ds), name, ds_name).id)


def read(s, name: str, dataset: str | None = None) -> LabeledSet:
    ds, ds_name = _resolve_dataset(s, dataset)
    versions = _versions(s, ds)
    v = _by_name(versions, name, ds_name)
    labels = _reconstruct(s, versions, v.id)
    return LabeledSet(v.name, v.checksum, labels.ids, labels.labels())


def diff(s, a: str, b: str, dataset: str | None = None) -> VersionDiff:
    """Added, removed and relabeled samples from ``a`` to ``b``, and per-class changes."""
    ds, ds_name = _resolve_dataset(s, dataset)
    versions = _versions(s, ds)
    va, vb = _by_name(versions, a, ds_name), _by_name(versions, b, ds_name)
    la, lb = _reconstruct(s, versions, va.id), _reconstruct(s, versions, vb.id)
    added, removed, relabeled, vocab, ca, cb = _compare(la, lb)
    changed_a = np.isin(la.ids, np.concatenate([removed, relabeled]))
    label_a = dict(zip(la.ids[changed_a].tolist(), (vocab[c] for c in ca[changed_a].tolist())))
    changed_b = np.isin(lb.ids, np.concatenate([added, relabeled]))
    label_b = dict(zip(lb.ids[changed_b].tolist(), (vocab[c] for c in cb[changed_b].tolist())))
    added_l = [(sid, label_b[sid]) for sid in added.tolist()]
    removed_l = [(sid, label_a[sid]) for sid in removed.tolist()]
    relabeled_l = [(sid, label_a[sid], label_b[sid]) for sid in relabeled.tolist()]
    per_class: dict[str, dict[str, int]] = {}
    for cls in list(va.counts) + [c for c in vb.counts if c not in va.counts]:
        per_class[cls] = {
            "a": va.counts.get(cls, 0), "b": vb.counts.get(cls, 0),
            "change": vb.counts.get(cls, 0) - va.counts.get(cls, 0),
            "added": 0, "removed": 0, "relabeled_in": 0, "relabeled_out": 0,
        }
    for _, lab in added_l:
        per_class[lab]["added"] += 1
    for _, lab in removed_l:
        per_class[lab]["removed"] += 1
    for _, old, new in relabeled_l:
        per_class[old]["relabeled_out"] += 1
        per_class[new]["relabeled_in"] += 1
    return VersionDiff(va.name, vb.name, added_l, removed_l, relabeled_l, per_class)


def verify(s, name: str, dataset: str | None = None, files: bool = False) -> VerifyReport:
    """Recompute a version's checksum, size and counts from its stored blobs (and,
    with ``files``, re-hash the sample files) and report every difference."""
    from sqlalchemy import select

    from curator.store.models import LabelVersionSeal, Sample

    ds, ds_name = _resolve_dataset(s, dataset)
    versions = _versions(s, ds)
    v = _by_name(versions, name, ds_name)
    problems = _identity_problems(s, ds, v.id)
    sealed = set(s.scalars(select(LabelVersionSeal.version_id).where(LabelVersionSeal.version_id.in_(list(versions)))))
    try:
        chain, base = _chain(versions, v.id)
    except KeyError:
        problems.append(f"the chain of changes behind version {v.name!r} is broken (an ancestor is missing)")
        return VerifyReport(v.name, False, v.checksum, "", 0, problems)
    for vid in chain + [base]:
        if vid not in sealed:
            problems.append(f"version {versions[vid].name!r} has no seal (its creation did not finish)")
    try:
        labels = _reconstruct(s, versions, v.id)
    except (zlib.error, IndexError, ValueError, TypeError, KeyError) as exc:
        problems.append(f"stored labels cannot be decoded ({exc}); the version was damaged")
        return VerifyReport(v.name, False, v.checksum, "", 0, problems)
    shas, missing = _hashes_of(s, ds, labels.ids)
    if len(missing):
        problems.append(f"{len(missing)} members are no longer samples of the dataset (e.g. {missing[:5].tolist()})")
    computed = _checksum(shas, labels.codes, labels.vocab)
    if computed != v.checksum:
        problems.append(f"checksum differs: stored {v.checksum}, computed {computed}")
    if len(labels) != v.size:
        problems.append(f"size differs: stored {v.size}, computed {len(labels)}")
    counts = labels.counts()
    if counts != {k: n for k, n in v.counts.items()}:
        problems.append(f"counts per class differ: stored {v.counts}, computed {counts}")
    if files:
        uris = dict(_fetch(s, select(Sample.id, Sample.uri).where(Sample.dataset_id == ds)))
        bad = []
        for sid, sha in zip(labels.ids.tolist(), shas):
            try:
                digest = hashlib.sha256(Path(uris[sid]).read_bytes()).hexdigest()
            except (OSError, KeyError):
                digest = None
            if digest != sha.decode():
                bad.append(uris.get(sid, str(sid)))
        if bad:
            problems.append(f"{len(bad)} sample files are missing or changed on disk (e.g. {bad[:3]})")
    return VerifyReport(v.name, not problems, v.checksum, computed, len(labels), problems)


@dataclasses.dataclass(frozen=True)
class Member:
    sample_id: int
    uri: str
    sha256: str
    label: str
    height: int
    width: int
    channels: int


def members(s, name: str, dataset: str | None = None) -> tuple[VersionInfo, list[Member], list[str]]:
    """A version's members with their files, and its class list (dataset order first)."""
    from sqlalchemy import select

    from curator.store.models import Sample
    from curator.store.queries import dataset_classes

    ds, ds_name = _resolve_dataset(s, dataset)
    versions = _versions(s, ds)
    v = _by_name(versions, name, ds_name)
    labels = _reconstruct(s, versions, v.id).to_dict()
    rows = _fetch(
        s,
        select(Sample.id, Sample.uri, Sample.sha256, Sample.height, Sample.width, Sample.channels)
        .where(Sample.dataset_id == ds)
        .order_by(Sample.id),
    )
    out = [Member(sid, uri, sha, labels[sid], h, w, c) for sid, uri, sha, h, w, c in rows if sid in labels]
    classes = list(_ordered_counts(Counter(labels.values()), dataset_classes(s, ds_name)))
    return _info(s, ds_name, v.id), out, classes


# --------------------------------------------------------------------------- public API (one transaction each)


def _tx(settings):
    from curator.settings import load_settings
    from curator.store.session import transaction

    return transaction(settings or load_settings())


def create_version(name: str, *, dataset: str | None = None, message: str | None = None,
                   parent: str | None = LATEST, split: Sequence[str] | str | None = None,
                   rounds: Sequence[int] | None = None, settings=None) -> VersionInfo:
    """Freeze the dataset's current agreed labels as version ``name`` (one transaction)."""
    from sqlalchemy.exc import IntegrityError, OperationalError

    if isinstance(split, str):
        split = [split]
    try:
        with _tx(settings) as s:
            return create(s, name, dataset=dataset, message=message, parent=parent, split=split, rounds=rounds)
    except IntegrityError as exc:
        raise StoreError(
            f"version {name!r} was not created: the database refused it ({_first_line(exc)}); "
            "another process may have created it at the same time, run `curator version list`"
        ) from None
    except OperationalError as exc:
        raise StoreError(f"version {name!r} was not created: {_first_line(exc)}; nothing was written, retry") from None


def _first_line(exc) -> str:
    orig = getattr(exc, "orig", None) or exc
    return str(orig).strip().splitlines()[0]


def list_versions(*, dataset: str | None = None, settings=None) -> list[VersionInfo]:
    with _tx(settings) as s:
        return versions_of(s, dataset)


def show_version(name: str, *, dataset: str | None = None, settings=None) -> VersionInfo:
    with _tx(settings) as s:
        return info(s, name, dataset)


def read_version(name: str, *, dataset: str | None = None, settings=None) -> LabeledSet:
    """The full labeled set of a version, sorted by sample id."""
    with _tx(settings) as s:
        return read(s, name, dataset)


def diff_versions(a: str, b: str, *, dataset: str | None = None, settings=None) -> VersionDiff:
    with _tx(settings) as s:
        return diff(s, a, b, dataset)


def verify_version(name: str, *, dataset: str | None = None, files: bool = False, settings=None) -> VerifyReport:
    with _tx(settings) as s:
        return verify(s, name, dataset, files)


# --------------------------------------------------------------------------- exports


_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


def _pixels(m: Member) -> np.ndarray:
    """A member's image as uint8 (h, w) or (h, w, c), decoded by ``curator.images``."""
    from curator.images import load_image

    return load_image(m.uri, _MODES[m.channels])


def export_manifest(name: str, path: str | Path | None = None, *, dataset: str | None = None,
                    settings=None) -> dict:
    """A JSON manifest (sample URI, sha256, label per member); written to ``path`` if given.

    ``checksum`` covers the labels of its items, ``seal`` (``manifest_seal``) every
    field; ``import_manifest`` refuses a manifest that no longer matches either.
    """
    if path is not None:
        _check_out(Path(path))
    with _tx(settings) as s:
        info_, items, classes = members(s, name, dataset)
    doc = {
        "format": MANIFEST_FORMAT,
        "dataset": info_.dataset,
        "version": info_.name,
        "message": info_.message,
        "parent": info_.parent,
        "checksum": info_.checksum,
        "size": info_.size,
        "classes": classes,
        "counts": info_.counts,
        "lineage": info_.lineage,
        "items": [{"uri": m.uri, "sha256": m.sha256, "label": m.label} for m in items],
    }
    doc["seal"] = manifest_seal(doc)
    if path is not None:
        data = json.dumps(doc, indent=1).encode()
        _write_atomic(Path(path), lambda fh: fh.write(data))
    return doc


def manifest_seal(doc: dict) -> str:
    """sha256 over every field of a manifest but ``seal`` (canonical JSON), so an edited
    name, dataset, parent, count or item is seen even where the checksum still matches."""
    body = {k: v for k, v in doc.items() if k != "seal"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()).hexdigest()


def _check_out(path: Path) -> None:
    """Refuse an output path that cannot be a file, before any work is done."""
    if path.is_dir():
        raise ValidationError(f"output {path} is a folder; give the path of a file (in it or elsewhere)")
    parent = next((p for p in (path.parent, *path.parent.parents) if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ValidationError(f"output {path}: {parent} is a file, not a folder; choose another path")
    if parent is not None and not os.access(parent, os.W_OK | os.X_OK):
        raise ValidationError(f"output {path}: folder {parent} is not writable (permission denied); choose another path")


def _write_atomic(path: Path, write) -> None:
    """Write through ``write(binary file)`` to a temporary file beside ``path``, then rename it
    into place: a failure leaves neither a partial file nor the temporary one (nor folders made for it)."""
    _check_out(path)
    made = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
    tmp, done = None, False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # as a plain open() would have made it
        os.replace(tmp, path)
        done = True
    except OSError as exc:
        raise ValidationError(f"output {path} cannot be written ({exc.strerror or exc}); choose another path") from None
    finally:
        if not done:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            for folder in made:  # innermost first
                with contextlib.suppress(OSError):
                    folder.rmdir()


_HEX = frozenset("0123456789abcdef")


def _read_manifest(path: Path) -> dict:
    """The manifest at ``path``, its shape checked item by item (nothing is written yet)."""
    try:
        doc = json.loads(Path(path).read_bytes())
    except FileNotFoundError:
        raise ValidationError(f"manifest {path} does not exist; check the path") from None
    except IsADirectoryError:
        raise ValidationError(f"manifest {path} is a folder; give the .json file written by version export") from None
    except PermissionError:
        raise ValidationError(f"manifest {path} cannot be read: permission denied; check its permissions") from None
    except (OSError, ValueError) as exc:
        raise ValidationError(f"manifest {path} is not readable JSON ({_short(exc)}); it is damaged or not a manifest") from None
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT or not isinstance(doc.get("items"), list):
        raise ValidationError(
            f"manifest {path} is not a curator version manifest (expected format {MANIFEST_FORMAT!r} "
            "with an items list); write one with: curator version export NAME --format manifest"
        )
    for key in ("dataset", "version", "message", "checksum", "seal"):
        if doc.get(key) is not None and not isinstance(doc[key], str):
            raise ValidationError(f"manifest {path}: {key!r} must be a string; got {doc[key]!r}")
    if not doc["items"]:
        raise ValidationError(f"manifest {path} lists no items; a version cannot be empty")
    uris = set()
    for i, item in enumerate(doc["items"]):
        if not isinstance(item, dict) or not all(isinstance(item.get(k), str) for k in ("uri", "sha256", "label")):
            raise ValidationError(f"manifest {path}: item {i} needs string uri, sha256 and label; got {_short(item)}")
        if len(item["sha256"]) != 64 or not _HEX.issuperset(item["sha256"]):
            raise ValidationError(f"manifest {path}: item {i} has sha256 {_short(item['sha256'])}, not 64 hex digits")
        if not item["uri"] or item["uri"] in uris:
            raise ValidationError(f"manifest {path}: item {i} has an empty or repeated uri {_short(item['uri'])}")
        uris.add(item["uri"])
    return doc


def _short(value, n: int = 60) -> str:
    text = repr(value) if not isinstance(value, BaseException) else str(value)
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3] + "..."


def _check_manifest(doc: dict, path: Path, allow_unverified: bool) -> bool:
    """Whether the manifest verifies (its checksum over its items and its seal over every field);
    refuses one that does not, unless ``allow_unverified``."""
    again = "re-export it (curator version export NAME --format manifest)"
    unverified = "or pass --allow-unverified (allow_unverified=True) to import it as it is"
    checksum, seal = doc.get("checksum"), doc.get("seal")
    if checksum is None or seal is None:
        if allow_unverified:
            return False
        missing = " and ".join(k for k, v in (("checksum", checksum), ("seal", seal)) if v is None)
        raise ValidationError(f"manifest {path} has no {missing}, so it cannot be verified; {again} {unverified}")
    computed = checksum_of((item["sha256"], item["label"]) for item in doc["items"])
    problem = None
    if computed != checksum:
        problem = f"its items give checksum {computed[:12]}... but it states {checksum[:12]}... (labels or files edited)"
    elif manifest_seal(doc) != seal:
        problem = "its fields no longer match its seal (name, dataset, parent, counts or items edited)"
    if problem is None:
        return True
    if allow_unverified:
        return False
    raise ValidationError(f"manifest {path} was changed since it was exported: {problem}; nothing was imported; {again} {unverified}")


def import_manifest(path: str | Path, *, dataset: str | None = None, name: str | None = None,
                    message: str | None = None, allow_unverified: bool = False, settings=None) -> VersionInfo:
    """Re-create a version from a manifest, in one transaction that stores nothing if it fails.

    The manifest is checked whole before anything is written: its shape, its
    checksum (over the items' sha256 and labels) and its seal (over every
    field); a manifest missing either, or not matching, is refused unless
    ``allow_unverified``. Samples are found by URI in the target dataset
    (default: the manifest's); files not yet ingested are read and their hashes
    checked against the manifest, then samples, dataset and version are written
    together.
    """
    from sqlalchemy import func, select

    from curator.ingest._common import IngestReport, write_records
    from curator.ingest.folder import read_record
    from curator.settings import load_settings
    from curator.store.models import Dataset, Sample

    settings = settings or load_settings()
    path = Path(path)
    doc = _read_manifest(path)
    verified = _check_manifest(doc, path, allow_unverified)
    if not (dataset or doc.get("dataset")):
        raise ValidationError(f"manifest {path} names no dataset; pass --dataset NAME")
    dataset = dataset_name(dataset or doc["dataset"])
    name = version_name(name or doc.get("version") or path.stem)
    with _tx(settings) as s:  # read only: which samples the dataset has already
        ds = s.scalar(select(Dataset.id).where(func.lower(Dataset.name) == dataset))
        known = dict(s.execute(select(Sample.uri, Sample.sha256).where(Sample.dataset_id == ds)).all()) if ds else {}
    records, uri_of = [], {}
    for item in doc["items"]:  # hashing files is slow: done before the write transaction
        if item["uri"] in known:
            uri_of[item["uri"]] = item["uri"]
            continue
        p = Path(item["uri"])
        if not p.is_file():
            raise ValidationError(
                f"manifest {path}: sample {item['uri']} is neither in dataset {dataset!r} nor on disk; "
                "restore the file or import into the dataset that holds it (--dataset)"
            )
        record = read_record(p, p.parent, None, class_folders=False)
        if record.sha256 != item["sha256"]:
            raise ValidationError(
                f"manifest {path}: file {item['uri']} has sha256 {record.sha256[:12]}... but the manifest says "
                f"{item['sha256'][:12]}...; the file changed since the export"
            )
        records.append(record)
        uri_of[item["uri"]] = record.uri
    source = f"manifest:{doc.get('version')}" + ("" if verified else " (unverified)")
    with _tx(settings) as s:
        if records:
            write_records(settings, dataset, [records], IngestReport(dataset), total=len(records), session=s)
        ds = s.scalar(select(Dataset.id).where(func.lower(Dataset.name) == dataset))
        if ds is None:
            raise NotFoundError(f"dataset {dataset!r} does not exist and the manifest brings no new files to create it")
        by_uri = {uri: (sid, sha) for uri, sid, sha in s.execute(
            select(Sample.uri, Sample.id, Sample.sha256).where(Sample.dataset_id == ds)).all()}
        labels: dict[int, str] = {}
        for item in doc["items"]:
            sid, sha = by_uri[uri_of[item["uri"]]]
            if sha != item["sha256"]:
                raise ValidationError(
                    f"manifest {path}: {item['uri']} has sha256 {sha[:12]}... in the dataset but "
                    f"{item['sha256'][:12]}... in the manifest; the file changed since the export"
                )
            labels[sid] = item["label"]
        created = create(s, name, dataset=dataset, message=message or doc.get("message"),
                         labels=labels, source=source)
        if verified and created.checksum != doc["checksum"]:  # cannot happen after the checks above: a guard
            raise StoreError(f"manifest {path}: imported checksum {created.checksum} differs from the manifest's; "
                             "nothing was imported")
        return created


def _class_index(items: list[Member], classes: list[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    return np.fromiter((index[m.label] for m in items), dtype=np.int64, count=len(items))


def export_numpy(name: str, path: str | Path | None = None, *, dataset: str | None = None,
                 settings=None) -> dict[str, Any]:
    """Images (uint8 (n, h, w) or (n, h, w, c)), integer labels, classes and sample ids.

    With ``path``, also saved as a ``.npz`` (keys images, labels, classes,
    sample_ids, sha256, checksum) that ``curator ingest`` can read back.
    """
    if path is not None:
        _check_out(Path(path))
    with _tx(settings) as s:
        info_, items, classes = members(s, name, dataset)
    shapes = Counter((m.height, m.width, m.channels) for m in items)
    if len(shapes) > 1:
        raise ValidationError(
            f"version {name!r} mixes image sizes {dict(shapes.most_common(3))}; NumPy export needs one "
            "size: export a manifest (--format manifest) or a torch Dataset with a resizing transform"
        )
    (h, w, c), = shapes
    from curator.images import load_images

    images = load_images([m.uri for m in items], mode=_MODES[c]) if items else np.zeros((0, h, w), np.uint8)
    out = {
        "images": images,
        "labels": _class_index(items, classes),
        "classes": np.array(classes),
        "sample_ids": np.array([m.sample_id for m in items], dtype=np.int64),
        "sha256": np.array([m.sha256 for m in items]),
        "checksum": np.array(info_.checksum),
    }
    if path is not None:
        _write_atomic(Path(path), lambda fh: np.savez(fh, **out))
    return out


@functools.cache
def _torch_dataset_class():
    import torch
    from torch.utils.data import Dataset

    class VersionDataset(Dataset):
        """Map-style dataset over a version: (float tensor (c, h, w) in [0, 1], class index).

        Images are decoded on access, so it costs nothing until iterated.
        """

        def __init__(self, info_, items, classes, transform=None):
            self.version = info_.name
            self.checksum = info_.checksum
            self.classes = classes
            self.items = items
            self.targets = _class_index(items, classes)
            self.transform = transform

        def __len__(self):
            return len(self.items)

        def __getitem__(self, i):
            m = self.items[i]
            x = torch.from_numpy(np.array(_pixels(m))).float().div_(255)
            x = x.unsqueeze(0) if x.ndim == 2 else x.permute(2, 0, 1).contiguous()
            if self.transform is not None:
                x = self.transform(x)
            return x, int(self.targets[i])

    return VersionDataset


def torch_dataset(name: str, *, dataset: str | None = None, transform=None, settings=None):
    """A PyTorch ``Dataset`` of a version (torch is imported only here)."""
    with _tx(settings) as s:
        info_, items, classes = members(s, name, dataset)
    return _torch_dataset_class()(info_, items, classes, transform)


def export_torch(name: str, path: str | Path, *, dataset: str | None = None, settings=None) -> dict[str, Any]:
    """Save a version as a ``torch.save`` file: uint8 images, int64 labels, classes, checksum."""
    import torch

    _check_out(Path(path))
    arrays = export_numpy(name, None, dataset=dataset, settings=settings)
    doc = {
        "images": torch.from_numpy(arrays["images"]),
        "labels": torch.from_numpy(arrays["labels"]),
        "classes": arrays["classes"].tolist(),
        "sample_ids": torch.from_numpy(arrays["sample_ids"]),
        "checksum": str(arrays["checksum"]),
        "version": name,
    }
    _write_atomic(Path(path), lambda fh: torch.save(doc, fh))
    return doc
