"""The command line (cli.py): bad input stops a job with one clear line naming the culprit, and
writes nothing; validate-config names file, line and column."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch

from dicap.cli import main
from dicap.data import embedded
from dicap.io import save_arrays, write_json
from helpers import SIZES


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad") / "data"
    embedded.build("shapes", SIZES, 0, root)
    return root


def _fails(argv, caplog, *needles):
    """Run a dicap command; it must exit 1 with one error line containing every needle."""
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="dicap"):
        assert main(argv) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0], errors
    for needle in needles:
        assert needle in errors[0], errors[0]


def _split(store, out, shots=2):
    return ["make_split", "--dataset-dir", str(store), "--seed", "1", "--params", json.dumps({"shots": shots}), "--out", str(out)]


def test_a_class_with_fewer_images_than_shots(store, tmp_path, caplog):
    out = tmp_path / "split.parquet"
    _fails(_split(store, out, shots=5), caplog, "class 0 has 3 candidate images", "data.shots")
    assert not out.exists()


def test_duplicate_class_names(store, tmp_path, caplog):
    copy = tmp_path / "data"
    shutil.copytree(store, copy)
    write_json(copy / "classes.json", {"dataset": "shapes", "storage": "arrays", "classes": ["circle", "circle"] + [f"c{i}" for i in range(8)]})
    out = tmp_path / "split.parquet"
    _fails(_split(copy, out), caplog, str(copy / "classes.json"), "['circle']")
    assert not out.exists()


def test_truncated_image_file(store, tmp_path, caplog):
    copy = tmp_path / "data"
    shutil.copytree(store, copy)
    images = copy / "images.safetensors"
    images.write_bytes(images.read_bytes()[:100])
    out = tmp_path / "split.parquet"
    _fails(_split(copy, out), caplog, str(images), "not a readable safetensors file")
    assert not out.exists()


def test_a_prompt_context_with_wrong_shape(store, tmp_path, caplog):
    from dicap.backbones.clip import train_tiny_clip
    from dicap.data.store import DatasetStore

    s = DatasetStore.open(store)
    pre = s.split("pretrain")
    model = {"embed_dim": 16, "vision_cfg": {"timm_model_name": "test_resnet", "timm_model_pretrained": False, "timm_pool": "avg",
             "timm_proj": "linear", "image_size": 16},
             "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1, "mlp_ratio": 2.0}}
    train_tiny_clip(s.pixels(pre), pre["caption"].tolist(), model, {"steps": 1, "batch_size": 4, "lr": 1e-3, "weight_decay": 0.0}, tmp_path / "clip", 0)
    features = tmp_path / "eval.safetensors"
    save_arrays(features, {f"{k}{suffix}": torch.zeros(1, 16).numpy() if not suffix else torch.zeros(1, dtype=torch.long).numpy()
                           for k in ("test_unbiased", "test_backgrounds") for suffix in ("", "_labels", "_bg")})
    prompt = tmp_path / "ctx.safetensors"
    save_arrays(prompt, {"ctx": torch.zeros(3, 16).numpy()})  # three context vectors, the config says four
    out = tmp_path / "metrics.csv"
    argv = ["evaluate", "--dataset-dir", str(store), "--clip-dir", str(tmp_path / "clip"), "--seed", "1",
            "--params", json.dumps({"coop": {"n_ctx": 4, "ctx_init": None}}), "--features", str(features),
            "--prompts", str(prompt), "--methods", "coop", "--out", str(out)]
    _fails(argv, caplog, str(prompt), "(3, 16)", "(4, 16)")
    assert not out.exists()


def test_validate_config_names_file_line_and_column_of_any_file(tmp_path, capsys, caplog):
    """What the README offers for a --configfile, which Snakemake loads before the workflow."""
    from dicap.cli import main

    bad = tmp_path / "over.yaml"
    bad.write_text("counterfactual:\n\tguidance_scale: 3\n")
    assert main(["validate-config", str(bad)]) == 1
    assert f"{bad}:2:1: not valid YAML" in caplog.text
