"""``curator dedup``: exact and near-duplicate groups of a dataset, as sample URIs."""

from __future__ import annotations

import json

import click

from curator.cli import dataset_option, settings_from


def _model_id(session, model: str) -> int | None:
    """A Model row id from an id, a model name or a recorded weights path."""
    from sqlalchemy import or_, select

    from curator.store.schema import Model

    if model.isdigit():
        return session.scalar(select(Model.id).where(Model.id == int(model)))
    return session.scalar(
        select(Model.id).where(or_(Model.name == model, Model.path == model)).order_by(Model.id.desc())
    )


def load_dataset_embeddings(settings, dataset: str, model: str | None):
    """(sample ids, uris, sha256, labeled mask, embeddings, embedding name) of a dataset.

    Without ``model`` the cold-start embedding is computed from the images;
    with it, the stored embedding set of that model is read (``curator.embeddings``).
    """
    import numpy as np
    from sqlalchemy import select

    from curator.exceptions import EmptyPoolError, NotFoundError
    from curator.store.schema import Sample
    from curator.store.queries import agreed_labels, dataset_id
    from curator.store.session import transaction

    run_first = (f"run first: curator embed --dataset {dataset} --model {model} "
                 "(or omit --model to use the cold-start embedding)")
    with transaction(settings) as s:
        ds = dataset_id(s, dataset)
        rows = s.execute(
            select(Sample.id, Sample.uri, Sample.sha256).where(Sample.dataset_id == ds).order_by(Sample.id)
        ).all()
        labeled_ids = set(agreed_labels(s, ds))
        stored = None
        if model is not None and rows:
            from curator import embeddings

            model_id = _model_id(s, model)
            if model_id is None:
                raise NotFoundError(f"model {model!r} is not known; {run_first}")
            try:
                e_ids, E = embeddings.load(s, settings, ds, model_id)
            except NotFoundError:
                raise NotFoundError(f"embeddings of dataset {dataset!r} by model {model!r} were never computed; "
                                    f"{run_first}") from None
            stored = (np.asarray(e_ids), E)
    if not rows:
        raise EmptyPoolError(f"dataset {dataset!r} has no samples; add some with: curator ingest PATH --dataset {dataset}")
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    uris = [r[1] for r in rows]
    hashes = [r[2] for r in rows]
    labeled = np.array([i in labeled_ids for i in ids.tolist()], dtype=bool)
    if stored is None:
        from curator import coldstart
        from curator.embeddings import coldstart_vectors

        return ids, uris, hashes, labeled, coldstart_vectors(settings, ds, ids), coldstart.MODEL_NAME
    e_ids, E = stored
    where = {int(sid): row for row, sid in enumerate(e_ids.tolist())}
    missing = [int(i) for i in ids.tolist() if int(i) not in where]
    if missing:
        raise NotFoundError(
            f"embeddings of dataset {dataset!r} by model {model!r} lack {len(missing)} samples "
            f"(e.g. id {missing[0]}) added after they were computed; {run_first}"
        )
    return ids, uris, hashes, labeled, np.asarray(E[[where[int(i)] for i in ids.tolist()]]), f"model {model}"


@click.command()
@dataset_option()
@click.option("--model", "-m", help="Use the stored embeddings of this model (id, name or .pt path; see curator embed). "
              "Default: the cold-start thumbnail embedding, computed from the images.")
@click.option("--threshold", "-t", type=float, help="Cosine similarity in (0, 1] above which two samples are copies.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
def dedup(ctx, dataset, model, threshold, as_json):
    """Find exact and near-duplicate groups of a dataset; representative first.

    Exact copies are found by content hash, near copies by cosine similarity
    of embeddings. Labeled samples represent their groups, so pool samples
    that copy a labeled one are listed under it.
    """
    from curator.dedup import check_threshold, find_duplicates

    settings = settings_from(ctx)
    t = check_threshold(threshold, caller="curator dedup --threshold")
    ids, uris, hashes, labeled, E, name = load_dataset_embeddings(settings, dataset, model)
    groups, info = find_duplicates(E, t, hashes=hashes, labeled=labeled, return_info=True)
    out = {
        "dataset": dataset,
        "embedding": name,
        "threshold": t,
        "samples": len(ids),
        "groups": [[uris[i] for i in grp.tolist()] for grp in groups],
        "sample_ids": [[int(ids[i]) for i in grp.tolist()] for grp in groups],
        "info": info,
    }
    if as_json:
        click.echo(json.dumps(out))
        return
    click.echo(f"{dataset}: {len(groups)} duplicate groups, {info['duplicates']} duplicates among "
               f"{len(ids)} samples (threshold {t}, embedding {name})")
    for grp in out["groups"]:
        click.echo(f"keep {grp[0]}")
        for uri in grp[1:]:
            click.echo(f"  drop {uri}")
