"""The ablation tables (report/ablations.py): settings, audits and accuracy joined, and plotted."""

from __future__ import annotations

import pandas as pd
import pytest

from dicap.audit.scoring import audit_counterfactuals
from dicap.report.ablations import build_ablation, plot_ablation

pytestmark = pytest.mark.usefixtures("single_thread")


def _metrics(path, methods, hm):
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"method": m, "seed": 1, "split": split, "base": hm + 1, "novel": hm - 1, "hm": hm}
            for m in methods for split in ("test_unbiased", "test_conflict")]
    pd.DataFrame(rows).to_csv(path, index=False)


def test_ablation_table_joins_settings_audits_and_accuracy(world, clip, tmp_path):
    audit = audit_counterfactuals(*world, clip)
    for variant, scale in (("main", 3.0), ("guidance_scale10", 10.0)):
        path = tmp_path / "audit" / "shapes" / variant / "seed1.parquet"
        path.parent.mkdir(parents=True)
        audit.assign(guidance_scale=scale, valid=audit["valid"] & (scale == 3.0)).to_parquet(path)
    _metrics(tmp_path / "metrics" / "shapes" / "main" / "seed1.csv", ["zeroshot", "coop", "dicap"], 70.0)
    _metrics(tmp_path / "metrics" / "shapes" / "guidance_scale10" / "seed1.csv", ["dicap"], 60.0)
    _metrics(tmp_path / "metrics" / "shapes" / "true_cf" / "seed1.csv", ["dicap"], 80.0)
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
    assert set(table[table["variant"] == "main"]["method"]) == {"zeroshot", "coop", "dicap"}
    for x in ("guidance_scale", "counterfactuals"):
        plot_ablation(table, x, tmp_path / f"{x}.png")
        assert (tmp_path / f"{x}.png").read_bytes()[:4] == b"\x89PNG"


def test_prompt_ablation_rows_carry_the_settings_each_method_trained_with(tmp_path):
    """A learner's own recipe counts: a row's setting is the plan's, not one read from the variant name."""
    from dicap.report.ablations import build_prompt_ablation, plot_prompt_ablation

    for variant in ("main", "cfw0.5"):
        _metrics(tmp_path / "metrics" / "shapes" / variant / "seed1.csv", ["dicap", "dicap_pos"], 60.0)
    settings = {"main": {"dicap": {"cf_weight": 1.0, "cf_temperature": 0.07}, "dicap_pos": {"cf_weight": 2.0, "cf_temperature": 0.07}},
                "cfw0.5": {"dicap": {"cf_weight": 0.5, "cf_temperature": 0.07}, "dicap_pos": {"cf_weight": 0.5, "cf_temperature": 0.07}}}
    table = build_prompt_ablation(sorted((tmp_path / "metrics").rglob("*.csv")), ["shapes"], settings)
    by = table.set_index(["variant", "method"])["cf_weight"]
    assert by[("main", "dicap_pos")] == 2.0 and by[("main", "dicap")] == 1.0 and by[("cfw0.5", "dicap")] == 0.5
    plot_prompt_ablation(table, settings, tmp_path / "loss.png")
    assert (tmp_path / "loss.png").stat().st_size > 0
