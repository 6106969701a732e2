"""Scoring and selection commands: score, select, policies, embed."""

from __future__ import annotations

import json

import click

from curator.cli import connect_executor, dataset_option, executor_options, settings_from

_MODEL_HELP = ("Model spec: smallcnn, a .pt file saved by curator, package.module:factory[#layer], a TorchScript "
               "file, a registered name (entry point curator.models), or a model id. Without it, the built-in CNN "
               "is trained on the dataset's current labels.")
_WEIGHTS_HELP = "Weights (a state_dict file) for a --model package.module:factory, registered name or smallcnn."


def _model(settings, dataset: str, model: str | None, seed: int, steps: int | None = None, weights: str | None = None,
           supervised_only: bool = False, split: str | None = None):
    from curator import rounds
    from curator.exceptions import ValidationError

    if weights is not None and not model:
        raise ValidationError("--weights goes with --model SPEC (package.module:factory, a registered name or smallcnn)")
    if model:
        return rounds.load_model(settings, model, weights=weights, dataset=dataset)
    from curator.steps import run_step
    from curator.store.queries import agreed_labels, dataset_id

    labels = run_step(settings, lambda s: agreed_labels(s, dataset_id(s, dataset)))
    if not labels:
        raise ValidationError(
            f"dataset {dataset!r} has no labels to train a model on; pass --model SPEC or label some samples first"
        )
    ids = sorted(labels)
    semi = None
    if not supervised_only:  # the built-in recipe learns from the unlabeled pool too (curator.semihead)
        from curator.semihead import SemiConfig

        semi = SemiConfig()
    return rounds.train_model(settings, dataset, ids, [labels[i][0] for i in ids], seed=seed, steps=steps,
                              semi=semi, split=split)


def _mc_given(ctx) -> bool:
    """Whether --mc was given on the command line (else its default may drop to 0 for a model
    without dropout, when the policy does not need MC samples)."""
    from click.core import ParameterSource

    return ctx.get_parameter_source("mc_samples") not in (ParameterSource.DEFAULT, None)


def _from_options(f):
    for opt in reversed([
        click.option("--from", "source", metavar="FILE",
                     help="Import precomputed outputs instead of running a model: .npy (with --ids), .npz, "
                          ".parquet, or fiftyone:DATASET.FIELD."),
        click.option("--ids", "ids_file", metavar="FILE",
                     help="With a .npy --from: the sample id (or URI) of each row (.npy of ids, or text, one a line)."),
        click.option("--name", "set_name", help="Name of the imported set (default: the file's stem)."),
    ]):
        f = opt(f)
    return f


def _dataset(settings, name: str | None) -> str:
    """The dataset a command works on: ``--dataset``, or the only one there is."""
    from curator.steps import run_step
    from curator.store.queries import resolve_dataset

    return run_step(settings, lambda s: resolve_dataset(s, name))[1]


def _params(items: tuple[str, ...]) -> dict:
    """``NAME=VALUE`` pairs with JSON values; anything else is refused, naming the pair and the fix."""
    from curator.exceptions import ValidationError

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValidationError(f"--param must look like NAME=VALUE; got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            raise ValidationError(
                f"--param {item!r}: the value is not JSON; write numbers as 0.5, true/false, null, "
                f"and text in double quotes, e.g. --param '{key.strip()}=\"{value}\"'"
            ) from None
    return out


def _pool_options(f):
    for opt in reversed([
        click.option("--model", "-m", help=_MODEL_HELP),
        click.option("--weights", type=click.Path(dir_okay=False), help=_WEIGHTS_HELP),
        click.option("--steps", type=click.IntRange(min=1),
                     help="Training steps when no --model is given (default: 50 epochs, 200-2000)."),
        click.option("--supervised-only", is_flag=True,
                     help="Built-in model: train on the labels only (no pseudo-labels from the unlabeled pool)."),
        click.option("--split", help="Only samples of this split (e.g. train)."),
        click.option("--subsample", type=click.IntRange(min=1), help="Score a random subset of this many pool samples."),
        click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
                     help="Seed of every random step."),
        click.option("--mc", "mc_samples", default=20, show_default=True, type=click.IntRange(min=0),
                     help="MC-dropout passes (0 = off, else at least 2; BALD needs them)."),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON document."),
    ]):
        f = opt(f)
    return f


