"""What the App plugin's operators do: each a thin call into curator's Python API.

The plugin (``plugins/fiftyone``) imports only this module and
``curator.exceptions``. A synced FiftyOne dataset records which curator
dataset and workspace it came from (``dataset.info["curator"]``); ``link``
turns that back into ``Settings``. Settings given to the App process (the
plugin's secrets, or ``CURATOR_*`` environment variables) win over the
recorded workspace; the database must be the one the dataset was synced from.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from curator.exceptions import NotFoundError, ValidationError

DEFAULT_POLICY = "curator"


@dataclasses.dataclass(frozen=True)
class Link:
    settings: Any
    dataset: str
    fo_name: str
    scope: dict


def link(fo_dataset, secrets: dict[str, str] | None = None) -> Link:
    """The curator dataset behind a synced FiftyOne dataset, with the settings to reach it."""
    from curator.integrations.fiftyone.sync import INFO_KEY
    from curator.settings import CONFIG_ENV, ENV, load_settings, mask_url

    if fo_dataset is None:
        raise ValidationError("open a dataset in the App first")
    info = fo_dataset.info.get(INFO_KEY)
    if not info:
        raise NotFoundError(
            f"FiftyOne dataset {fo_dataset.name!r} was not synced by curator; sync a curator dataset "
            "first: curator fiftyone sync DATASET"
        )
    secrets = {k: v for k, v in (secrets or {}).items() if v}
    overrides = {field: secrets[env] for env, field in ENV.items() if env in secrets}
    if "workspace" not in overrides and not os.environ.get("CURATOR_WORKSPACE"):
        overrides["workspace"] = info["workspace"]
    settings = load_settings(secrets.get(CONFIG_ENV), **overrides)
    if mask_url(settings.database_url) != info.get("database"):
        raise ValidationError(
            f"FiftyOne dataset {fo_dataset.name!r} was synced from database {info.get('database')}, but the App "
            f"resolves {mask_url(settings.database_url)}; set CURATOR_DB_URL (or CURATOR_WORKSPACE) for the "
            "App process to the database it was synced from"
        )
    return Link(settings, info["dataset"], fo_dataset.name, dict(info.get("scope") or {}))


def describe(link: Link) -> str:
    from curator.integrations.fiftyone.sync import describe as describe_scope

    return describe_scope(link.scope or {"dataset": link.dataset})


def refresh(link: Link):
    """Re-sync the FiftyOne dataset from curator (same scope, same name)."""
    from curator.integrations.fiftyone.sync import sync

    return sync(
        link.settings, link.dataset, round=link.scope.get("round"), version=link.scope.get("version"),
        fo_name=link.fo_name,
    )


# ------------------------------------------------------------------ select


def policy_names() -> list[str]:
    from curator import policies

    return policies.available()


def check_budget(budget, pool: int) -> str | None:
    """Why ``budget`` cannot be selected from a pool of ``pool`` samples, or None."""
    if budget is None:
        return None
    try:
        value = int(budget)
    except (TypeError, ValueError):
        return f"budget must be a whole number; got {budget!r}"
    if value != budget and not isinstance(budget, str):
        return f"budget must be a whole number; got {budget!r}"
    if value < 1:
        return f"budget must be at least 1; got {value}"
    if pool == 0:
        return "the pool is empty: every sample is labeled, selected or a duplicate"
    if value > pool:
        return f"budget {value} is larger than the pool ({pool} samples); choose at most {pool}"
    return None


def round_numbers(link: Link) -> list[int]:
    from sqlalchemy import select

    from curator.store.models import Round
    from curator.store.queries import dataset_id
    from curator.store.session import transaction

    with transaction(link.settings) as s:
        ds = dataset_id(s, link.dataset)
        return list(s.scalars(select(Round.number).where(Round.dataset_id == ds).order_by(Round.number)))


# ---------------------------------------------------------------- versions


def check_version_name(link: Link, name) -> str | None:
    """Why ``name`` cannot be a new version name, or None."""
    from curator import versions

    if not name:
        return None
    try:
        versions.check_name(name)
    except ValidationError as exc:
        return str(exc)
    existing = [v.name for v in versions.list_versions(dataset=link.dataset, settings=link.settings)]
    if name in existing:
        return f"version {name!r} already exists in dataset {link.dataset!r}; choose another name"
    return None


def create_version(link: Link, name: str, message: str | None = None) -> str:
    from curator import versions

    info = versions.create_version(name, dataset=link.dataset, message=message, settings=link.settings)
    return f"version {info.name}: {info.size} labeled samples, checksum {info.checksum[:12]}"


# ----------------------------------------------------- engine, Label Studio


def _require(module: str, what: str):
    """Import a workflow module, or say clearly which part of curator is missing."""
    import importlib

    from curator.exceptions import MissingExtraError

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):
            raise ValidationError(f"{what} is not available: this curator has no {module}") from None
        raise MissingExtraError(exc.name or module, "all") from None


def pool_size(link: Link) -> int:
    """Samples a policy may select: not labeled, not selected in a round, not an exact copy."""
    from sqlalchemy import func, select

    from curator.store.models import Annotation, Round, RoundItem, Sample
    from curator.store.queries import dataset_id
    from curator.store.session import transaction

    with transaction(link.settings) as s:
        ds = dataset_id(s, link.dataset)
        selected = select(RoundItem.sample_id).join(Round, Round.id == RoundItem.round_id).where(Round.dataset_id == ds)
        labeled = select(Annotation.sample_id).where(Annotation.deleted.is_(False), Annotation.skipped.is_(False))
        return s.scalar(
            select(func.count()).select_from(Sample).where(
                Sample.dataset_id == ds,
                Sample.duplicate_of_id.is_(None),
                Sample.id.not_in(selected),
                Sample.id.not_in(labeled),
            )
        )
