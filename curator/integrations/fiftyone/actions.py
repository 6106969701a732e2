"""What the App plugin's operators do: each a thin call into curator's Python API.

The plugin (``plugins/fiftyone``) imports only this module and
``curator.exceptions``. A synced FiftyOne dataset records which curator
dataset and workspace it came from (``dataset.info["curator"]``); ``link``
turns that back into ``Settings``. Settings given to the App process (the
plugin's secrets, or ``CURATOR_*`` environment variables) win over the
recorded workspace; the database must be the one the dataset was synced from.

What the user sees narrows what the long operators act on: ``scope_ids`` turns
the App's selection (or else its current view, when it is not the whole
dataset) into curator sample ids, passed to scoring and selection as ``only``.
They report their stages through a ``progress(fraction, label)`` callback
(the operator's ``ctx.set_progress``, shown for delegated runs).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Sequence

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
            "first: curator fiftyone sync --dataset DATASET"
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


Progress = Callable[[float, str], None]


def _noop(_fraction: float, _label: str) -> None:
    pass


def scope_ids(fo_dataset, view=None, selected: Sequence[str] | None = None, custom_view: bool = False) -> list[int] | None:
    """The curator sample ids the user points at: the selected samples, else the current view
    when it is narrower than the dataset; None when neither (act on everything)."""
    if selected:
        values = fo_dataset.select(list(selected)).values("curator_id")
    elif view is not None and custom_view:
        values = view.values("curator_id")
    else:
        return None
    ids = sorted({int(v) for v in values if v is not None})
    if not ids:
        what = "selected samples" if selected else "samples of the current view"
        raise ValidationError(f"none of the {what} came from curator; clear the selection or view, "
                              "or run `curator: refresh fields and views` first")
    return ids


def pool_in_scope(link: Link, only: list[int] | None) -> tuple[int, str]:
    """(pool size within ``only``, a phrase for the summary); an error when none of them is in the pool."""
    from curator import rounds
    from curator.store.queries import dataset_id
    from curator.store.session import transaction

    if only is None:
        return pool_size(link), ""
    with transaction(link.settings) as s:
        pool = rounds.pool_ids(s, dataset_id(s, link.dataset))[0]
    inside = int(len(set(pool.tolist()) & set(only)))
    if inside == 0:
        raise ValidationError(f"none of the {len(only)} samples in view is in the unlabeled pool (each is labeled, "
                              "selected or a duplicate); widen the view or clear the selection")
    return inside, f" (the {inside} pool samples of {len(only)} in view)"


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
    from curator.store import rounds as store_rounds
    from curator.store.queries import dataset_id
    from curator.store.session import transaction

    with transaction(link.settings) as s:
        return store_rounds.numbers(s, dataset_id(s, link.dataset))


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


# ------------------------------------------------------------ score, select


def pool_size(link: Link) -> int:
    """Samples a policy may select now (``curator.rounds.pool_ids``)."""
    from curator import rounds
    from curator.store.queries import dataset_id
    from curator.store.session import transaction

    with transaction(link.settings) as s:
        return len(rounds.pool_ids(s, dataset_id(s, link.dataset))[0])


MODEL_HELP = ("Model id or spec (a saved .pt file, package.module:factory, a TorchScript file, a registered name); "
              "empty: the dataset's newest model, or train one on the current labels.")


def model_for(link: Link, model: str | None = None):
    """The model to score or select with (see MODEL_HELP)."""
    from curator import rounds
    from curator.store import annotations as store
    from curator.store.queries import dataset_id
    from curator.store.session import transaction

    if model:
        return rounds.load_model(link.settings, model, dataset=link.dataset)
    with transaction(link.settings) as s:
        newest = store.newest_model_with_file(s, link.dataset)
        labels = {} if newest is not None else store.agreed_labels(s, dataset_id(s, link.dataset))
    if newest is not None:
        return rounds.load_model(link.settings, newest)
    if not labels:
        raise ValidationError(
            f"dataset {link.dataset!r} has no model and no labels to train one on; pull annotations first "
            "or give a model id or .pt file"
        )
    from curator.semihead import SemiConfig

    ids = sorted(labels)  # the built-in recipe: labels + confident pseudo-labels of the pool (curator.semihead)
    return rounds.train_model(link.settings, link.dataset, ids, [labels[i][0] for i in ids], semi=SemiConfig())


def score_options(link: Link) -> dict[str, dict]:
    """The score form's fields: name -> {type, default, label}."""
    return {
        "model": {"type": "str", "default": "", "label": "Model", "description": MODEL_HELP},
        "mc_samples": {"type": "int", "default": 20, "label": "MC-dropout passes (0: off; BALD needs them)"},
        "subsample": {"type": "int", "default": 0, "label": "Score a random subset of this size (0: all)"},
    }