@click.command()
@dataset_option(required=False, help="Dataset (default: the only one).")
@_pool_options
@_from_options
@executor_options
@click.option("--top", default=5, show_default=True, type=click.IntRange(min=1), help="Samples to show per score.")
@click.pass_context
def score(ctx, dataset, model, weights, steps, supervised_only, split, subsample, seed, mc_samples, as_json, source,
          ids_file, set_name, top):
    """Score the dataset's unlabeled pool (entropy, margin, BALD, novelty ...) and store the scores.

    With --from, store the scores of class probabilities computed elsewhere (one column per class
    of the dataset, rows summing to 1) instead of running a model."""
    import numpy as np

    from curator import rounds

    settings = settings_from(ctx)
    dataset = _dataset(settings, dataset)
    if source is not None:
        _import_probs(settings, dataset, source, ids_file, set_name, model, weights, as_json, top)
        return
    connect_executor(settings)
    rounds.check_pool_args(settings, dataset, split=split, subsample=subsample, seed=seed, mc_samples=mc_samples)
    trained = _model(settings, dataset, model, seed, steps, weights, supervised_only, split)
    mc_samples = rounds.mc_samples_for(trained, None, mc_samples, explicit=_mc_given(ctx))
    res = rounds.score_pool(settings, dataset, trained, split=split, subsample=subsample, seed=seed,
                            mc_samples=mc_samples)
    summary = {
        "dataset": dataset, "model_id": res.model_id, "pool": int(len(res.sample_ids)),
        "scores": {
            kind: {"mean": float(v.mean()), "max": float(v.max()),
                   "top": [int(res.sample_ids[i]) for i in np.argsort(-v, kind="stable")[:top]]}
            for kind, v in res.scores.items()
        },
    }
    if as_json:
        click.echo(json.dumps(summary))
        return
    click.echo(f"{dataset}: scored {summary['pool']} pool samples with model {res.model_id}")
    for kind, row in summary["scores"].items():
        click.echo(f"  {kind:17} mean {row['mean']:.4f}  max {row['max']:.4f}  top samples {row['top']}")


def _import_probs(settings, dataset, source, ids_file, set_name, model, weights, as_json, top):
    """``curator score --from``: store imported probabilities' scores (no model runs)."""
    import numpy as np

    from curator.embeddings import import_predictions
    from curator.exceptions import ValidationError

    if model or weights:
        raise ValidationError("--from imports predictions made elsewhere; drop --model/--weights (or drop --from)")
    model_id, n, scores = import_predictions(settings, dataset, source, name=set_name, ids=ids_file)
    summary = {"dataset": dataset, "model_id": model_id, "imported": n, "source": str(source),
               "scores": {kind: {"mean": float(v.mean()), "max": float(v.max()),
                                 "top": [int(i) for i in np.argsort(-v, kind="stable")[:top]]}
                          for kind, v in scores.items()}}
    if as_json:
        click.echo(json.dumps(summary))
        return
    click.echo(f"{dataset}: stored the scores of {n} imported predictions from {source} as model {model_id}")


@click.command()
@dataset_option(required=False, help="Dataset (default: the only one).")
@click.option("--budget", "-n", type=click.IntRange(min=1), required=True, help="Samples to select.")
@click.option("--policy", "-p", default="curator", show_default=True, help="Policy name (see: curator policies).")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="Policy parameter (JSON value), repeatable, e.g. --param novelty_weight=0.5.")
@click.option("--dedup/--no-dedup", default=True, show_default=True,
              help="Remove near copies (of each other and of labeled samples) from the candidates first.")
@click.option("--embeddings", "embedding_set", metavar="NAME",
              help="Select on a stored embedding set (imported with curator embed --from, or 'newest') without "
                   "running a model; for policies that need embeddings only (kcenter, novelty, typical, coverage).")
@click.option("--probs", "probs_set", metavar="NAME",
              help="Select on predictions imported with curator score --from FILE --name NAME, without running a "
                   "model; for policies that need probabilities only (entropy, margin, least_confidence, ...).")
