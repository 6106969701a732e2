"""Time ``curator fiftyone sync`` over the 60,000 MNIST training images.

    nice -n 10 .venv/bin/python benchmarks/fiftyone_sync/run.py [--workspace DIR] [--scratch DIR]

The workspace is ingested once (MNIST train IDX) and reused; scores for every
sample, a round of 100 and 500 annotations are added as the engine would.
FiftyOne runs on a private mongod in ``--scratch``. Each measurement is
appended to ``results.jsonl`` beside this file as soon as it is taken.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MNIST = HERE.parents[1].parent / "shared" / "datasets" / "mnist"


def cpu_seconds() -> float:
    """CPU time of this process and of the private mongod (the machine is shared: wall time is not enough)."""
    import psutil

    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        total += sum(child.cpu_times()[:2])
    return total


def log(**row) -> None:
    row |= {"machine": f"{platform.node()} {os.cpu_count()} cores", "loadavg": os.getloadavg()[0]}
    row["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(row), flush=True)
    with open(HERE / "results.jsonl", "a") as fh:
        fh.write(json.dumps(row) + "\n")


def prepare(settings, dataset: str) -> int:
    from sqlalchemy import func, select

    from curator import ingest_idx
    from curator.store.schema import Annotation, Dataset, Round, RoundItem, Sample, Score
    from curator.store.session import transaction

    t = time.perf_counter()
    report = ingest_idx(MNIST / "train-images-idx3-ubyte.gz", MNIST / "train-labels-idx1-ubyte.gz",
                        dataset=dataset, split="train", settings=settings)
    if report.added:
        log(step="ingest", samples=report.total, seconds=round(time.perf_counter() - t, 1))
    with transaction(settings) as s:
        ds_id = s.scalar(select(Dataset.id).where(Dataset.name == dataset))
        if s.scalar(select(func.count()).select_from(Round).where(Round.dataset_id == ds_id)):
            return report.total
        ids = s.scalars(select(Sample.id).where(Sample.dataset_id == ds_id).order_by(Sample.id)).all()
        rng = np.random.default_rng(0)
        probs = rng.dirichlet(np.ones(10) * 0.3, size=len(ids))
        ent = -(probs * np.log(probs + 1e-12)).sum(1)
        top2 = np.sort(probs, 1)[:, -2:]
        rows = []
        for k, sid in enumerate(ids):
            rows += [
                {"sample_id": sid, "kind": "entropy", "value": float(ent[k])},
                {"sample_id": sid, "kind": "margin", "value": float(1 - (top2[k, 1] - top2[k, 0]))},
                {"sample_id": sid, "kind": "prediction", "value": float(probs[k].argmax())},
                {"sample_id": sid, "kind": "confidence", "value": float(probs[k].max())},
            ]
        s.execute(Score.__table__.insert(), rows)
        rnd = Round(dataset_id=ds_id, number=1, policy="entropy", budget=100, seed=0, status="selected")
        s.add(rnd)
        s.flush()
        order = np.argsort(-ent)
        s.execute(RoundItem.__table__.insert(), [
            {"round_id": rnd.id, "sample_id": ids[i], "rank": r, "score": float(ent[i])}
            for r, i in enumerate(order[:100].tolist())
        ])
        s.execute(Annotation.__table__.insert(), [
            {"sample_id": ids[i], "tool": "bench", "external_id": str(i), "label": str(i % 10),
             "skipped": False, "deleted": False}
            for i in order[100:600].tolist()
        ])
    return report.total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path, default=Path("/tmp/curator-fo-bench/ws"))
    ap.add_argument("--scratch", type=Path, default=Path("/tmp/curator-fo-bench/fo"))
    ap.add_argument("--dataset", default="mnist")
    args = ap.parse_args()
    os.environ.setdefault("CURATOR_PROGRESS", "0")

    from curator.integrations.fiftyone.isolated import private_database
    from curator.settings import Settings

    settings = Settings(workspace=args.workspace)
    n = prepare(settings, args.dataset)
    with private_database(args.scratch):
        import fiftyone as fo

        from curator.integrations.fiftyone import sync

        name = f"curator-{args.dataset}"
        steps = (
            # first sync as `curator fiftyone sync --dataset mnist` runs it: cold-start vectors computed and
            # stored, near-duplicate groups, Brain similarity index and PCA map
            ("first sync, defaults", {}, True),
            ("re-sync, nothing changed, defaults", {}, False),
            ("first sync, --no-duplicates --no-similarity --visualization none",
             {"duplicates": False, "similarity": False, "visualization": None}, True),
        )
        for step, options, fresh in steps:
            if fresh and fo.dataset_exists(name):
                fo.delete_dataset(name)
            t, c = time.perf_counter(), cpu_seconds()
            report = sync(settings, args.dataset, **options)
            log(step=step, samples=report.samples, added=report.added,
                seconds=round(time.perf_counter() - t, 1), cpu_seconds=round(cpu_seconds() - c, 1),
                fields=len(report.fields), views=report.views, embeddings=report.embeddings)


if __name__ == "__main__":
    main()