def score(link: Link, model: str | None = None, mc_samples: int = 20, subsample: int = 0, *,
          only: list[int] | None = None, progress: Progress = _noop) -> str:
    """Score the pool, or its part in ``only`` (``curator.rounds.score_pool``, which also stores
    the model's predictions)."""
    from curator import rounds

    _, note = pool_in_scope(link, only)
    progress(0.0, "loading or training the model")
    trained = model_for(link, model or None)
    progress(0.3, f"scoring with model {trained.model_id}")
    scored = rounds.score_pool(
        link.settings, link.dataset, trained, mc_samples=int(mc_samples), subsample=int(subsample) or None, only=only
    )
    progress(1.0, "scored")
    kinds = ", ".join(sorted(scored.scores))
    return f"scored {len(scored.sample_ids)} pool samples{note} with model {scored.model_id}: {kinds}"


def select(link: Link, policy: str, budget: int, seed: int = 0, model: str | None = None, *,
           only: list[int] | None = None, progress: Progress = _noop) -> str:
    """Select and record the next round from the pool, or its part in ``only``
    (``curator.rounds.select_round``)."""
    from curator import rounds

    size, note = pool_in_scope(link, only)
    problem = check_budget(budget, size)
    if problem:
        raise ValidationError(problem + (" in view" if only is not None else ""))
    progress(0.0, "loading or training the model")
    trained = model_for(link, model or None)
    progress(0.3, f"selecting {budget} with {policy}")
    result = rounds.select_round(link.settings, link.dataset, trained, budget=int(budget), policy=policy,
                                 seed=int(seed), only=only)
    progress(1.0, f"round {result.number} recorded")
    return (f"round {result.number}: {len(result.sample_ids)} samples selected by {policy} from a pool of "
            f"{result.pool_size}{note}")


# ------------------------------------------------------------ Label Studio


def default_project(link: Link) -> str:
    from curator.integrations.labelstudio.push import default_project_name

    return default_project_name(link.dataset)


def round_of(link: Link, only: list[int] | None) -> int | None:
    """The one round every sample in ``only`` belongs to (the push form's default), or None."""
    from curator.store import rounds as store_rounds
    from curator.store.queries import dataset_id
    from curator.store.session import transaction

    if not only:
        return None
    with transaction(link.settings) as s:
        ds = dataset_id(s, link.dataset)
        found = {r.number for r in store_rounds.list_rounds(s, ds)
                 if set(only) <= set(store_rounds.sample_ids(s, r).tolist())}
    return min(found) if found else None


def push(link: Link, round_number: int, project: str | None = None, *, only: list[int] | None = None,
         progress: Progress = _noop) -> str:
    """Push a round to Label Studio, or the part of it in ``only`` (the App's selection or view)
    (``curator.integrations.labelstudio.push``); progress batch by batch."""
    from curator.integrations.labelstudio.push import push as ls_push

    what = f"round {round_number}" if only is None else f"the samples in view of round {round_number}"
    progress(0.0, f"pushing {what}")
    report = ls_push(link.settings, link.dataset, int(round_number), project=project, only=only,
                     on_progress=lambda done, total: progress(done / total, f"pushed {done} of {total} tasks"))
    progress(1.0, "pushed")
    part = "" if only is None else f" ({report.selected} of the round in view)"
    return (
        f"round {round_number}{part} -> Label Studio project {report.project!r}: {report.imported} tasks imported, "
        f"{report.already_linked} already there; {report.url}"
    )


def pull(link: Link, project: str | None = None) -> str:
    """Pull annotations from Label Studio (``curator.integrations.labelstudio.pull``)."""
    from curator.integrations.labelstudio.pull import pull as ls_pull

    report = ls_pull(link.settings, project or default_project(link))
    return (
        f"{report.new} new, {report.updated} updated, {report.deleted} deleted annotations; "
        f"{report.labeled_samples} samples labeled ({report.disagreements} with disagreement)"
    )
