"""Table 1 and the backbone report (report/table.py): means, stds and SEs over seeds, the average row,
order and markdown, the paired comparisons, and the backbone report's averages and linear probe."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from dicap.report.table import build_paired, build_table1, headline_split, is_spread, metrics_tree, read_metrics, to_markdown, write_metrics_folder

pytestmark = pytest.mark.usefixtures("single_thread")


def _backbone_inputs(tmp_path, dataset: str):
    from dicap import layout
    from dicap.io import write_json

    paths = {"clip": tmp_path / layout.CLIP_REPORT.format(dataset=dataset),
             "diffusion": tmp_path / layout.DIFFUSION_REPORT.format(dataset=dataset)}
    write_json(paths["clip"], {"zero_shot_accuracy": 0.5})
    write_json(paths["diffusion"], {"final_loss": None})
    cf = tmp_path / layout.CF_TABLE.format(dataset=dataset, variant=layout.MAIN, seed=1)
    cf.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"y_cf": [1, 2, 0], "guide_prediction": [1, 0, 0], "guide_confidence": [0.5, 0.5, 0.5],
                  "reconstruction_mse": [0.02, np.nan, 0.04]}).to_parquet(cf)
    return paths, cf


def test_backbone_report_averages_the_sampled_round_trips(tmp_path):
    """Rows whose round trip was not sampled (NaN) leave the report's mean to the measured ones;
    the guide's own posterior is no quality score and stays out of the report."""
    from dicap.report.table import build_backbone_report

    paths, cf = _backbone_inputs(tmp_path, "caltech101")
    out = tmp_path / "backbones.csv"
    build_backbone_report(["caltech101"], [paths["clip"]], [paths["diffusion"]], [cf], out)
    report = pd.read_csv(out)
    assert report["inversion_reconstruction_mse"].tolist() == [0.03]
    assert not [c for c in report if c.startswith("guide_")]
    assert not [c for c in report if c.startswith("diffusion_class_read")]  # no check (the paper suite)


@pytest.mark.parametrize("guidance_scale", [1.0, 3.0])
def test_backbone_report_carries_the_diffusion_checks_reads(tmp_path, guidance_scale):
    from dicap import layout
    from dicap.audit.diffusion_check import check_report
    from dicap.io import write_json
    from dicap.report.table import build_backbone_report

    paths, cf = _backbone_inputs(tmp_path, "shapes")
    check = tmp_path / layout.DIFFUSION_CHECK.format(dataset="shapes")
    reads = {1.0: np.array([0.9, 0.5, 1.0]), guidance_scale: np.array([1.0, 0.8, 0.6]) if guidance_scale != 1 else np.array([0.9, 0.5, 1.0])}
    write_json(check, check_report(reads, ["circle", "square", "star"], 0.9, "m", guidance_scale))
    out = tmp_path / "backbones.csv"
    build_backbone_report(["shapes"], [paths["clip"]], [paths["diffusion"]], [cf], out, [check])
    row = pd.read_csv(out).iloc[0]
    assert row["diffusion_class_read_min"] == 0.5 and row["diffusion_class_read_mean"] == pytest.approx(0.8)
    guided = reads[guidance_scale]
    assert [row[f"diffusion_class_read_{c}"] for c in ("circle", "square", "star")] == list(guided)
    assert row["diffusion_class_read_guided_min"] == guided.min()
    assert row["diffusion_class_read_guided_mean"] == pytest.approx(round(guided.mean(), 4))


