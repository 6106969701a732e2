"""Create, read, diff and verify versions: the versioning workflow over the store.

Why its own module: this is where the steps are put together. The
session-level functions (``create``, ``read``, ``diff``, ``verify``,
``members``, ``versions_of``, ``info``) run inside the caller's transaction:
they read through ``curator.store.versions`` (which builds every query),
compute on arrays with ``curator.versions.labels`` and write back through
the store. ``create_version``, ``read_version`` and the other ``*_version``
functions are the tiny wrappers that own one transaction each.

Creation first locks the dataset row, so two processes creating versions at
once get serial results (the second's parent is the first) or a clear error,
never a half-written version; the seal is written last (``seal``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import zlib
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from curator.exceptions import StoreError, ValidationError
from curator.names import version_name
from curator.store import versions as store
from curator.store.queries import dataset_classes
from curator.store.versions import VersionInfo, VersionRow
from curator.versions.labels import _apply, _checksum, _compare, _decode, _delta_of, _encode, _Labels, match_hashes
from curator.versions.seal import _identity_problems, _seal

#: ``parent=LATEST`` (the default) derives from the newest version with the same filters.
LATEST = "@latest"


# --------------------------------------------------------------------------- results


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


@dataclasses.dataclass(frozen=True)
class Member:
    sample_id: int
    uri: str
    sha256: str
    label: str
    height: int
    width: int
    channels: int


# --------------------------------------------------------------------------- helpers


def check_name(name: str, what: str = "name") -> str:
    """A new version name, normalised (``curator.names.version_name``: one check for all names)."""
    return version_name(name)


def _ordered_counts(counts: dict[str, int], classes: Sequence[str]) -> dict[str, int]:
    """Counts in the dataset's class order, then other labels (numbers numerically)."""
    from curator.ingest._common import sort_classes

    known = [c for c in classes if counts.get(c)]
    rest = sort_classes({c for c, n in counts.items() if n} - set(known))
    return {c: int(counts[c]) for c in known + rest}


def _chain(versions: dict[int, VersionRow], vid: int) -> tuple[list[int], int]:
    """Versions whose changes lead from the nearest snapshot to ``vid`` (newest first), and that snapshot."""
    chain = []
    while not versions[vid].snapshot:
        chain.append(vid)
        vid = versions[vid].parent_id
    return chain, vid


def _load(s, vid: int, kind: str) -> _Labels:
    return _decode(store.load_blobs(s, vid, kind))


def _store(s, vid: int, kind: str, labels: _Labels) -> None:
    store.store_blobs(s, vid, kind, _encode(labels))


def _reconstruct(s, versions: dict[int, VersionRow], vid: int) -> _Labels:
    chain, base = _chain(versions, vid)
    labels = _load(s, base, "snapshot")
    for v in reversed(chain):
        labels = _apply(labels, _load(s, v, "delta"))
    return labels


def _hashes_of(s, ds: int, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """sha256 (hex, as bytes) of each sample in ``ids`` (sorted), and the ids that are not samples of the dataset."""
    return match_hashes(*store.sample_hashes(s, ds), ids)


def _lineage(s, ds: int, members: _Labels) -> dict[str, Any]:
    """Rounds, policies and models that selected the version's samples (RoundItem -> Round -> Model)."""
    rids, sids = store.round_items(s, ds)
    inside = np.isin(sids, members.ids)
    per_round = Counter(rids[inside].tolist())
    covered = len(np.unique(sids[inside]))
    rounds, policies, models = [], set(), {}
    if per_round:
        for r in store.round_sources(s, per_round):
            model = None if r.model_name is None else f"{r.model_name}:{r.model_version}"
            if model:
                models[model] = {"name": r.model_name, "version": r.model_version, "checksum": r.model_checksum}
            policies.add(r.policy)
            rounds.append({
                "number": r.number, "policy": r.policy, "params": r.params, "seed": r.seed,
                "model": model, "samples": per_round[r.id],
            })
    return {
        "rounds": rounds,
        "policies": sorted(policies),
        "models": [models[k] for k in sorted(models)],
        "outside_rounds": len(members) - covered,
    }


def _aggregate(s, ds: int, agreed: dict[int, str], method: str) -> tuple[dict[int, str], dict[str, Any]]:
    """The labels of the samples in ``agreed`` by ``method``, and what the lineage records of it:
    the method, how many samples had several answers, how many labels differ from the majority,
    and (Dawid-Skene) each labeler's estimated accuracy."""
    from curator.aggregate import METHODS, dawid_skene
    from curator.store.annotations import answers_of_dataset

    if method not in METHODS:
        raise ValidationError(f"aggregation {method!r}: use one of {', '.join(METHODS)} (--aggregate)")
    answers = [a for a in answers_of_dataset(s, ds) if a[0] in agreed]
    per_sample = Counter(a[0] for a in answers)
    record: dict[str, Any] = {"method": method, "samples_with_several_answers": sum(n > 1 for n in per_sample.values())}
    if method == "majority":
        return agreed, record
    voted, accuracy = dawid_skene(answers)
    labels = {sid: voted.get(sid, lab) for sid, lab in agreed.items()}
    record["changed_from_majority"] = sum(labels[sid] != agreed[sid] for sid in agreed)
    record["labeler_accuracy"] = {who: round(acc, 4) for who, acc in sorted(accuracy.items())}
    return labels, record


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
    aggregate: str = "majority",
) -> VersionInfo:
    """Freeze labels into a new version inside the caller's transaction.

    ``labels`` (sample_id -> label) replaces the agreed labels; it is how a
    manifest is re-imported. ``parent=None`` starts a new line of versions.
    ``aggregate``: how several answers to a sample become its label (``curator.aggregate``:
    majority, the agreed label; or dawid-skene), recorded in the lineage.
    """
    name = version_name(name)
    ds, ds_name = store.lock_dataset(s, dataset)
    versions = store.versions(s, ds)
    if any(v.name.lower() == name for v in versions.values()):
        raise ValidationError(
            f"version {name!r} already exists in dataset {ds_name!r}; versions are immutable, choose another name"
        )
    filters = {k: v for k, v in (("split", sorted(split or [])), ("rounds", sorted(rounds or []))) if v}
    if source:
        filters["source"] = source
    aggregation = None
    if labels is None:
        labels = store.current_labels(s, ds, split, rounds)
        labels, aggregation = _aggregate(s, ds, labels, aggregate)
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
        pv = store.by_name(versions, version_name(parent), ds_name)
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
    vid = store.insert_version(
        s,
        dataset_id=ds, name=name, message=message, parent_id=pv.id if pv else None,
        checksum=_checksum(shas, new.codes, new.vocab), size=size,
        counts=_ordered_counts(new.counts(), dataset_classes(s, ds_name)),
        lineage={**_lineage(s, ds, new), **({"aggregation": aggregation} if aggregation else {})},
        filters=filters, changes=changes, snapshot=snapshot, chain_rows=chain_rows,
    )
    if pv:
        _store(s, vid, "delta", delta)
    if snapshot:
        _store(s, vid, "snapshot", new)
    _seal(s, ds, vid)
    return store.info(s, ds_name, vid)


