"""Bad values never reach a table: empty shards, jobs that refuse non-finite or degenerate
outputs, a counterfactual job that refuses a diffusion model the oracle's check failed, and the
generator curve's jobs end to end, run through the real ``dicap`` commands on tiny models (seconds)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest

from dicap.cli import main
from dicap.counterfactual import generate
from dicap.guards import check_finite, check_not_constant, check_table_finite
from dicap.io import load_arrays, save_arrays

pytestmark = pytest.mark.usefixtures("single_thread")

SIZES = {"image_size": 16, "pretrain_per_class": 2, "pool_per_class": 3, "val_per_class": 1, "test_per_class": 1, "render_seed": 0}
CLIP_PARAMS = {
    "template": "a photo of a {}.",
    "model": {"embed_dim": 16, "vision_cfg": {"timm_model_name": "test_resnet", "timm_model_pretrained": False, "timm_pool": "avg",
                                              "timm_proj": "linear", "image_size": 16},
              "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1, "mlp_ratio": 2.0}},
    "train": {"steps": 1, "batch_size": 8, "lr": 1e-3, "weight_decay": 0.0, "seed": 0},
}
DIFFUSION_PARAMS = {
    "model": {"block_out_channels": [16, 32], "layers_per_block": 1, "norm_num_groups": 8},
    "train": {"steps": 1, "batch_size": 8, "lr": 1e-3, "label_dropout": 0.1, "num_train_timesteps": 1000, "seed": 0},
}
ORACLE_PARAMS = {"steps": 5, "batch_size": 16, "lr": 0.003, "width": 8, "noise_std": 0.05, "seed": 0}
CF_PARAMS = {"guide": "cfg", "guidance_scale": 3.0, "steps": 2, "inversion_depth": 0.5, "sampling": "similarity", "batch_size": 4}
PROMPT_PARAMS = {"n_ctx": 2, "ctx_init": None, "epochs": 1, "batch_size": 4, "lr": 0.002, "weight_decay": 0.0005,
                 "cf_weight": 1.0, "cf_temperature": 0.07, "cf_positive_weight": 0.0}


def run(*argv: str) -> None:
    assert main([str(a) for a in argv]) == 0, argv


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, single_thread):
    """A rendered dataset, a 5-image split (one shot per base class), and 1-step backbones."""
    root = tmp_path_factory.mktemp("guards")
    run("prepare_dataset", "--dataset", "shapes", "--params", json.dumps(SIZES), "--out", root / "data")
    run("make_split", "--dataset-dir", root / "data", "--seed", 1, "--params", json.dumps({"shots": 1}), "--out", root / "split.parquet")
    run("clip_backbone", "--dataset-dir", root / "data", "--params", json.dumps(CLIP_PARAMS), "--out", root / "clip",
        "--report", root / "clip.json", "--class-text-features", root / "text.safetensors")
    run("diffusion_backbone", "--dataset-dir", root / "data", "--params", json.dumps(DIFFUSION_PARAMS), "--out", root / "diffusion",
        "--report", root / "diffusion.json")
    return root


def shard_argv(root, shard: int, shards: int, out) -> list:
    return ["counterfactual_shard", "--dataset-dir", root / "data", "--clip-dir", root / "clip", "--diffusion-dir", root / "diffusion",
            "--class-text-features", root / "text.safetensors",
            "--split", root / "split.parquet", "--seed", 1, "--shard", shard, "--shards", shards,
            "--params", json.dumps({**CF_PARAMS, "shards": shards}),
            "--out-images", out / f"shard{shard}.safetensors", "--out-table", out / f"shard{shard}.parquet"]


def _fails(argv, caplog, *needles) -> str:
    """A dicap command exits 1 with one error line holding every needle."""
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="dicap"):
        assert main([str(a) for a in argv]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0], errors
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.mark.parametrize("threshold, passed", [(0.0, True), (1.0, False)])
def test_a_counterfactual_job_refuses_a_diffusion_model_below_the_check(tiny, tmp_path, caplog, threshold, passed):
    """A 1-step model draws noise: no class is read in every sample (1.0 refuses), and 0 refuses nothing."""
    oracle = tmp_path / "oracle"
    run("oracle", "--dataset-dir", tiny / "data", "--params", json.dumps(ORACLE_PARAMS), "--out", oracle,
        "--report", tmp_path / "oracle.json")
    check = tmp_path / "check.json"
    run("diffusion_check", "--dataset-dir", tiny / "data", "--diffusion-dir", tiny / "diffusion", "--oracle-dir", oracle,
        "--params", json.dumps({"min_class_read": threshold, "samples_per_class": 2, "seed": 0}), "--steps", 2,
        "--guidance-scale", 3.0, "--out", check)
    report = json.loads(check.read_text())
    assert report["passed"] is passed and set(report["reads"]) == {"1", "3"} and len(report["reads"]["1"]) == 10
    out = tmp_path / "cf"
    argv = [*shard_argv(tiny, 0, 1, out), "--diffusion-check", check]
    if passed:
        run(*argv)
        assert (out / "shard0.safetensors").exists() and (out / "shard0.parquet").exists()
        return
    weakest, read = min(report["reads"]["1"].items(), key=lambda kv: kv[1])
    error = _fails(argv, caplog, f"diffusion model {tiny / 'diffusion'} reads class {weakest} at {read:.2f} < "
                                 "diffusion.check.min_class_read 1: train it longer (diffusion.train.steps) or lower the threshold")
    assert error == report["refusal"] and not out.exists()


def test_the_generator_curve_job_writes_a_finite_curve_and_its_figure_a_png(tiny, tmp_path):
    """The rules' command lines for the curve and its figure, on the 1-step models: every image
    at every setting, the default among them, and a figure of it."""
    oracle = tmp_path / "oracle"
    run("oracle", "--dataset-dir", tiny / "data", "--params", json.dumps(ORACLE_PARAMS), "--out", oracle,
        "--report", tmp_path / "oracle.json")
    curve = tmp_path / "audit" / "shapes" / "generator_curve.parquet"
    run("generator_curve", "--dataset-dir", tiny / "data", "--split", tiny / "split.parquet", "--diffusion-dir", tiny / "diffusion",
        "--oracle-dir", oracle, "--clip-dir", tiny / "clip", "--class-text-features", tiny / "text.safetensors",
        "--params", json.dumps(CF_PARAMS), "--scales", 0, 3, "--depths", 0.5, 0.8, "--images", 4, "--seed", 1, "--out", curve)
    frame = pd.read_parquet(curve)
    assert len(frame) == 4 * 2 * 2 and set(frame["guidance_scale"]) == {0.0, 3.0} and set(frame["inversion_depth"]) == {0.5, 0.8}
    assert np.isfinite(frame["clip_cosine_to_true"]).all() and frame["valid"].dtype == bool
    png = tmp_path / "generator_curve.png"
    run("figure_generator_curve", "--datasets", "shapes", "--curves", curve, "--guidance-scale", 3.0, "--inversion-depth", 0.5,
        "--out", png)
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_more_shards_than_images_completes_and_merges(tiny, tmp_path, caplog):
    """Today: shard 5 of 7 over 5 images dies with 'need at least one array to stack'."""
    n = len(pd.read_parquet(tiny / "split.parquet"))
    shards = n + 2
    with caplog.at_level(logging.INFO, logger="dicap"):
        for k in range(shards):
            run(*shard_argv(tiny, k, shards, tmp_path))
    assert any("is empty" in r.getMessage() for r in caplog.records)
    empty = load_arrays(tmp_path / f"shard{shards - 1}.safetensors")
    full = load_arrays(tmp_path / "shard0.safetensors")
    assert set(empty) == set(full) == {"images", "true_images", "unguided_images"}
    for key in full:  # (0, H, W, 3): the same image shape as a full shard, so they concatenate
        assert empty[key].shape == (0, *full[key].shape[1:]) and empty[key].dtype == full[key].dtype
    assert len(pd.read_parquet(tmp_path / f"shard{shards - 1}.parquet")) == 0
    merged = tmp_path / "merged"
    run("merge_counterfactuals", "--split", tiny / "split.parquet",
        "--images", *[tmp_path / f"shard{k}.safetensors" for k in range(shards)],
        "--tables", *[tmp_path / f"shard{k}.parquet" for k in range(shards)],
        "--out-images", merged.with_suffix(".safetensors"), "--out-table", merged.with_suffix(".parquet"))
    table = pd.read_parquet(merged.with_suffix(".parquet"))
    assert table["row"].tolist() == list(range(n))
    assert table["y_cf"].dtype.kind == "i" and table["reconstruction_mse"].dtype.kind == "f"
    assert load_arrays(merged.with_suffix(".safetensors"))["images"].shape[0] == n


def test_all_black_counterfactuals_are_refused_and_nothing_is_written(tiny, tmp_path, caplog, monkeypatch):
    """What a NaN guidance scale produced: every image one value, a NaN confidence column."""

    real = generate.generate

    def black(*args, **kwargs):
        arrays, table = real(*args, **kwargs)
        return {**arrays, "images": np.zeros_like(arrays["images"])}, table

    monkeypatch.setattr(generate, "generate", black)
    argv = shard_argv(tiny, 0, 1, tmp_path)
    _fails(argv, caplog, str(tmp_path / "shard0.safetensors"), "one constant value (0)")
    assert list(tmp_path.iterdir()) == []

    def nan_confidence(*args, **kwargs):
        arrays, table = real(*args, **kwargs)
        return arrays, table.assign(guide_confidence=np.nan)

    monkeypatch.setattr(generate, "generate", nan_confidence)
    _fails(argv, caplog, str(tmp_path / "shard0.parquet"), "'guide_confidence'", "NaN")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def counterfactuals(tiny):
    """The whole split's counterfactuals, in one shard (no merge needed)."""
    run(*shard_argv(tiny, 0, 1, tiny))
    return tiny / "shard0.safetensors", tiny / "shard0.parquet"