@pytest.mark.parametrize("probe, expected", [(0.93, 0.93), ({"accuracy": 0.5, "steps": 100}, 0.5), (None, None)])
def test_backbone_report_carries_the_linear_probe_only_where_measured(tmp_path, probe, expected):
    from dicap import layout
    from dicap.io import write_json
    from dicap.report.table import LINEAR_PROBE, build_backbone_report

    clip = {"zero_shot_accuracy": 0.5} | ({LINEAR_PROBE: probe} if probe is not None else {})
    paths = {"clip": tmp_path / layout.CLIP_REPORT.format(dataset="shapes"),
             "diffusion": tmp_path / layout.DIFFUSION_REPORT.format(dataset="shapes")}
    write_json(paths["clip"], clip)
    write_json(paths["diffusion"], {"final_loss": 0.1})
    cf = tmp_path / layout.CF_TABLE.format(dataset="shapes", variant=layout.MAIN, seed=1)
    cf.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"y_cf": [1], "guide_prediction": [1], "guide_confidence": [0.5], "reconstruction_mse": [0.02]}).to_parquet(cf)
    out = tmp_path / "backbones.csv"
    build_backbone_report(["shapes"], [paths["clip"]], [paths["diffusion"]], [cf], out)
    report = pd.read_csv(out)
    assert (LINEAR_PROBE in report) == (expected is not None)
    if expected is not None:
        assert report[LINEAR_PROBE].tolist() == [expected]


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
                assert row["n"] == 2
                for metric, values in (("base", bases), ("novel", novels), ("hm", hms)):
                    assert row[f"{metric}_se"] == pytest.approx(np.std(values, ddof=1) / np.sqrt(2), abs=1e-4)


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
    shapes_coop = _row(table, "test_unbiased", "shapes", "coop")
    assert f"| shapes | coop | {shapes_coop['base']:.2f} ± {shapes_coop['base_se']:.2f} |" in md  # the SE, not the std
    assert shapes_coop["base_se"] != pytest.approx(shapes_coop["base_std"])


def test_dvc_metrics_are_hm_per_dataset_and_method_on_the_first_split(metric_files, tmp_path):
    table = build_table1("embedded", ["shapes", "digits"], metric_files)
    tree = metrics_tree(table)
    assert list(tree) == ["shapes", "digits", "average"]
    for dataset, methods in tree.items():
        assert list(methods) == ["coop", "dicap"]
        for method, hm in methods.items():
            assert hm == pytest.approx(_row(table, "test_unbiased", dataset, method)["hm"])
            assert isinstance(hm, float)  # json-serialisable, not numpy
    folder = tmp_path / "table1_metrics"
    folder.mkdir()
    (folder / "removed_dataset.json").write_text("{}")
    write_metrics_folder(folder, tree)
    assert sorted(p.name for p in folder.iterdir()) == ["average.json", "digits.json", "shapes.json"]
    assert json.loads((folder / "digits.json").read_text()) == pytest.approx(tree["digits"])


@pytest.mark.parametrize("splits, first", [
    (["test_conflict", "test_unbiased"], "test_unbiased"),
    (["test_conflict", "test_aligned"], "test_aligned"),
    (["test"], "test"),
    (["other", "test_conflict"], "test_conflict"),  # a split outside the order comes last
])
def test_the_headline_split_is_the_first_in_table1s_order(splits, first):
    assert headline_split(pd.DataFrame({"split": splits})) == first


def test_spread_columns_are_told_from_results():
    assert all(is_spread(c) for c in ("base_std", "hm_se", "n", "gap_se"))
    assert not any(is_spread(c) for c in ("base", "hm", "novel_gap", "seeds", "std_dev"))


def test_paired_section_judges_dicap_against_its_learner(metric_files):
    per_seed = read_metrics(metric_files, ["shapes", "digits"])
    paired = build_paired(per_seed, ["shapes", "digits"])
    dicap = paired[(paired["method"] == "dicap") & (paired["metric"] == "base")].set_index(["split", "dataset"])
    # shapes, test_unbiased: dicap - coop per seed = 88 - 90, 86 - 80
    assert dicap.loc[("test_unbiased", "shapes"), "delta"] == pytest.approx(2.0)
    assert dicap.loc[("test_unbiased", "shapes"), "se"] == pytest.approx(np.std([-2, 6], ddof=1) / np.sqrt(2))
    assert dicap.loc[("test_unbiased", "shapes"), "verdict"] == "within noise"
    assert set(paired["baseline"]) == {"coop"}  # the fixture has no zero-shot: no learner row
    assert paired["split"].tolist() == sorted(paired["split"], key=["test_unbiased", "test_conflict"].index)
    table = build_table1("embedded", ["shapes", "digits"], metric_files)
    md = to_markdown(table, paired)
    assert "#### test_unbiased: DiCap against its own learner" in md
    assert "| shapes | dicap | coop | +2.00 ± 4.00 [" in md


def test_table1_rejects_file_of_unknown_dataset(metric_files, tmp_path):
    with pytest.raises(ValueError, match="dataset"):
        build_table1("embedded", ["shapes"], metric_files)
