"""The audit's scoring (audit/scoring.py) on a tiny rendered dataset and a tiny random CLIP:
counterfactuals that are the truth score like the truth, an unchanged image scores CLD's
"no change", a "no object" reading is never valid, and the per-seed audits average into a
summary."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from dicap.audit.scoring import audit_counterfactuals, summarise

pytestmark = pytest.mark.usefixtures("single_thread")


NO_CHANGE_CLD = math.log(0.8 + 0.2 * math.e)  # CLD of x_cf = x: p1 = 0, p2 = 1


def test_a_perfect_generator_scores_like_the_truth(world, clip):
    store, split, arrays, table, oracle = world
    audit = audit_counterfactuals(store, split, arrays, table, oracle, clip)
    assert len(audit) == len(split)
    for column in ("valid", "no_object", "kept_background", "kept_object_colour", "kept_position", "kept_scale",
                   "valid_bg_kept", "faithful", "oracle_label", "cld"):
        assert np.array_equal(audit[column], audit[f"true_{column}"]), column
    assert np.allclose(audit["mse_to_true"], 0) and np.allclose(audit["ssim_to_true"], 1)
    assert np.allclose(audit["clip_cosine_to_true"], 1, atol=1e-5)
    # the unguided reference here is the factual image itself
    assert np.allclose(audit["unguided_mse_to_true"], audit["factual_mse_to_true"])
    assert np.allclose(audit["unguided_clip_cosine_to_true"], audit["factual_clip_cosine_to_true"], atol=1e-5)
    assert np.allclose(audit["unguided_cld"], NO_CHANGE_CLD, atol=1e-6)
    assert (audit["factual_mse_to_true"] > 0).all() and (audit["factual_ssim_to_true"] < 1).all()
    assert (audit["factual_clip_cosine_to_true"] < 1 - 1e-4).all()
    assert audit["cld"].between(0, 1).all() and not np.allclose(audit["cld"], NO_CHANGE_CLD)
    for prefix in ("", "true_", "unguided_"):
        assert (audit[f"{prefix}faithful"] <= audit[f"{prefix}valid_bg_kept"]).all()
        assert (audit[f"{prefix}valid_bg_kept"] == (audit[f"{prefix}valid"] & audit[f"{prefix}kept_background"])).all()


def test_a_no_object_reading_is_never_valid(world, clip):
    """An oracle that sees no object anywhere (its class head pinned to the extra class; the
    trained oracle reads blank and noise images so: test_oracle.py) finds nothing valid."""
    store, split, arrays, table, oracle = world
    blind = copy.deepcopy(oracle)
    head = blind.heads["class"]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.arange(oracle.n_classes + 1, dtype=torch.float32))  # the last, no object, wins
    audit = audit_counterfactuals(store, split, arrays, table, blind, clip)
    for prefix in ("", "true_", "unguided_"):
        assert audit[f"{prefix}no_object"].all() and (audit[f"{prefix}oracle_label"] == oracle.n_classes).all()
        assert not audit[f"{prefix}valid"].any() and not audit[f"{prefix}valid_bg_kept"].any()
        assert not audit[f"{prefix}faithful"].any()
    # the same images under the trained oracle: the truth is valid, and read as an object
    seen = audit_counterfactuals(store, split, arrays, table, oracle, clip)
    assert seen["true_valid"].any() and not seen["true_no_object"].all()


def test_audit_refuses_counterfactuals_without_references(world, clip):
    store, split, arrays, table, oracle = world
    with pytest.raises(KeyError, match="true_images"):
        audit_counterfactuals(store, split, {"images": arrays["images"]}, table, oracle, clip)


def test_summary_averages_over_seeds(world, clip):
    audit = audit_counterfactuals(*world, clip)
    shifted = audit.assign(valid=~audit["valid"])
    summary = summarise([("shapes", "main", 1, audit), ("shapes", "main", 2, shifted)], {"shapes": {"class_accuracy": 0.5}})
    assert len(summary) == 1
    row = summary.iloc[0]
    assert row["seeds"] == "1 2" and row["counterfactuals"] == 2 * len(audit)
    assert row["valid"] == pytest.approx(0.5)  # each image is valid in exactly one of the two seeds
    assert row["oracle_heldout_class_accuracy"] == 0.5


@pytest.mark.parametrize("damaged", [0, 1])
def test_a_truncated_audit_names_itself(tmp_path, damaged):
    """read_audits goes through dicap.io: the job removes the damaged file and says what rebuilds it."""
    import pandas as pd

    from dicap.audit.scoring import read_audits
    from dicap.io import write_table
    from helpers import assert_corrupt, truncated_table

    paths = [tmp_path / f"build/embedded/audit/shapes/main/seed{s}.parquet" for s in (1, 2)]
    for path in paths:
        write_table(path, pd.DataFrame({"valid": [True]}))
    truncated_table(paths[damaged])
    assert_corrupt(paths[damaged], read_audits, paths, ["shapes"])
