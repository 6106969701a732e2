"""``curator dedup``: exact and near-duplicate groups of a dataset, as sample URIs."""

from __future__ import annotations

import json

import click

from curator.cli import connect_executor, dataset_option, executor_options, settings_from


def load_dataset_embeddings(settings, dataset: str, model: str | None, *, weights: str | None = None,
                            embedding_set: str | None = None):
    """(dataset id, sample ids, sha256 digests (S32), labeled mask, embeddings, embedding name) of a dataset:
    arrays, no Python object per sample (the URIs are read for the samples that need them: ``_uris``).

    Without ``model`` the cold-start embedding is used (stored, or computed from the images);
    with it, the stored embedding set of that model (an id, a model name or a recorded weights
    path: ``curator.store.models.find``; a model spec is resolved to its id first); with
    ``embedding_set``, that stored set (imported with ``curator embed --from``, or "newest").
    One step: read, then compute the missing vectors.
    """
    from pathlib import Path

    from curator.exceptions import ValidationError
    from curator.models.spec import looks_like_spec

    label = model
    if embedding_set is not None:
        if model or weights:
            raise ValidationError("--embeddings names a stored set; drop --model/--weights")
        from curator.embeddings import stored_set

        model, label = str(stored_set(settings, dataset, embedding_set)), f"set {embedding_set}"
    elif weights is not None and not model:
        raise ValidationError("--weights goes with --model SPEC")
    elif model is not None and (weights is not None or looks_like_spec(model) or Path(model).expanduser().is_file()):
        from curator.rounds import load_model

        model = str(load_model(settings, model, weights=weights, dataset=dataset).model_id)  # a spec: its model id
    import numpy as np

    from curator import coldstart
    from curator.embeddings import coldstart_vectors
    from curator.exceptions import EmptyPoolError, NotFoundError
    from curator.steps import run_step
    from curator.store import embeddings as store_emb
    from curator.store import models as store_models
    from curator.store import samples as store_samples
    from curator.store.queries import agreed_labels, dataset_id

    run_first = (f"run first: curator embed --dataset {dataset} --model {label} "
                 "(or omit --model to use the cold-start embedding)") if embedding_set is None else \
        f"import it again: curator embed --dataset {dataset} --from FILE --name {embedding_set}"

    def read(s):
        ds = dataset_id(s, dataset)
        rows = store_samples.hash_arrays(s, ds)
        labeled_ids = np.fromiter(agreed_labels(s, ds), dtype=np.int64)
        stored = None
        if model is not None and len(rows.ids):
            found = store_models.find(s, model)
            if found is None:
                raise NotFoundError(f"model {label!r} is not known; {run_first}")
            try:
                stored = store_emb.vectors_of(s, settings.embeddings_dir, ds, found.id, rows.ids)
            except store_emb.MissingSamples as exc:
                raise NotFoundError(
                    f"embeddings of dataset {dataset!r} by model {label!r} lack {len(exc.missing)} samples "
                    f"(e.g. id {exc.missing[0]}) added after they were computed; {run_first}") from None
            except NotFoundError:
                raise NotFoundError(f"embeddings of dataset {dataset!r} by model {label!r} were never computed; "
                                    f"{run_first}") from None
        return ds, rows, labeled_ids, stored

    ds, rows, labeled_ids, stored = run_step(settings, read)
    if not len(rows.ids):
        raise EmptyPoolError(f"dataset {dataset!r} has no samples; add some with: curator ingest PATH --dataset {dataset}")
    labeled = np.isin(rows.ids, labeled_ids)
    if stored is None:
        return ds, rows.ids, rows.sha256, labeled, coldstart_vectors(settings, ds, rows.ids), coldstart.MODEL_NAME
    return ds, rows.ids, rows.sha256, labeled, stored, f"model {label}" if embedding_set is None else label


def _uris(settings, sample_ids) -> list[str]:
    from curator.steps import run_step
    from curator.store import samples as store_samples

    return run_step(settings, lambda s: store_samples.uris(s, sample_ids)) if len(sample_ids) else []


@click.command()
@dataset_option()
@click.option("--model", "-m", help="Use the stored embeddings of this model (a model spec, id, or name; see curator embed). "
              "Default: the cold-start thumbnail embedding, computed from the images.")
@click.option("--weights", type=click.Path(dir_okay=False), help="Weights (state_dict) for a --model package.module:factory.")
@click.option("--embeddings", "embedding_set", metavar="NAME",
              help="Use a stored embedding set: one imported with curator embed --from FILE --name NAME, or 'newest'.")
@click.option("--self-supervised", "self_supervised", is_flag=True,
              help="Use the dataset's self-supervised embedding (curator embed --self-supervised), with a threshold "
                   "calibrated on the pool unless --threshold is given.")
@click.option("--threshold", "-t", type=float, help="Cosine similarity in (0, 1] above which two samples are copies "
              "(default: 0.99 on the cold-start embedding; calibrated with --self-supervised).")