@_pool_options
@executor_options
@click.pass_context
def select(ctx, dataset, budget, policy, params, dedup, embedding_set, probs_set, model, weights, steps, supervised_only,
           split,
           subsample, seed, mc_samples, as_json):
    """Select a batch of the dataset's pool with a policy and record it as a new round."""
    from curator import rounds
    from curator.exceptions import ValidationError

    settings = settings_from(ctx)
    dataset = _dataset(settings, dataset)
    connect_executor(settings)
    params = _params(params)
    if probs_set is not None:
        if model or weights or embedding_set is not None:
            raise ValidationError("--probs selects on imported predictions without a model; drop "
                                  "--model/--weights/--embeddings")
        needs = set(rounds.policy_from(policy, params).requires) - {"probs"}
        if needs:
            raise ValidationError(f"policy {policy!r} needs {', '.join(sorted(needs))}, which imported predictions do "
                                  "not give; use entropy, margin, least_confidence, variation_ratio or random, or "
                                  "pass --model")
        mc_samples = 0
    if embedding_set is not None:
        if model or weights:
            raise ValidationError("--embeddings selects on stored vectors without a model; drop --model/--weights")
        needs = set(rounds.policy_from(policy, params).requires) - {"embeddings"}
        if needs:
            raise ValidationError(f"policy {policy!r} needs {', '.join(sorted(needs))}, which a stored embedding set "
                                  "does not give; use kcenter, novelty, typical, coverage or random, or pass --model")
        mc_samples = 0
    # every argument, the dataset and the pool's size are checked before a model is trained or loaded
    rounds.check_pool_args(settings, dataset, split=split, subsample=subsample, seed=seed, mc_samples=mc_samples,
                           budget=budget, policy=policy, params=params)
    if embedding_set is not None:
        from curator.embeddings import stored_set

        trained = rounds.TrainedModel(model_id=stored_set(settings, dataset, embedding_set), adapter=None, classes=[])
    elif probs_set is not None:
        trained = rounds.TrainedModel(model_id=_imported_probs(settings, probs_set), adapter=None, classes=[],
                                      stored="probs")
    else:
        trained = _model(settings, dataset, model, seed, steps, weights, supervised_only, split)
        mc_samples = rounds.mc_samples_for(trained, policy, mc_samples, explicit=_mc_given(ctx))
    res = rounds.select_round(settings, dataset, trained, budget=budget, policy=policy, seed=seed,
                              params=params, split=split, subsample=subsample, mc_samples=mc_samples,
                              dedup=dedup)
    if as_json:
        click.echo(json.dumps({"round": res.number, "round_id": res.round_id, "policy": res.policy,
                               "model_id": trained.model_id, "pool": res.pool_size,
                               "duplicates_removed": res.duplicates_removed,
                               "sample_ids": res.sample_ids, "scores": res.scores}))
        return
    click.echo(f"{dataset}: round {res.number} selected {len(res.sample_ids)} of {res.pool_size} pool samples "
               f"with {policy} (model {trained.model_id}, seed {seed}; {res.duplicates_removed} near duplicates removed first)")
    for rank, (sid, sc) in enumerate(zip(res.sample_ids, res.scores)):
        click.echo(f"  {rank:4d}  sample {sid}  score {'-' if sc is None else f'{sc:.4f}'}")


def _imported_probs(settings, name: str) -> int:
    """The model row of the predictions imported as ``name`` (newest import of that name)."""
    from curator.embeddings import PRECOMPUTED
    from curator.exceptions import NotFoundError
    from curator.steps import run_step
    from curator.store import models as store_models

    def read(s):
        ids = [int(name)] if str(name).isdigit() else store_models.ids_named(s, name)
        rows = [store_models.get(s, i) for i in ids]
        return [r for r in rows if (r.params or {}).get("kind") == PRECOMPUTED and r.params.get("what") == "probs"]

    rows = run_step(settings, read)
    if not rows:
        raise NotFoundError(f"no imported predictions named {name!r}; import them with: curator score --from FILE "
                            f"--name {name}")
    return rows[0].id


@click.command("policies")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def policies_cmd(as_json):
    """List the registered selection policies (built-ins and plugins)."""
    from curator import policies

    rows = []
    for name in policies.available():
        p = policies.get(name)
        doc = (type(p).__doc__ or getattr(getattr(p, "fn", None), "__doc__", None) or "").strip().split("\n")[0]
        rows.append({"name": name, "origin": policies.origin(name), "requires": list(p.requires), "doc": doc})
    if as_json:
        click.echo(json.dumps(rows))
        return
    for r in rows:
        needs = ", ".join(r["requires"]) or "-"
        click.echo(f"{r['name']:17} needs {needs:32} {r['origin']}")


@click.command()
@dataset_option(required=False, help="Dataset (default: the only one).")
@click.option("--model", "-m", help=_MODEL_HELP)
@click.option("--weights", type=click.Path(dir_okay=False), help=_WEIGHTS_HELP)
@_from_options
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Seed when a model is trained.")
@click.option("--batch-size", default=1024, show_default=True, type=click.IntRange(min=1), help="Images embedded at once.")
@click.option("--self-supervised", "self_supervised", is_flag=True,
              help="Train a contrastive encoder on the dataset's own pool (no labels, no model) and store its "
                   "embeddings; reused until the pool grows by ssl_refresh_share (default 0.2).")
