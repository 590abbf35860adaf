"""The paper suite without internet or GPU: its config, its whole DAG planned through the
cluster profile, the pretrained ViT-B/16 loading path, and real-layout image files."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from dicap.config import ConfigError, load_config, validate_config
from dicap.io import write_json
from snakemake_runner import REPO, job_counts, snakemake

PAPER_DATASETS = ["imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
                  "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101"]


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@pytest.fixture(scope="module")
def paper_config() -> dict:
    load = lambda name: yaml.safe_load((REPO / name).read_text())  # noqa: E731
    return _merge(load("config.yaml"), load("config.paper.yaml"))


def test_paper_config_is_valid_and_complete(paper_config):
    assert validate_config(paper_config) is paper_config
    assert paper_config["datasets"] == PAPER_DATASETS
    assert paper_config["seeds"] == [1, 2, 3]
    assert paper_config["clip"]["pretrained"]["model"] == "ViT-B-16-quickgelu"


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (lambda c: c.update(datasets=["shapes"]), "datasets.0"),           # an embedded dataset in the paper suite
        (lambda c: c["clip"].update(pretrained=None), "clip.pretrained"),  # the paper suite needs pretrained CLIP
        (lambda c: c["data"].pop("root"), "data"),
    ],
)
def test_paper_config_errors_name_the_key(paper_config, change, key):
    bad = copy.deepcopy(paper_config)
    change(bad)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate_config(bad)


def test_slurm_profile_plans_the_whole_paper_dag(tmp_path):
    """The user's command, dry: 11 datasets x 3 seeds x every method, shards as GPU jobs."""
    out = snakemake("--profile", "slurm", "-n", "results/table1.csv", "--directory", str(tmp_path), timeout=300)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    counts = job_counts(out.stdout)
    n, seeds, shards = 11, 3, 16
    assert counts["download_dataset"] == n and counts["prepare_dataset"] == n
    assert counts["make_split"] == n * seeds
    assert counts["counterfactual_shard"] == n * seeds * shards
    methods = load_config(REPO / "config.paper.yaml")["methods"]
    assert len(methods) == 11 and counts["train_prompt"] == n * seeds * len(methods)
    assert "shortcut" not in counts  # no paired splits, no controls: the embedded suite's report only
    assert counts["evaluate"] == n * seeds and counts["table1"] == 1
    blocks = out.stdout.split("\nrule ")
    shards_planned = [b for b in blocks if b.startswith("counterfactual_shard:")]
    assert shards_planned and all("gpu=1" in b for b in shards_planned)
    # GPU jobs sized per learner: MaPLe runs the vision tower, CoCoOp and CPL encode B x C prompts
    prompts = {re.search(r"method=(\w+)", b).group(1): b for b in blocks if b.startswith("train_prompt:")}
    memory = {m: int(re.search(r"mem_mb=(\d+)", b).group(1)) for m, b in prompts.items()}
    assert memory["maple"] == memory["dicap_maple"] == 4 * memory["coop"] and memory["cocoop"] == 2 * memory["coop"]
    assert all("gpu=1" in b for b in prompts.values())
    assert "build/paper/" in out.stdout and "build/embedded/" not in out.stdout
    assert "oracle" not in counts and "audit_counterfactuals" not in counts  # no true counterfactuals here


def test_vit_b16_quickgelu_loads_a_checkpoint_the_test_wrote(tmp_path):
    """The paper suite's CLIP path: a ViT-B-16-quickgelu named in pretrained.json, weights
    from a local file (here random ones the test saved), through create_model_and_transforms."""
    open_clip = pytest.importorskip("open_clip")
    from safetensors.torch import save_file

    from dicap.backbones.clip import PRETRAINED_FILE, load_clip

    torch.manual_seed(0)
    reference = open_clip.create_model("ViT-B-16-quickgelu")
    weights = tmp_path / "vit_b16.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(weights))
    write_json(tmp_path / "clip" / PRETRAINED_FILE, {"model": "ViT-B-16-quickgelu", "tag": str(weights), "cache_dir": None})

    bundle = load_clip({"path": str(tmp_path / "clip")})
    assert bundle.image_size == 224
    loaded = bundle.model.state_dict()
    assert set(loaded) == set(reference.state_dict())
    assert all(torch.equal(loaded[k], v) for k, v in reference.state_dict().items())
    assert type(bundle.model.visual.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"
    image = np.random.default_rng(0).integers(0, 256, (1, 64, 80, 3), dtype=np.uint8)  # resized to 224 on the way in
    features = bundle.encode_images(image)
    text = bundle.encode_texts(["a photo of a dog."])
    assert features.shape == (1, 512) and text.shape == (1, 512)
    assert torch.allclose(features.norm(dim=1), torch.ones(1), atol=1e-5)


def test_image_files_load_square_and_corrupt_ones_are_refused_by_path(tmp_path):
    from PIL import Image

    from dicap.data.images import load_images

    Image.new("RGB", (40, 20), (255, 0, 0)).save(tmp_path / "wide.jpg")
    Image.new("L", (10, 30), 128).save(tmp_path / "tall_grey.png")
    pixels = load_images([tmp_path / "wide.jpg", tmp_path / "tall_grey.png"], 16)
    assert pixels.shape == (2, 16, 16, 3) and pixels.dtype == np.uint8
    assert abs(int(pixels[0, 8, 8, 0]) - 255) < 8 and (pixels[1] == pixels[1, 0, 0, 0]).all()
    (tmp_path / "broken.jpg").write_bytes((tmp_path / "wide.jpg").read_bytes()[:40])
    with pytest.raises(ValueError, match="broken.jpg"):
        load_images([tmp_path / "broken.jpg"], 16)


def test_gpu_hours_benchmark_measures_the_shard_code_path(tmp_path, capsys):
    """benchmarks/paper_gpu_hours.py times generate() on a real checkpoint layout (tiny here)."""
    import sys

    from dicap.testing.tiny_models import save_clip_text_encoder, save_latent_checkpoint, save_tiny_clip

    sys.path.insert(0, str(REPO / "benchmarks"))
    import paper_gpu_hours

    sd = save_clip_text_encoder(save_latent_checkpoint(tmp_path / "sd"))
    clip = save_tiny_clip(tmp_path / "clip")
    result = paper_gpu_hours.main(["--checkpoint", str(sd), "--image-size", "16", "--clip-model", f"local-dir:{clip}",
                                   "--clip-tag", "", "--batches", "1", "--steps", "6", "--batch-size", "2"])
    assert result["counterfactuals"] == 16 * 1098 * 3  # one per few-shot image of a base class, 3 seeds
    assert result["seconds_per_image"] > 0 and result["gpu_hours"] == pytest.approx(result["counterfactuals"] * result["seconds_per_image"] / 3600)
    assert "counterfactual stage: 52704 counterfactuals" in capsys.readouterr().out