def train_features_argv(root, counterfactuals, out) -> list:
    images, table = counterfactuals
    return ["encode_train_features", "--dataset-dir", root / "data", "--clip-dir", root / "clip", "--split", root / "split.parquet",
            "--counterfactual-images", images, "--counterfactual-table", table, "--variant", "main", "--out", out]


def test_features_with_nan_are_refused(tiny, counterfactuals, tmp_path, caplog, monkeypatch):
    from dicap.backbones.clip import ClipBundle

    real = ClipBundle.encode_rows
    monkeypatch.setattr(ClipBundle, "encode_rows", lambda *a, **k: real(*a, **k) * np.nan)
    out = tmp_path / "features.safetensors"
    _fails(train_features_argv(tiny, counterfactuals, out), caplog, str(out), "'train'", "NaN")
    assert not out.exists()


def test_train_features_encode_the_variants_counterfactuals(tiny, counterfactuals, tmp_path):
    """true_cf encodes main's true counterfactuals, every other variant the generated ones."""
    generated, true = tmp_path / "generated.safetensors", tmp_path / "true.safetensors"
    run(*train_features_argv(tiny, counterfactuals, generated))
    run(*[*train_features_argv(tiny, counterfactuals, true)[:-3], "true_cf", "--out", true])
    a, b = load_arrays(generated), load_arrays(true)
    assert np.array_equal(a["train"], b["train"]) and np.array_equal(a["cf_labels"], b["cf_labels"])
    assert not np.array_equal(a["cf"], b["cf"])