def versions_of(s, dataset: str | None = None) -> list[VersionInfo]:
    ds, ds_name = store.resolve_dataset(s, dataset)
    return store.infos(s, ds, ds_name)


def info(s, name: str, dataset: str | None = None) -> VersionInfo:
    ds, ds_name = store.resolve_dataset(s, dataset)
    return store.info(s, ds_name, store.by_name(store.versions(s, ds), name, ds_name).id)


def read(s, name: str, dataset: str | None = None) -> LabeledSet:
    ds, ds_name = store.resolve_dataset(s, dataset)
    versions = store.versions(s, ds)
    v = store.by_name(versions, name, ds_name)
    labels = _reconstruct(s, versions, v.id)
    return LabeledSet(v.name, v.checksum, labels.ids, labels.labels())


def diff(s, a: str, b: str, dataset: str | None = None) -> VersionDiff:
    """Added, removed and relabeled samples from ``a`` to ``b``, and per-class changes."""
    ds, ds_name = store.resolve_dataset(s, dataset)
    versions = store.versions(s, ds)
    va, vb = store.by_name(versions, a, ds_name), store.by_name(versions, b, ds_name)
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
    ds, ds_name = store.resolve_dataset(s, dataset)
    versions = store.versions(s, ds)
    v = store.by_name(versions, name, ds_name)
    problems = _identity_problems(s, ds, v.id)
    sealed = store.sealed_ids(s, versions)
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
        uris = store.sample_uris(s, ds)
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


def members(s, name: str, dataset: str | None = None) -> tuple[VersionInfo, list[Member], list[str]]:
    """A version's members with their files, and its class list (dataset order first)."""
    ds, ds_name = store.resolve_dataset(s, dataset)
    versions = store.versions(s, ds)
    v = store.by_name(versions, name, ds_name)
    labels = _reconstruct(s, versions, v.id).to_dict()
    rows = store.sample_files(s, ds)
    out = [Member(sid, uri, sha, labels[sid], h, w, c) for sid, uri, sha, h, w, c in rows if sid in labels]
    classes = list(_ordered_counts(Counter(labels.values()), dataset_classes(s, ds_name)))
    return store.info(s, ds_name, v.id), out, classes


# --------------------------------------------------------------------------- public API (one transaction each)


def _tx(settings):
    from curator.settings import load_settings
    from curator.store.session import transaction

    return transaction(settings or load_settings())


def create_version(name: str, *, dataset: str | None = None, message: str | None = None,
                   parent: str | None = LATEST, split: Sequence[str] | str | None = None,
                   rounds: Sequence[int] | None = None, settings=None, aggregate: str = "majority") -> VersionInfo:
    """Freeze the dataset's current agreed labels as version ``name`` (one transaction)."""
    from sqlalchemy.exc import IntegrityError, OperationalError

    if isinstance(split, str):
        split = [split]
    try:
        with _tx(settings) as s:
            return create(s, name, dataset=dataset, message=message, parent=parent, split=split, rounds=rounds,
                          aggregate=aggregate)
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
