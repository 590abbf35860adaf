"""The method figures (report/figures.py, and the shortcut's figure that uses its helpers): one colour
per kind of method, Table 1's bars as paired differences on an axis scaled to them, and labels that
never overlap, rendered with every method the registry knows."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from dicap import layout
from dicap.prompting.methods import METHODS, ZEROSHOT, parse_method
from dicap.report.figures import (
    curve_means, draw_generator_curve, draw_table1, method_colour, plot_generator_curve, plot_table1, primary_split, table1_bars,
)
from dicap.report.paired import reading
from dicap.report.shortcut import draw_shortcut

pytestmark = pytest.mark.usefixtures("single_thread")

DICAP = [m for m in METHODS if parse_method(m).uses_counterfactuals]
LEARNERS = [m for m in METHODS if parse_method(m).trains and not parse_method(m).uses_counterfactuals]


def overlapping_labels(fig) -> list[tuple[str, str]]:
    """Pairs of tick labels of one axis whose rendered boxes overlap, and any axes the figure legend covers."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    found = []
    for ax in fig.axes:
        for labels in (ax.get_xticklabels(), ax.get_yticklabels()):
            boxes = [(t.get_text(), t.get_window_extent(renderer).padded(-0.5)) for t in labels if t.get_text()]
            found += [(a, b) for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2) if box_a.overlaps(box_b)]
        for legend in fig.legends:
            if legend.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer)):
                found.append(("legend", ax.get_title()))
    return found


def _paired(datasets=("shapes", "digits")) -> pd.DataFrame:
    """Table 1's paired rows for every learner and DiCap method the registry knows."""
    rng, rows = np.random.default_rng(0), []
    for split, dataset in itertools.product(("test_unbiased", "test_conflict"), datasets):
        for method in [*LEARNERS, *DICAP]:
            baseline = parse_method(method).learner if method in DICAP else ZEROSHOT
            for metric in ("base", "novel", "hm"):
                delta, se = rng.normal(0, 3), rng.uniform(0.2, 1.5)
                rows.append({"split": split, "dataset": dataset, "variant": layout.MAIN, "method": method,
                             "baseline_variant": layout.MAIN, "baseline": baseline, "metric": metric, "n": 3, "delta": delta,
                             "se": se, "ci_low": delta - 4.3 * se, "ci_high": delta + 4.3 * se,
                             "verdict": "gain" if delta - 4.3 * se > 0 else "loss" if delta + 4.3 * se < 0 else "within noise"})
    return pd.DataFrame(rows)


def test_a_reading_has_one_colour_on_every_learner_and_the_kinds_differ():
    assert all(method_colour(m) == method_colour(reading(m)) for m in DICAP)
    assert len({method_colour(m) for m in LEARNERS}) == 1
    kinds = {method_colour(ZEROSHOT), method_colour("coop"), method_colour("dicap"), method_colour("dicap_pos")}
    assert len(kinds) == 4


def test_the_primary_split_is_the_unbiased_one_or_the_paper_suites():
    assert primary_split(["test_conflict", "test_unbiased", "test_aligned"]) == "test_unbiased"
    assert primary_split(["test"]) == "test"


def test_dicap_bars_start_where_their_learner_ends():
    paired = _paired()
    hm = paired[(paired["split"] == "test_unbiased") & (paired["dataset"] == "shapes") & (paired["metric"] == "hm")]
    groups = table1_bars(hm)
    assert [g[0].label for g in groups] == LEARNERS
    for group in groups:
        learner = group[0]
        assert learner.bottom == 0.0
        for bar in group[1:]:
            assert parse_method(bar.label).learner == learner.label
            assert bar.bottom == pytest.approx(learner.height)
    assert sum(len(g) for g in groups) == len(LEARNERS) + len(DICAP)


def test_without_zero_shot_a_learner_stands_at_zero():
    paired = _paired()
    no_zeroshot = paired[(paired["baseline"] != ZEROSHOT) & (paired["metric"] == "hm") & (paired["split"] == "test_unbiased")
                         & (paired["dataset"] == "digits")]
    groups = table1_bars(no_zeroshot)
    assert all(g[0].height == 0.0 and "no zero-shot" in g[0].label for g in groups)


def test_table1_figure_with_every_method_has_no_overlapping_labels_and_an_axis_scaled_to_the_differences(tmp_path):
    paired = _paired()
    fig = draw_table1(paired)
    assert overlapping_labels(fig) == []
    shown = paired[(paired["split"] == "test_unbiased") & (paired["metric"] == "hm")]
    for ax in fig.axes:
        low, high = ax.get_ylim()
        assert low < 0 < high  # zero-shot's line is inside the frame
        assert high - low < 4 * (shown["delta"].abs().max() + shown["se"].max()) + 2  # never a 0-100 axis
    path = tmp_path / "paired.csv"
    paired.to_csv(path, index=False)
    plot_table1(path, tmp_path / "bars.png")
    assert (tmp_path / "bars.png").read_bytes()[:4] == b"\x89PNG"


