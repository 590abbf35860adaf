"""Base-to-novel metrics and Table 1 aggregation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from dicap.evaluation.metrics import accuracy_within, base_novel, harmonic_mean, zero_shot_accuracy
from dicap.report.table import build_table1, to_markdown


def test_harmonic_mean():
    assert harmonic_mean(0.0, 0.0) == 0.0
    assert harmonic_mean(0.5, 0.5) == pytest.approx(0.5)
    assert harmonic_mean(1.0, 0.0) == 0.0
    assert harmonic_mean(0.8, 0.4) == pytest.approx(2 * 0.8 * 0.4 / 1.2)
    assert harmonic_mean(80.0, 40.0) == pytest.approx(160 / 3)
    assert harmonic_mean(0.8, 0.4) < (0.8 + 0.4) / 2


def test_zero_shot_accuracy_lets_every_class_compete():
    text = np.eye(3, dtype=np.float32)
    image = np.array([[0.9, 0.1, 0.0], [0.2, 0.1, 0.7], [0.6, 0.3, 0.1]], np.float32)
    assert zero_shot_accuracy(image, np.array([0, 2, 1]), text) == pytest.approx(2 / 3)


def _features():
    """4 classes (base 0, 1; novel 2, 3), text features = one-hot directions.

    Every image's overall argmax is a class of the *other* half, but within its own half
    the right class wins (or, for the last image, the wrong one).
    """
    text = torch.eye(4)
    image = torch.tensor([
        [0.5, 0.1, 0.9, 0.0],  # label 0: novel 2 beats all, base 0 wins among base
        [0.1, 0.4, 0.0, 0.8],  # label 1: novel 3 beats all, base 1 wins among base
        [0.9, 0.0, 0.3, 0.2],  # label 2: base 0 beats all, novel 2 wins among novel
        [0.0, 0.9, 0.5, 0.1],  # label 3: base 1 beats all, novel 2 wins among novel -> wrong
    ])
    labels = torch.tensor([0, 1, 2, 3])
    return image, labels, text


def test_accuracy_within_only_lets_given_classes_compete():
    image, labels, text = _features()
    assert (image @ text.T).argmax(1).tolist() == [2, 3, 0, 1]  # all wrong among all classes
    assert accuracy_within(image, labels, text, [0, 1]) == 1.0
    assert accuracy_within(image, labels, text, [2, 3]) == 0.5
    assert accuracy_within(image, labels, text, [0, 1, 2, 3]) == 0.0
    # images of other classes are ignored, not counted as errors
    assert accuracy_within(image, labels.numpy(), text, [1]) == 1.0


def test_accuracy_within_handles_unsorted_classes():
    image, labels, text = _features()
    assert accuracy_within(image, labels, text, [1, 0]) == 1.0
    assert accuracy_within(image, labels, text, [3, 2]) == 0.5


def test_accuracy_within_without_images_raises():
    image, labels, text = _features()
    with pytest.raises(ValueError):
        accuracy_within(image[:2], labels[:2], text, [2, 3])


def test_base_novel():
    image, labels, text = _features()
    out = base_novel(image @ text.T, labels, [0, 1], [2, 3])
    assert out["base"] == pytest.approx(100.0)
    assert out["novel"] == pytest.approx(50.0)
    assert out["hm"] == pytest.approx(100 * 2 * 1.0 * 0.5 / 1.5)


# --- Table 1 ----------------------------------------------------------------------------------------

# (dataset, seed) -> method -> split -> (base, novel)
RESULTS = {
    ("shapes", 1): {"coop": {"test_unbiased": (90, 30), "test_conflict": (60, 20)}, "dicap": {"test_unbiased": (88, 50), "test_conflict": (70, 40)}},
    ("shapes", 2): {"coop": {"test_unbiased": (80, 40), "test_conflict": (50, 30)}, "dicap": {"test_unbiased": (86, 54), "test_conflict": (72, 44)}},
    ("digits", 1): {"coop": {"test_unbiased": (70, 90), "test_conflict": (40, 80)}, "dicap": {"test_unbiased": (60, 60), "test_conflict": (50, 50)}},
    ("digits", 2): {"coop": {"test_unbiased": (74, 96), "test_conflict": (44, 70)}, "dicap": {"test_unbiased": (64, 70), "test_conflict": (52, 58)}},
}


def _hm(b: float, n: float) -> float:
    return 2 * b * n / (b + n)


@pytest.fixture
def metric_files(tmp_path):
    files = []
    for (dataset, seed), methods in RESULTS.items():
        rows = [
            {"method": m, "seed": seed, "split": s, "base": b, "novel": n, "hm": _hm(b, n)}
            for m, splits in methods.items() for s, (b, n) in splits.items()
        ]
        path = tmp_path / "metrics" / dataset / "main" / f"seed{seed}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_csv(path, index=False)
        files.append(path)
    return files


def _row(table: pd.DataFrame, split: str, dataset: str, method: str) -> pd.Series:
    hit = table[(table["split"] == split) & (table["dataset"] == dataset) & (table["method"] == method)]
    assert len(hit) == 1
    return hit.iloc[0]


def test_table1_means_and_std_over_seeds(metric_files):
    table = build_table1("embedded", ["shapes", "digits"], metric_files)
    for dataset in ("shapes", "digits"):
        for method in ("coop", "dicap"):
            for split in ("test_unbiased", "test_conflict"):
                per_seed = [RESULTS[(dataset, s)][method][split] for s in (1, 2)]
                row = _row(table, split, dataset, method)
                bases, novels = [b for b, _ in per_seed], [n for _, n in per_seed]
                hms = [_hm(b, n) for b, n in per_seed]
                assert row["base"] == pytest.approx(np.mean(bases), abs=1e-4)
                assert row["novel"] == pytest.approx(np.mean(novels), abs=1e-4)
                assert row["hm"] == pytest.approx(np.mean(hms), abs=1e-4)
                assert row["base_std"] == pytest.approx(np.std(bases, ddof=1), abs=1e-4)
                assert row["novel_std"] == pytest.approx(np.std(novels, ddof=1), abs=1e-4)
                assert row["hm_std"] == pytest.approx(np.std(hms, ddof=1), abs=1e-4)
                assert row["seeds"] == "1 2"
                assert row["suite"] == "embedded"


def test_table1_average_row_is_hm_of_averages(metric_files):
    table = build_table1("embedded", ["shapes", "digits"], metric_files)
    for method in ("coop", "dicap"):
        for split in ("test_unbiased", "test_conflict"):
            per_dataset = {
                d: [RESULTS[(d, s)][method][split] for s in (1, 2)] for d in ("shapes", "digits")
            }
            base = np.mean([np.mean([b for b, _ in v]) for v in per_dataset.values()])
            novel = np.mean([np.mean([n for _, n in v]) for v in per_dataset.values()])
            mean_of_hms = np.mean([np.mean([_hm(b, n) for b, n in v]) for v in per_dataset.values()])
            row = _row(table, split, "average", method)
            assert row["base"] == pytest.approx(base, abs=1e-4)
            assert row["novel"] == pytest.approx(novel, abs=1e-4)
            assert row["hm"] == pytest.approx(_hm(base, novel), abs=1e-4)
            assert abs(_hm(base, novel) - mean_of_hms) > 1.0  # the data tell the two conventions apart
            assert np.isnan(row["hm_std"]) and np.isnan(row["base_std"])


def test_table1_order_and_markdown(metric_files):
    # files in a scrambled order: the table order comes from the datasets argument and split order
    table = build_table1("embedded", ["shapes", "digits"], metric_files[::-1])
    assert len(table) == 2 * 3 * 2
    assert table["split"].tolist() == ["test_unbiased"] * 6 + ["test_conflict"] * 6
    assert table["dataset"].tolist()[:6] == ["shapes", "shapes", "digits", "digits", "average", "average"]
    md = to_markdown(table)
    assert "### test_unbiased" in md and "### test_conflict" in md
    assert md.index("### test_unbiased") < md.index("### test_conflict")
    assert "| average | coop |" in md and "±" in md


def test_table1_rejects_file_of_unknown_dataset(metric_files, tmp_path):
    with pytest.raises(ValueError, match="dataset"):
        build_table1("embedded", ["shapes"], metric_files)
