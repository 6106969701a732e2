"""Test data for the FiftyOne tests: real MNIST-1989 digits in a curator workspace.

Rows a later stage would write (scores, a round, annotations) are inserted
directly, with values derived from the ground truth so a test can predict
every synced field.
"""

from __future__ import annotations

import numpy as np

from conftest import SAMPLE

N = 61  # digits ingested; the last two are planted copies: exact of digit 0, shifted of digit 1
ROUND_SIZE = 5
WRONG = (1, 2, 3)  # annotated samples whose human label disagrees with the prediction


def sample_images(n: int = N - 2) -> tuple[np.ndarray, np.ndarray]:
    from curator.ingest.idx import iter_images, read_labels

    _, images = next(iter_images(SAMPLE / "train-images-idx3-ubyte.gz", n))
    labels = read_labels(SAMPLE / "train-labels-idx1-ubyte.gz")[:n]
    return images, labels


def make_workspace(settings, dataset: str = "digits") -> dict:
    """Ingest the digits, then add scores, a round of ROUND_SIZE and annotations."""
    from sqlalchemy import select

    from curator import ingest_arrays
    from curator.store.schema import Annotation, Dataset, Round, RoundItem, Sample, Score
    from curator.store.session import transaction

    images, labels = sample_images()
    shifted = np.roll(images[1], 1, axis=1)  # a near duplicate: digit 1 moved one pixel right
    images = np.concatenate([images, images[:1], shifted[None]])  # + an exact copy of digit 0
    labels = np.concatenate([labels, labels[:2]])
    ingest_arrays(images, labels, dataset=dataset, name="digits", split="train", settings=settings)
    with transaction(settings) as s:
        ds_id = s.scalar(select(Dataset.id).where(Dataset.name == dataset))
        ids = s.scalars(select(Sample.id).where(Sample.dataset_id == ds_id).order_by(Sample.id)).all()
        gt = dict(s.execute(select(Sample.id, Sample.gt_label).where(Sample.dataset_id == ds_id)).all())
        entropy = {sid: (k * 37 % N) / N for k, sid in enumerate(ids)}  # a fixed permutation
        pred = {sid: (int(gt[sid]) + (1 if k % 7 == 0 else 0)) % 10 for k, sid in enumerate(ids)}
        for sid in ids:
            s.add(Score(sample_id=sid, kind="entropy", value=entropy[sid]))
            s.add(Score(sample_id=sid, kind="margin", value=1 - entropy[sid]))
            s.add(Score(sample_id=sid, kind="prediction", value=float(pred[sid])))
            s.add(Score(sample_id=sid, kind="confidence", value=0.5 + entropy[sid] / 4))
        rnd = Round(dataset_id=ds_id, number=1, policy="entropy", budget=ROUND_SIZE, seed=0, status="selected")
        s.add(rnd)
        s.flush()
        by_entropy = sorted(ids, key=lambda i: -entropy[i])[:ROUND_SIZE]
        for rank, sid in enumerate(by_entropy):
            s.add(RoundItem(round_id=rnd.id, sample_id=sid, rank=rank, score=entropy[sid]))
        human = {}
        for k, sid in enumerate(ids[:10]):
            label = str((pred[sid] + 1) % 10) if k in WRONG else str(pred[sid])
            human[sid] = label
            s.add(Annotation(sample_id=sid, tool="test", external_id=f"a{sid}", annotator="ann", label=label))
        # a second annotator disagrees on sample 0: agreement 0.5, the latest answer wins the tie
        bob = str((pred[ids[0]] + 2) % 10)
        s.add(Annotation(sample_id=ids[0], tool="test", external_id="b0", annotator="bob", label=bob))
        human[ids[0]] = bob
    return {
        "dataset": dataset, "ids": ids, "gt": gt, "entropy": entropy, "pred": pred,
        "round": by_entropy, "human": human, "duplicate": (ids[0], ids[-2]), "near": (ids[1], ids[-1]),
    }