def test_shortcut_figure_with_every_method_and_both_controls_has_no_overlapping_labels():
    rows = []
    for dataset in ("shapes", "digits"):
        runs = [(layout.MAIN, m) for m in [ZEROSHOT, *LEARNERS, *DICAP]]
        runs += [(layout.TRUE_CF, m) for m in DICAP] + [(layout.UNBIASED_SHOTS, "coop")] if dataset == "digits" else []
        for variant, method in runs:
            parsed = layout.parse_variant(variant)
            rows.append({"dataset": dataset, "method": method, "variant": variant,
                         "shots": "none" if method == ZEROSHOT else "unbiased" if parsed.unbiased_shots else "biased",
                         "counterfactuals": parsed.counterfactuals if parse_method(method).uses_counterfactuals else "none",
                         "gap": 10.0, "gap_se": 1.0})
    fig = draw_shortcut(pd.DataFrame(rows))
    assert overlapping_labels(fig) == []
    assert len(fig.axes[1].get_yticklabels()) == 1 + len(LEARNERS) + 2 * len(DICAP) + 1


def _curve(scales=(0.0, 1.0, 3.0, 10.0), depths=(0.5, 0.8, 0.9), images=5, seed=0) -> pd.DataFrame:
    """A per-image generator curve (audit/generator_curve.py's columns that the figure reads), random."""
    rng, rows = np.random.default_rng(seed), []
    factual = rng.uniform(0.3, 0.6, images)
    for scale, depth, image in itertools.product(scales, depths, range(images)):
        valid = bool(rng.random() < 0.5)
        bg = valid and bool(rng.random() < 0.7)
        rows.append({"row": image, "guidance_scale": scale, "inversion_depth": depth, "valid": valid, "valid_bg_kept": bg,
                     "faithful": bg and bool(rng.random() < 0.5), "clip_cosine_to_true": rng.uniform(0.2, 0.9),
                     "factual_clip_cosine_to_true": factual[image]})
    return pd.DataFrame(rows)


def test_curve_means_are_per_setting_over_images():
    curve = _curve()
    means = curve_means(curve)
    assert len(means) == 4 * 3 and (means["images"] == 5).all()
    assert means[["guidance_scale", "inversion_depth"]].equals(means[["guidance_scale", "inversion_depth"]].sort_values(
        ["guidance_scale", "inversion_depth"], ignore_index=True))
    one = curve[(curve["guidance_scale"] == 3.0) & (curve["inversion_depth"] == 0.8)]
    row = means[(means["guidance_scale"] == 3.0) & (means["inversion_depth"] == 0.8)].iloc[0]
    for column in ("valid", "faithful", "clip_cosine_to_true", "factual_clip_cosine_to_true"):
        assert row[column] == pytest.approx(one[column].mean())


@pytest.mark.parametrize("scale, depth", [(3.0, 0.8), (0.0, 0.5), (10.0, 0.9)])
def test_the_generator_curve_stars_the_default_in_every_panel_and_draws_a_line_per_depth(tmp_path, scale, depth):
    curves = {"shapes": _curve(seed=1), "digits": _curve(seed=2)}
    fig = draw_generator_curve(curves, scale, depth)
    assert len(fig.axes) == 2 * 3
    for ax, column in zip(fig.axes, ["valid", "faithful", "clip_cosine_to_true"] * 2):
        means = curve_means(curves[ax.get_title().split()[0]])
        stars = [line for line in ax.get_lines() if line.get_marker() == "*"]
        assert len(stars) == 1
        expected = means[(means["guidance_scale"] == scale) & (means["inversion_depth"] == depth)][column]
        np.testing.assert_allclose(stars[0].get_xydata(), [[scale, expected.iloc[0]]])
        assert len([line for line in ax.get_lines() if line.get_marker() == "o"]) == 3  # one per depth
    assert overlapping_labels(fig) == []
    curve_files = {}
    for dataset, curve in curves.items():
        curve_files[dataset] = tmp_path / f"{dataset}.parquet"
        curve.to_parquet(curve_files[dataset])
    plot_generator_curve(curve_files, scale, depth, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"


def test_every_figure_names_a_truncated_table(tmp_path):
    """The figures read through dicap.io: the job removes a damaged table and says what rebuilds it."""
    from dicap.data import embedded
    from dicap.report.figures import plot_counterfactual_grid
    from helpers import SIZES, assert_corrupt, truncated_table

    out = tmp_path / "figure.png"
    paired = truncated_table(tmp_path / "paired.csv")
    assert_corrupt(paired, plot_table1, paired, out)
    curve = truncated_table(tmp_path / "curve.parquet")
    assert_corrupt(curve, plot_generator_curve, {"shapes": curve}, 3.0, 0.8, out)
    embedded.build("shapes", SIZES, 0, tmp_path / "data")
    split = truncated_table(tmp_path / "split.parquet")
    assert_corrupt(split, plot_counterfactual_grid, tmp_path / "data", split, [], [], out)
    assert not out.exists()