@click.option("--verify/--no-verify", "verify", default=None,
              help="Verify each candidate pair on the images (alignment + correlation, curator.copyverify) with a "
                   "threshold calibrated on the pool. Default: on with the cold-start embedding for pools of 30 to "
                   "20,000 images (copyverify.VERIFY_AUTO_SAMPLES; ~50 CPU s a thousand images), off otherwise "
                   "(embedding cosine only). --verify goes up to millions (the images are read from their files); a "
                   "stopped verification resumes when the same command is run again (its scored pairs are kept "
                   "in the workspace's checkpoints/ folder until it finishes).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Seed of the calibration's samples and synthetic copies (--self-supervised, --verify).")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1),
              help="Processes that verify the candidate pairs (--verify; the pairs are independent).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@executor_options
@click.pass_context
def dedup(ctx, dataset, model, weights, embedding_set, self_supervised, verify, threshold, seed, workers, as_json):
    """Find exact and near-duplicate groups of a dataset; representative first.

    Exact copies are found by content hash, near copies by verifying the
    cold-start embedding's nearest candidates on the images (default), or by
    cosine similarity of embeddings. Labeled samples represent their groups,
    so pool samples that copy a labeled one are listed under it.
    """
    import numpy as np

    from curator.dedup import check_threshold, find_duplicates
    from curator.exceptions import ValidationError

    settings = settings_from(ctx)
    t = check_threshold(threshold, caller="curator dedup --threshold")
    calibration = None
    if self_supervised:
        if model or weights or embedding_set:
            raise ValidationError("--self-supervised uses the dataset's own encoder; drop --model/--weights/--embeddings")
        from curator import selfsupervised_store
        from curator.steps import run_step

        row = run_step(settings, lambda s: selfsupervised_store.newest_encoder(s, dataset))
        if row is None:
            from curator.exceptions import NotFoundError

            raise NotFoundError(f"dataset {dataset!r} has no self-supervised embedding; compute it first: "
                                f"curator embed --dataset {dataset} --self-supervised")
        embedding_set = str(row.id)
        if threshold is None:
            calibration = selfsupervised_store.calibrate_dataset(settings, dataset, seed=seed)
            t = check_threshold(calibration["threshold"], caller="curator dedup (calibrated)")
    from curator import copyverify

    if verify and (self_supervised or model or embedding_set):
        raise ValidationError("--verify checks the cold-start thumbnail's candidates on the images; "
                              "drop --model/--embeddings/--self-supervised, or drop --verify")
    executor = connect_executor(settings)
    _, ids, hashes, labeled, E, name = load_dataset_embeddings(settings, dataset, model, weights=weights,
                                                              embedding_set=embedding_set)
    if verify is None:  # auto: where the images can be held and (without --threshold) calibrated
        from curator.dedup import MIN_CALIBRATION_SAMPLES

        verify = (not (self_supervised or model or embedding_set) and len(ids) <= copyverify.VERIFY_AUTO_SAMPLES
                  and (threshold is not None or len(ids) >= MIN_CALIBRATION_SAMPLES))
    method = "cosine"
    if verify:
        images = copyverify.load_images(_uris(settings, ids))  # held, or read when needed (ImageFiles)
        from curator.names import dataset_name

        # a stopped verification (hours at 100k images) resumes when the same command is run again
        checkpoint = settings.checkpoints_dir / f"dedup-{dataset_name(dataset)}"
        groups, info = copyverify.find_copies(images, threshold, hashes=hashes, labeled=labeled, embeddings=E,
                                              seed=seed, workers=workers, checkpoint=checkpoint)
        calibration, t, method = info["calibration"], info["threshold"], info["method"]
    else:
        groups, info = find_duplicates(E, t, hashes=hashes, labeled=labeled, return_info=True,
                                       search=executor.self_pairs)
    members = np.concatenate(groups) if groups else np.zeros(0, np.int64)
    uris = dict(zip(members.tolist(), _uris(settings, ids[members])))  # the URIs of grouped samples only
    out = {
        "dataset": dataset,
        "embedding": name,
        "method": method,
        "threshold": t,
        "threshold_source": "given" if threshold is not None else ("calibrated" if calibration else "default"),
        "calibration": calibration,
        "samples": len(ids),
        "groups": [[uris[i] for i in grp.tolist()] for grp in groups],
        "sample_ids": [[int(ids[i]) for i in grp.tolist()] for grp in groups],
        "info": info,
    }
    if as_json:
        click.echo(json.dumps(out))
        return
    click.echo(f"{dataset}: {len(groups)} duplicate groups, {info['duplicates']} duplicates among "
               f"{len(ids)} samples ({method}, threshold {t}{' calibrated on the pool' if calibration else ''}, "
               f"embedding {name})")
    for grp in out["groups"]:
        click.echo(f"keep {grp[0]}")
        for uri in grp[1:]:
            click.echo(f"  drop {uri}")
