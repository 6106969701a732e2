"""The models aggregate: trained model versions, read and written here only.

A model is registered once per (name, version), the version being the checksum
of its weights. ``get`` is THE way to find a model a user names: an id, a
model name or a recorded weights path, the newest row when several match
(the CLI, the rounds and FiftyOne behave alike). Functions take the caller's
session and return frozen ``ModelInfo``s, never ORM rows.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

from sqlalchemy import insert, or_, select, update
from sqlalchemy.orm import Session

from curator.exceptions import NotFoundError
from curator.store.schema import Model

#: The keys of ``params`` that say how a model is built (``curator.models.spec.spec_record``) and
#: the checksum of its weights file; no migration: ``params`` is a JSON column.
SPEC_KEYS = ("spec", "weights_sha256", "kind")

__all__ = ["SPEC_KEYS", "ModelInfo", "register", "find", "get", "by_version", "paths", "newest_trained_on", "newest_named", "ids_named"]


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    id: int
    name: str
    version: str
    checksum: str
    path: str | None
    params: dict[str, Any] | None
    created_at: dt.datetime | None


_COLUMNS = (Model.id, Model.name, Model.version, Model.checksum, Model.path, Model.params, Model.created_at)


def _info(row) -> ModelInfo:
    return ModelInfo(id=int(row[0]), name=row[1], version=row[2], checksum=row[3], path=row[4],
                     params=dict(row[5]) if row[5] is not None else None, created_at=row[6])


def by_version(session: Session, name: str, version: str) -> ModelInfo | None:
    """The model ``name`` at ``version`` (its weights' checksum), or None."""
    row = session.execute(select(*_COLUMNS).where(Model.name == name, Model.version == version)).first()
    return _info(row) if row is not None else None


def register(session: Session, name: str, version: str, *, checksum: str, path: str | None = None,
             params: dict | None = None) -> ModelInfo:
    """The model (name, version), created if new; a weights ``path`` is recorded where none was, and
    so is the model spec (``params["spec"]``, ``params["weights_sha256"]``) where none was: an
    existing row then also knows how to be built again."""
    got = by_version(session, name, version)
    if got is None:
        session.execute(insert(Model).values(name=name, version=version, checksum=checksum,
                                             path=str(path) if path else None, params=params))
        return by_version(session, name, version)
    changes: dict[str, Any] = {}
    if path and not got.path:
        changes["path"] = str(path)
    if params and "spec" in params and "spec" not in (got.params or {}):
        changes["params"] = {**(got.params or {}), **{k: params[k] for k in SPEC_KEYS if k in params}}
    if changes:
        session.execute(update(Model).where(Model.id == got.id).values(**changes))
        return dataclasses.replace(got, **changes)
    return got


def find(session: Session, ref: int | str | Path) -> ModelInfo | None:
    """The model ``ref`` names: an id (int or digits), else a model name or a recorded weights path
    (the newest such row), or None."""
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
        row = session.execute(select(*_COLUMNS).where(Model.id == int(ref))).first()
    else:
        ref = str(ref)
        paths = {ref, str(Path(ref).resolve())} if ref else {ref}
        row = session.execute(select(*_COLUMNS).where(or_(Model.name == ref, Model.path.in_(paths)))
                              .order_by(Model.id.desc()).limit(1)).first()
    return _info(row) if row is not None else None


def get(session: Session, ref: int | str | Path) -> ModelInfo:
    """``find``, or NotFoundError naming ``ref`` and the known model ids."""
    got = find(session, ref)
    if got is None:
        known = session.scalars(select(Model.id).order_by(Model.id)).all()
        raise NotFoundError(f"model {ref} does not exist (known ids: {list(known) or 'none'}); "
                            "pass a model id, a model name or a saved .pt file")
    return got


def paths(session: Session) -> list[str]:
    """Every recorded weights path (``curator doctor`` keeps the files they name)."""
    return [p for p in session.scalars(select(Model.path)) if p]


def newest_named(session: Session, name: str) -> ModelInfo | None:
    """The newest model row called ``name``, or None."""
    row = session.execute(select(*_COLUMNS).where(Model.name == name).order_by(Model.id.desc()).limit(1)).first()
    return _info(row) if row is not None else None


def ids_named(session: Session, name: str) -> list[int]:
    """Ids of every model row called ``name``, newest first."""
    return [int(i) for i in session.scalars(select(Model.id).where(Model.name == name).order_by(Model.id.desc()))]


def newest_trained_on(session: Session, dataset: str) -> ModelInfo | None:
    """The newest model with saved weights trained on ``dataset`` (``params["dataset"]``), or None."""
    for row in session.execute(select(*_COLUMNS).where(Model.path.is_not(None)).order_by(Model.id.desc())):
        if (row[5] or {}).get("dataset") == dataset:
            return _info(row)
    return None
