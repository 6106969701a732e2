"""Agreement between labelers in the report, and aggregation recorded with the version (issue 17, item 4).

Answers are written to the database as a pull would leave them (two or more
labelers on the same samples); the expected figures are computed by hand in
the comments, not by the code under test.
"""

from __future__ import annotations

import pytest

DS = "agree"


def _dataset(settings, answers: list[tuple[int, str, str]]) -> list[int]:
    """Ingest len(distinct items) tiny images; store ``answers`` (item index, labeler, label) in order."""
    import numpy as np

    from curator import ingest_arrays
    from curator.store.queries import dataset_id
    from curator.store.schema import Annotation, Sample
    from curator.store.session import transaction

    n = max(i for i, _, _ in answers) + 1
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(n, 8, 8), dtype=np.uint8)
    ingest_arrays(images, np.array(["0", "1"] * (n // 2) + ["0"] * (n % 2)), dataset=DS, name="a", split="train",
                  settings=settings)
    with transaction(settings) as s:
        from sqlalchemy import select

        ids = s.scalars(select(Sample.id).where(Sample.dataset_id == dataset_id(s, DS)).order_by(Sample.id)).all()
        for k, (i, who, label) in enumerate(answers):
            s.add(Annotation(sample_id=ids[i], tool="labelstudio", external_id=f"x{k}", annotator=who, label=label))
    return ids


# alice and bob, overlap 2, classes 0/1: they agree on items 0, 1, 2, 5 and not on 3, 4
TWO = [(i, "alice", a) for i, a in enumerate("001101")] + [(i, "bob", b) for i, b in enumerate("001011")]


def test_report_has_agreement_per_class_and_per_labeler(db_settings, tmp_path):
    from curator.report import agreement_of, write_report

    _dataset(db_settings, TWO)
    agr = agreement_of(db_settings, DS)
    # p_o = 4/6; every label used 6 of 12 times: p_e = 1/2; kappa = (2/3 - 1/2) / (1/2) = 1/3
    assert agr["items"] == 6 and agr["labelers"] == 2
    assert agr["cohen_kappa"] == pytest.approx(1 / 3) and agr["fleiss_kappa"] == pytest.approx(1 / 3)
    # coincidences: o_00 = o_11 = 4, o_01 = o_10 = 2; D_o = 4/12, D_e = (144 - 72) / 132: alpha = 7/18
    assert agr["krippendorff_alpha"] == pytest.approx(7 / 18)
    # per class (Fleiss eq. 11): 1 - 2 / (12 * 1/2 * 1/2) = 1/3 for both
    assert agr["per_class"]["0"]["kappa"] == pytest.approx(1 / 3) and agr["per_class"]["1"]["answers"] == 6
    assert agr["per_labeler"]["alice"]["agreement"] == pytest.approx(4 / 6)
    assert agr["per_labeler"]["bob"]["mean_cohen_kappa"] == pytest.approx(1 / 3)

    text = write_report(db_settings, DS, tmp_path / "r", plots=False).read_text()
    assert "## Agreement between labelers" in text
    assert "6 samples answered by 2+ of 2 labelers: Fleiss' kappa 0.333, Krippendorff's alpha 0.389" in text
    assert "| 0 | 6 | 0.333 |" in text and "| 1 | 6 | 0.333 |" in text
    assert "| alice | 6 | 0.667 | 0.333 |" in text and "| bob | 6 | 0.667 | 0.333 |" in text


def test_report_without_overlap_has_no_agreement_section(settings, tmp_path):
    from curator.report import write_report

    _dataset(settings, [(0, "alice", "0"), (1, "alice", "1")])
    assert "Agreement" not in write_report(settings, DS, tmp_path / "r", plots=False).read_text()


# Five labelers on items 0-7 (truth alternating 0/1): alice, bob and erin answer the truth, carl and
# dora always the other class. On item 8, alice says 0, carl and dora say 1: the majority is 1, but
# carl and dora are known to flip the class, so Dawid-Skene reads their "1" as a 0.
TRUTH = "01010101"
FIVE = [(i, who, t) for who in ("alice", "bob", "erin") for i, t in enumerate(TRUTH)]
FIVE += [(i, who, "1" if t == "0" else "0") for who in ("carl", "dora") for i, t in enumerate(TRUTH)]
FIVE += [(8, "alice", "0"), (8, "carl", "1"), (8, "dora", "1")]


def test_version_records_its_aggregation_and_dawid_skene_outvotes_flipping_labelers(db_settings):
    from curator.versions import create_version, read_version, show_version
    from curator.exceptions import ValidationError

    ids = _dataset(db_settings, FIVE)
    maj = create_version("by-majority", dataset=DS, settings=db_settings)
    create_version("by-ds", dataset=DS, settings=db_settings, aggregate="dawid-skene")
    by_majority = read_version("by-majority", dataset=DS, settings=db_settings).as_dict()
    by_ds = read_version("by-ds", dataset=DS, settings=db_settings).as_dict()
    assert {ids[i]: t for i, t in enumerate(TRUTH)}.items() <= by_majority.items()
    assert {ids[i]: t for i, t in enumerate(TRUTH)}.items() <= by_ds.items()
    assert by_majority[ids[8]] == "1" and by_ds[ids[8]] == "0"

    assert maj.lineage["aggregation"] == {"method": "majority", "samples_with_several_answers": 9}
    rec = show_version("by-ds", dataset=DS, settings=db_settings).lineage["aggregation"]
    assert rec["method"] == "dawid-skene" and rec["changed_from_majority"] == 1
    acc = rec["labeler_accuracy"]
    assert min(acc["alice"], acc["bob"], acc["erin"]) > 0.95 and max(acc["carl"], acc["dora"]) < 0.05
    from click.testing import CliRunner

    from curator.cli import cli

    shown = CliRunner().invoke(cli, ["version", "show", "by-ds", "-d", DS],
                               env={"CURATOR_WORKSPACE": str(db_settings.workspace),
                                    "CURATOR_DB_URL": db_settings.database_url})
    assert "labels    by dawid-skene (9 samples with 2+ answers, 1 differ from the majority)" in shown.output
    with pytest.raises(ValidationError, match="use one of majority, dawid-skene"):
        create_version("bad", dataset=DS, settings=db_settings, aggregate="mean")
