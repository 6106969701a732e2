"""``curator dedup``: exact and near-duplicate groups of a dataset, as sample URIs."""

from __future__ import annotations

import json

import click

from curator.cli import settings_from


def load_dataset_embeddings(settings, dataset: str, model: str | None):
    """(sample ids, uris, sha256, labeled mask, embeddings, embedding name) of a dataset.

    Without ``model`` the cold-start embedding is computed from the images;
    with it, the stored embedding set of that model is read (it must be complete).
    """
    import numpy as np
    from sqlalchemy import select

    from curator.exceptions import EmptyPoolError, NotFoundError
    from curator.store.models import EmbeddingSet, Model, Sample
    from curator.store.queries import agreed_labels, dataset_id
    from curator.store.session import transaction

    with transaction(settings) as s:
        ds = dataset_id(s, dataset)
        rows = s.execute(
            select(Sample.id, Sample.uri, Sample.sha256).where(Sample.dataset_id == ds).order_by(Sample.id)
        ).all()
        labeled_ids = set(agreed_labels(s, ds))
        stored = None
        if model is not None:
            stored = s.execute(
                select(EmbeddingSet.path, EmbeddingSet.sample_ids_path, EmbeddingSet.count,
                       EmbeddingSet.done, EmbeddingSet.dim)
                .join(Model, Model.id == EmbeddingSet.model_id)
                .where(EmbeddingSet.dataset_id == ds, Model.name == model)
                .order_by(EmbeddingSet.id.desc())
            ).first()
    if not rows:
        raise EmptyPoolError(f"dataset {dataset!r} has no samples; add some with: curator ingest PATH --dataset {dataset}")
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    uris = [r[1] for r in rows]
    hashes = [r[2] for r in rows]
    labeled = np.array([i in labeled_ids for i in ids.tolist()], dtype=bool)
    if model is None:
        from curator import coldstart

        return ids, uris, hashes, labeled, coldstart.embed_paths(uris), coldstart.MODEL_NAME
    if stored is None or stored.done < stored.count:
        state = "were never computed" if stored is None else f"are incomplete ({stored.done}/{stored.count} rows)"
        raise NotFoundError(
            f"embeddings of dataset {dataset!r} by model {model!r} {state}; run first: "
            f"curator embed --dataset {dataset} --model {model} (or omit --model to use the cold-start embedding)"
        )
    E = _read_array(stored.path, np.float32, (stored.count, stored.dim))
    E_ids = _read_array(stored.sample_ids_path, np.int64, (stored.count,))
    where = {int(sid): row for row, sid in enumerate(E_ids.tolist())}
    missing = [int(i) for i in ids.tolist() if int(i) not in where]
    if missing:
        raise NotFoundError(
            f"embeddings of dataset {dataset!r} by model {model!r} lack {len(missing)} samples "
            f"(e.g. id {missing[0]}), added after they were computed; run: curator embed --dataset {dataset} --model {model}"
        )
    return ids, uris, hashes, labeled, np.asarray(E[[where[int(i)] for i in ids.tolist()]]), model


def _read_array(path, dtype, shape):
    import numpy as np

    from curator.exceptions import NotFoundError

    try:
        if str(path).endswith(".npy"):
            return np.load(path, mmap_mode="r")
        return np.memmap(path, dtype=dtype, mode="r", shape=shape)
    except FileNotFoundError:
        raise NotFoundError(f"embedding file {path} is missing; recompute it with: curator embed") from None


@click.command()
@click.option("--dataset", "-d", required=True, help="Dataset name.")
@click.option("--model", "-m", help="Use this model's stored embeddings (default: the cold-start thumbnail embedding).")
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