@pytest.fixture(scope="module")
def features(tiny, counterfactuals):
    run(*train_features_argv(tiny, counterfactuals, tiny / "train.safetensors"))
    run("encode_eval_features", "--dataset-dir", tiny / "data", "--clip-dir", tiny / "clip", "--out", tiny / "eval.safetensors")
    return tiny


def test_a_prompt_trained_on_nan_features_is_not_written(features, tmp_path, caplog):
    feats = load_arrays(features / "train.safetensors")
    poisoned = tmp_path / "train.safetensors"
    save_arrays(poisoned, {**feats, "train": feats["train"] * np.nan})
    out = tmp_path / "coop.safetensors"
    _fails(["train_prompt", "--dataset-dir", features / "data", "--clip-dir", features / "clip", "--seed", 1,
            "--params", json.dumps(PROMPT_PARAMS), "--method", "coop", "--features", poisoned, "--out", out],
           caplog, str(out), "'ctx'", "NaN")
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_a_prompt_context_with_nan_is_refused_by_evaluate(features, tmp_path, caplog):
    prompt = tmp_path / "ctx.safetensors"
    save_arrays(prompt, {"ctx": np.full((2, 16), np.nan, np.float32)})
    out = tmp_path / "metrics.csv"
    _fails(["evaluate", "--dataset-dir", features / "data", "--clip-dir", features / "clip", "--seed", 1,
            "--params", json.dumps({"coop": PROMPT_PARAMS}), "--features", features / "eval.safetensors",
            "--prompts", prompt, "--methods", "coop", "--out", out],
           caplog, str(out), str(prompt), "'ctx'", "32 NaN")
    assert not out.exists()


