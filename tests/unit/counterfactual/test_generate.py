"""generate() (counterfactual/generate.py) end to end on the latent model and the pixel model,
and the share of rows that get the reconstruction round trip."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch

from dicap.backbones.diffusion import DiffusionBundle, build_unet, make_schedule, model_to_pixels, pixels_to_model
from dicap.backbones.guides import ClassifierFreeGuide, make_guide
from dicap.counterfactual import ddim, generate
from dicap.testing.tiny_models import T
from latent_stand_ins import CLASSES, TEMPLATE, TinyStore
from latent_stand_ins import pixels as _pixels

pytestmark = pytest.mark.usefixtures("single_thread")


# --- generate() end to end ------------------------------------------------------------------------------


def _rows(n: int) -> pd.DataFrame:
    return pd.DataFrame({"row": np.arange(n), "split": "train", "index": np.arange(n)[::-1].copy(), "label": np.arange(n) % 3})


@pytest.mark.parametrize("guide_name", ["cfg", "clip"])
def test_generate_end_to_end_with_the_latent_model(bundle, clip, guide_name):
    store, rows = TinyStore(_pixels(5, seed=4)), _rows(5)
    targets = (rows["label"].to_numpy() + 1) % 3
    guide = make_guide(guide_name, bundle, clip=clip, class_names=CLASSES, template=TEMPLATE)
    params = {"steps": 6, "inversion_depth": 0.5, "batch_size": 2, "guidance_scale": 3.0, "guide": guide_name, "sampling": "random"}
    arrays, table = generate.generate(store, rows, targets, bundle, guide, params)
    assert set(arrays) == {"images"}  # no factors: nothing to audit
    assert arrays["images"].shape == (5, 16, 16, 3) and arrays["images"].dtype == np.uint8
    assert table["y_cf"].tolist() == targets.tolist() and table["y"].tolist() == rows["label"].tolist()
    assert table["guide"].eq(guide_name).all() and table["row"].tolist() == list(range(5))
    assert table["guide_confidence"].between(0, 1).all() and table["guide_prediction"].between(0, 2).all()
    assert np.isfinite(table["reconstruction_mse"]).all()
    assert not np.array_equal(arrays["images"], store.pixels(rows))


def test_generate_keeps_the_pixel_models_bytes():
    """The embedded suite's path: to_model/to_pixels are exactly pixels_to_model/model_to_pixels."""
    torch.manual_seed(0)
    unet = build_unet(8, 3, {"block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4})
    pixel = DiffusionBundle(unet.eval().requires_grad_(False), make_schedule(T), 3)
    store, rows = TinyStore(_pixels(3, size=8, seed=5)), _rows(3)
    targets = (rows["label"].to_numpy() + 2) % 3
    guide = ClassifierFreeGuide(pixel)
    params = {"steps": 4, "inversion_depth": 0.5, "batch_size": 2, "guidance_scale": 2.0, "guide": "cfg", "sampling": "random"}
    arrays, table = generate.generate(store, rows, targets, pixel, guide, params)
    path = ddim.timestep_path(T, 4, 0.5)
    x0 = pixels_to_model(store.pixels(rows))
    y, y_cf = torch.tensor(rows["label"].to_numpy()), torch.tensor(targets)
    x_cf = torch.cat([
        ddim.regenerate(pixel, guide, ddim.invert(pixel, guide, x0[i : i + 2], y[i : i + 2], path), y_cf[i : i + 2], path, 2.0)
        for i in (0, 2)
    ])
    np.testing.assert_array_equal(arrays["images"], model_to_pixels(x_cf))
    # the diffusion classifier's probe noise is drawn per batch, as generate() batches
    probs = torch.cat([guide.class_probs(x_cf[i : i + 2]) for i in (0, 2)])
    confidence = probs.gather(1, y_cf[:, None]).squeeze(1).numpy()
    np.testing.assert_allclose(table["guide_confidence"], confidence, rtol=1e-5)


@pytest.mark.parametrize("n, batch_size", [(3, 2), (4, 4), (5, 1)])
def test_each_batch_logs_its_two_ddim_phases_and_the_shard_its_total(caplog, n, batch_size):
    torch.manual_seed(0)
    unet = build_unet(8, 3, {"block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4})
    pixel = DiffusionBundle(unet.eval().requires_grad_(False), make_schedule(T), 3)
    store, rows = TinyStore(_pixels(n, size=8, seed=5)), _rows(n)
    params = {"steps": 4, "inversion_depth": 0.5, "batch_size": batch_size, "guidance_scale": 2.0, "guide": "cfg",
              "sampling": "random", "reconstruction_fraction": 0.0}
    with caplog.at_level(logging.INFO, logger="dicap.counterfactual.generate"):
        generate.generate(store, rows, (rows["label"].to_numpy() + 1) % 3, pixel, ClassifierFreeGuide(pixel), params)
    lines = [r.getMessage() for r in caplog.records if r.name == "dicap.counterfactual.generate"]
    batches = -(-n // batch_size)
    assert len(lines) == 2 * batches + 1  # progress per phase, not per DDIM step
    for i in range(batches):
        assert lines[2 * i].startswith(f"batch {i + 1}/{batches} (") and ": abduction, DDIM inversion over 2 steps" in lines[2 * i]
        assert lines[2 * i + 1].startswith(f"batch {i + 1}/{batches} (") and ": action, regeneration" in lines[2 * i + 1]
    assert lines[-1].startswith(f"{n} counterfactuals in {batches} batches")


# --- cost switches (issue 16) ---------------------------------------------------------------------------


@pytest.mark.parametrize("fraction, measured", [(0.0, [False] * 5), (0.5, [True, False, True, False, True]), (1.0, [True] * 5)])
def test_round_trip_fraction_never_changes_the_counterfactuals(bundle, clip, fraction, measured):
    """reconstruction_fraction only decides which rows get the diagnostic: the first
    ceil(f * batch) of each batch (batches of 2 over 5 rows: 2, 2, 1); the images are
    byte-identical, and a measured row's MSE is the one every-row measurement gives."""
    store, rows = TinyStore(_pixels(5, seed=6)), _rows(5)
    targets = (rows["label"].to_numpy() + 1) % 3
    guide = make_guide("cfg", bundle, clip=clip, class_names=CLASSES, template=TEMPLATE)
    params = {"steps": 4, "inversion_depth": 0.5, "batch_size": 2, "guidance_scale": 3.0, "guide": "cfg", "sampling": "random"}
    full_arrays, full = generate.generate(store, rows, targets, bundle, guide, params)
    arrays, table = generate.generate(store, rows, targets, bundle, guide, {**params, "reconstruction_fraction": fraction})
    np.testing.assert_array_equal(arrays["images"], full_arrays["images"])
    pd.testing.assert_frame_equal(table.drop(columns="reconstruction_mse"), full.drop(columns="reconstruction_mse"))
    mse = table["reconstruction_mse"].to_numpy()
    assert np.isfinite(mse).tolist() == measured and table["reconstruction_mse"].dtype == full["reconstruction_mse"].dtype
    np.testing.assert_allclose(mse[measured], full["reconstruction_mse"].to_numpy()[measured], rtol=1e-5)


def test_reconstructed_rows_is_a_ceiling_share_and_refuses_a_bad_fraction():
    assert [generate.reconstructed_rows(8, f) for f in (0, 0.01, 0.125, 0.13, 1)] == [0, 1, 1, 2, 8]
    assert generate.reconstructed_rows(0, 0.5) == 0
    with pytest.raises(ValueError, match="reconstruction_fraction"):
        generate.reconstructed_rows(4, 1.5)
