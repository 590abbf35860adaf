"""The audit's scoring (audit/scoring.py) on a tiny rendered dataset: counterfactuals that are
the truth score like the truth, and the per-seed audits average into a summary."""

from __future__ import annotations

import numpy as np
import pytest

from dicap.audit.scoring import audit_counterfactuals, summarise

pytestmark = pytest.mark.usefixtures("single_thread")


def test_a_perfect_generator_scores_like_the_truth(world):
    store, split, arrays, table, oracle = world
    audit = audit_counterfactuals(store, split, arrays, table, oracle)
    assert len(audit) == len(split)
    for column in ("valid", "kept_background", "kept_object_colour", "kept_position", "kept_scale", "faithful", "oracle_label"):
        assert np.array_equal(audit[column], audit[f"true_{column}"]), column
    assert np.allclose(audit["mse_to_true"], 0) and np.allclose(audit["ssim_to_true"], 1)
    # the unguided reference here is the factual image itself
    assert np.allclose(audit["unguided_mse_to_true"], audit["factual_mse_to_true"])
    assert (audit["factual_mse_to_true"] > 0).all() and (audit["factual_ssim_to_true"] < 1).all()
    assert (audit["faithful"] <= audit["valid"]).all()


def test_audit_refuses_counterfactuals_without_references(world):
    store, split, arrays, table, oracle = world
    with pytest.raises(KeyError, match="true_images"):
        audit_counterfactuals(store, split, {"images": arrays["images"]}, table, oracle)


def test_summary_averages_over_seeds(world):
    audit = audit_counterfactuals(*world)
    shifted = audit.assign(valid=~audit["valid"])
    summary = summarise([("shapes", "main", 1, audit), ("shapes", "main", 2, shifted)], {"shapes": {"class_accuracy": 0.5}})
    assert len(summary) == 1
    row = summary.iloc[0]
    assert row["seeds"] == "1 2" and row["counterfactuals"] == 2 * len(audit)
    assert row["valid"] == pytest.approx(0.5)  # each image is valid in exactly one of the two seeds
    assert row["oracle_heldout_class_accuracy"] == 0.5