def test_eval_features_with_inf_are_refused_by_evaluate(features, tmp_path, caplog):
    feats = load_arrays(features / "eval.safetensors")
    bad = tmp_path / "eval.safetensors"
    save_arrays(bad, {**feats, "test_backgrounds": np.full_like(feats["test_backgrounds"], np.inf)})
    prompt = tmp_path / "ctx.safetensors"
    save_arrays(prompt, {"ctx": np.zeros((2, 16), np.float32)})
    out = tmp_path / "metrics.csv"
    _fails(["evaluate", "--dataset-dir", features / "data", "--clip-dir", features / "clip", "--seed", 1,
            "--params", json.dumps({"coop": PROMPT_PARAMS}), "--features", bad, "--prompts", prompt, "--methods", "coop", "--out", out],
           caplog, str(out), str(bad), "'test_backgrounds'", "infinite")
    assert not out.exists()


# --- the guards themselves -------------------------------------------------------------------------


def test_check_finite_names_file_array_and_counts():
    check_finite("x.safetensors", {"a": np.ones(3), "labels": np.arange(3), "empty": np.zeros((0, 4))})
    with pytest.raises(ValueError, match=r"x\.safetensors: not written: 'a' holds 1 NaN and 2 infinite values out of 4"):
        check_finite("x.safetensors", {"a": np.array([np.nan, np.inf, -np.inf, 0.0])})


def test_check_table_finite_looks_at_float_columns_only():
    check_table_finite("t.parquet", pd.DataFrame({"s": ["a"], "i": [1], "f": [0.5]}))
    with pytest.raises(ValueError, match=r"t\.parquet: not written: 'f' holds 1 NaN"):
        check_table_finite("t.parquet", pd.DataFrame({"s": ["a"], "f": [np.nan]}))


def test_check_not_constant_accepts_empty_and_varied_images():
    check_not_constant("c", "images", np.zeros((0, 4, 4, 3), np.uint8))
    check_not_constant("c", "images", np.arange(48, dtype=np.uint8).reshape(1, 4, 4, 3))
    with pytest.raises(ValueError, match="all 2 images are one constant value"):
        check_not_constant("c", "images", np.full((2, 4, 4, 3), 255, np.uint8))


def test_unmeasured_round_trips_pass_the_guard_but_infinity_does_not():
    from dicap.guards import check_table_finite

    table = pd.DataFrame({"guide_confidence": [0.5, 0.2], "reconstruction_mse": [0.01, np.nan]})
    check_table_finite("t.parquet", table, not_measured=("reconstruction_mse",))
    with pytest.raises(ValueError, match="1 NaN"):
        check_table_finite("t.parquet", table)
    with pytest.raises(ValueError, match="infinite"):
        check_table_finite("t.parquet", table.assign(reconstruction_mse=[np.inf, np.nan]), not_measured=("reconstruction_mse",))
    with pytest.raises(ValueError, match="NaN"):
        check_table_finite("t.parquet", table.assign(guide_confidence=[np.nan, 0.1]), not_measured=("reconstruction_mse",))
