"""The seal of a version: a digest over its identity that ``verify`` recomputes.

Why its own module: the triggers make the database refuse UPDATE, DELETE and
REPLACE on version tables, but not someone who drops them. The seal (issue
13; docs/reliability.md) is a sha256 over a version's identity (id, name,
dataset id and name, parent and the parent's seal, message, filters,
lineage, counts, size, creation time) and its content checksum, written last
when the version is created, so a renamed version, one replaced by another,
or an edited ancestor no longer matches. It has no secret key: it detects
changes made behind the database's back, not a forger who recomputes it.
Migration 0006 seals older versions with ``seal_existing``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import numpy as np

from curator.store import versions as store

SEAL_FORMAT = "curator-version-seal/1"

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


def _identity_rows(s, ds: int | None = None) -> list[dict]:
    """Every version (of dataset ``ds``, or all) as the seal sees it, with its dataset's
    name and its stored seal digest, oldest first. ``s``: a Session or a Connection."""
    return store.identity_rows(s, SEALED_COLUMNS, ds)


def seal_existing(connection) -> int:
    """Write the digest of every seal that has none (migration 0006 seals older versions
    with their identity as it is then). Returns how many were sealed."""
    rows = _identity_rows(connection)
    digests = {r["id"]: r["digest"] for r in rows}
    done = 0
    for r in rows:  # oldest first: a parent is sealed before its children
        if r["sealed"] is None or r["digest"] is not None:
            continue
        digests[r["id"]] = seal_digest(r, r["dataset"], digests.get(r["parent_id"]))
        store.set_seal_digest(connection, r["id"], digests[r["id"]])
        done += 1
    return done


def _seal(s, ds: int, vid: int) -> None:
    """Seal version ``vid`` last, over its row as stored (so verify recomputes the same digest)."""
    rows = {r["id"]: r for r in _identity_rows(s, ds)}
    row = rows[vid]
    parent = rows.get(row["parent_id"])
    store.insert_seal(s, vid, seal_digest(row, row["dataset"], parent["digest"] if parent else None))


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
