"""The ablation tables (report/ablations.py): settings, audits and accuracy joined, and plotted."""

from __future__ import annotations

import pandas as pd
import pytest

from dicap.audit.scoring import audit_counterfactuals
from dicap.report import ablations
from dicap.report.ablations import build_ablation, plot_ablation

pytestmark = pytest.mark.usefixtures("single_thread")


def _legends(monkeypatch) -> list:
    """Each saved figure's axes as lists of their series' labels (the figure is captured, not drawn)."""
    figures = []
    monkeypatch.setattr(ablations, "save_figure", lambda fig, out: figures.append(
        [ax.get_legend_handles_labels()[1] for ax in fig.axes]))
    return figures


def _metrics(path, methods, hm):
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"method": m, "seed": 1, "split": split, "base": hm + 1, "novel": hm - 1, "hm": hm}
            for m in methods for split in ("test_unbiased", "test_conflict")]
    pd.DataFrame(rows).to_csv(path, index=False)


def test_ablation_table_joins_settings_audits_and_accuracy(world, clip, tmp_path, monkeypatch):
    audit = audit_counterfactuals(*world, clip)
    for variant, scale in (("main", 3.0), ("guidance_scale10", 10.0)):
        path = tmp_path / "audit" / "shapes" / variant / "seed1.parquet"
        path.parent.mkdir(parents=True)
        audit.assign(guidance_scale=scale, valid=audit["valid"] & (scale == 3.0)).to_parquet(path)
    # main trains config's readings (not dicap_label here), an ablation variant all three, true_cf config's
    _metrics(tmp_path / "metrics" / "shapes" / "main" / "seed1.csv", ["zeroshot", "coop", "dicap", "dicap_pos"], 70.0)
    _metrics(tmp_path / "metrics" / "shapes" / "guidance_scale10" / "seed1.csv", ["dicap", "dicap_pos", "dicap_label"], 60.0)
    _metrics(tmp_path / "metrics" / "shapes" / "true_cf" / "seed1.csv", ["dicap", "dicap_pos"], 80.0)
    table = build_ablation(
        sorted((tmp_path / "metrics").rglob("*.csv")), sorted((tmp_path / "audit").rglob("*.parquet")), ["shapes"],
        {"shapes": {"class_accuracy": 0.9}},
    )
    dicap = table[table["method"] == "dicap"].set_index("variant")
    scaled = dicap.loc["guidance_scale10"]
    assert scaled["guidance_scale"] == 10.0 and scaled["hm"] == 60.0 and scaled["valid"] == 0
    assert dicap.loc["main", "valid"] == pytest.approx(audit["valid"].mean(), abs=1e-4)
    assert dicap.loc["true_cf", "counterfactuals"] == "true" and dicap.loc["true_cf", "hm"] == 80.0
    assert dicap.loc["true_cf", "valid"] == pytest.approx(audit["true_valid"].mean(), abs=1e-4)
    assert dicap.loc["true_cf", "mse_to_true"] == 0
    assert set(table[table["variant"] == "main"]["method"]) == {"zeroshot", "coop", "dicap", "dicap_pos"}
    label = table[table["method"] == "dicap_label"].set_index("variant")
    assert list(label.index) == ["guidance_scale10"] and label.loc["guidance_scale10", "valid"] == 0
    # every reading of a variant carries the variant's one audit
    assert table[table["variant"] == "guidance_scale10"]["valid"].nunique() == 1
    for x in ("guidance_scale", "counterfactuals"):
        plot_ablation(table, x, tmp_path / f"{x}.png")
        assert (tmp_path / f"{x}.png").read_bytes()[:4] == b"\x89PNG"
    figures = _legends(monkeypatch)
    plot_ablation(table, "guidance_scale", tmp_path / "captured.png")
    audit_panel, accuracy_panel = figures[0]
    assert "valid" in audit_panel and len(audit_panel) == len(set(audit_panel))  # the audit once, not per reading
    assert [s for s in accuracy_panel if s.endswith(" hm")] == ["dicap hm", "dicap_pos hm", "dicap_label hm"]
    assert "dicap_label conflict_hm" in accuracy_panel and "coop hm" not in accuracy_panel


def test_prompt_ablation_rows_carry_the_settings_each_method_trained_with(tmp_path, monkeypatch):
    """A learner's own recipe counts: a row's setting is the plan's, not one read from the variant name."""
    from dicap.report.ablations import build_prompt_ablation, plot_prompt_ablation

    trained = {"main": ["coop", "dicap", "dicap_pos"], "cfw0.5": ["dicap", "dicap_pos"], "cfp4": ["dicap_pos", "dicap_label"]}
    for variant, methods in trained.items():
        _metrics(tmp_path / "metrics" / "shapes" / variant / "seed1.csv", methods, 60.0)

    def keys(weight, positive):
        return {"cf_weight": weight, "cf_temperature": 0.07, "cf_positive_weight": positive}

    # main lists every method the ablation trains (the plan's), dicap_label too though main did not train it
    settings = {"main": {"coop": keys(1.0, 1.0), "dicap": keys(1.0, 1.0), "dicap_pos": keys(2.0, 1.0), "dicap_label": keys(1.0, 1.0)},
                "cfw0.5": {"dicap": keys(0.5, 1.0), "dicap_pos": keys(0.5, 1.0)},
                "cfp4": {"dicap_pos": keys(2.0, 4.0), "dicap_label": keys(1.0, 4.0)}}
    table = build_prompt_ablation(sorted((tmp_path / "metrics").rglob("*.csv")), ["shapes"], settings)
    by = table.set_index(["variant", "method"])
    assert by.loc[("main", "dicap_pos"), "cf_weight"] == 2.0 and by.loc[("main", "dicap"), "cf_weight"] == 1.0
    assert by.loc[("cfw0.5", "dicap"), "cf_weight"] == 0.5 and by.loc[("cfp4", "dicap_label"), "cf_positive_weight"] == 4.0
    assert set(table["method"]) == {"dicap", "dicap_pos", "dicap_label"}  # main's coop is no method of the ablation
    plot_prompt_ablation(table, settings, tmp_path / "loss.png")
    assert (tmp_path / "loss.png").stat().st_size > 0
    # each panel draws the readings swept along its key: dicap_label has no hard negative, dicap no labelled cf
    figures = _legends(monkeypatch)
    plot_prompt_ablation(table, settings, tmp_path / "captured.png")
    weight, temperature, positive = ({label.split()[0] for label in panel} for panel in figures[0])
    assert weight == {"dicap", "dicap_pos"} and temperature == set() and positive == {"dicap_pos", "dicap_label"}