@click.option("--steps", "ssl_steps", type=click.IntRange(min=1),
              help="With --self-supervised: training steps (default 1500, batch 128).")
@click.option("--epochs", type=click.FloatRange(min=0, min_open=True),
              help="With --self-supervised: training passes over the pool instead of --steps.")
@click.option("--refresh", is_flag=True, help="With --self-supervised: train a new encoder whatever the pool's growth.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
def embed(ctx, dataset, model, weights, source, ids_file, set_name, seed, batch_size, self_supervised, ssl_steps,
          epochs, refresh, as_json):
    """Compute and store the dataset's embeddings with a model (resumes if interrupted).

    With --from, store embeddings computed elsewhere instead (checked: one finite row for every
    sample, no unknown or duplicate ids), as an embedding set that select --embeddings, dedup
    --embeddings and novelty then use without a model. With --self-supervised, train an encoder
    on the pool itself (resumes from its checkpoint if interrupted) and store its embeddings."""
    from curator import embeddings
    from curator.exceptions import ValidationError
    from curator.steps import run_step
    from curator.store.queries import dataset_id

    settings = settings_from(ctx)
    dataset = _dataset(settings, dataset)
    if not self_supervised and (ssl_steps or epochs or refresh):
        raise ValidationError("--steps, --epochs and --refresh go with --self-supervised")
    if self_supervised:
        if source is not None or model or weights or ids_file or set_name:
            raise ValidationError("--self-supervised trains its own encoder; drop --from/--model/--weights/--ids/--name")
        if ssl_steps and epochs:
            raise ValidationError("give --steps or --epochs, not both")
        _embed_ssl(settings, dataset, seed, ssl_steps, epochs, refresh, batch_size, as_json)
        return
    if source is not None:
        if model or weights:
            raise ValidationError("--from imports embeddings made elsewhere; drop --model/--weights (or drop --from)")
        info = embeddings.import_embeddings(settings, dataset, source, name=set_name, ids=ids_file)
        name = set_name or None
    else:
        if ids_file or set_name:
            raise ValidationError("--ids and --name go with --from FILE (imported embeddings)")
        run_step(settings, lambda s: dataset_id(s, dataset))  # an unknown dataset is refused before a model is trained
        trained = _model(settings, dataset, model, seed, weights=weights)
        info = embeddings.compute_embeddings(settings, dataset, trained.adapter, model_id=trained.model_id,
                                             batch_size=batch_size)
        name = None
    out = {"dataset": dataset, "model_id": info.model_id, "count": info.count, "dim": info.dim, "done": info.done}
    if source is not None:
        out["source"] = str(source)
    if as_json:
        click.echo(json.dumps(out))
    elif source is not None:
        click.echo(f"{dataset}: imported {info.count} embeddings of dimension {info.dim} from {source} "
                   f"(model id {info.model_id}{f', set {name}' if name else ''})")
    else:
        click.echo(f"{dataset}: {info.done}/{info.count} embeddings of dimension {info.dim} by model {info.model_id}")


def _embed_ssl(settings, dataset, seed, steps, epochs, refresh, batch_size, as_json):
    """``curator embed --self-supervised``: the dataset's encoder (reused or trained) and its set."""
    from curator import selfsupervised_store

    res = selfsupervised_store.embed_dataset(settings, dataset, seed=seed, steps=steps, epochs=epochs,
                                             refresh=refresh, batch_size=batch_size)
    info = res.info
    out = {"dataset": dataset, "model_id": res.model_id, "count": info.count, "dim": info.dim, "done": info.done,
           "self_supervised": True, "trained": res.trained, "trained_on": res.params.get("pool"),
           "steps": res.params.get("steps"), "cpu_s": res.params.get("cpu_s")}
    if as_json:
        click.echo(json.dumps(out))
        return
    how = (f"trained on {out['trained_on']} samples ({out['steps']} steps, {out['cpu_s']} CPU s)" if res.trained
           else f"reused (trained on {out['trained_on']} samples; retrained once the pool grows by "
                f"{settings.ssl_refresh_share:.0%})")
    click.echo(f"{dataset}: {info.done}/{info.count} self-supervised embeddings of dimension {info.dim} by "
               f"model {res.model_id}, encoder {how}")
