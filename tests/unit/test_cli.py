"""The command line (cli.py): bad input stops a job with one clear line naming the culprit, and
writes nothing; validate-config names file, line and column."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

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


@pytest.fixture(scope="module")
def clip_dir(store, tmp_path_factory):
    """A one-step tiny CLIP: what evaluate loads before it reads anything else."""
    from dicap.backbones.clip import train_tiny_clip
    from dicap.data.store import DatasetStore

    s = DatasetStore.open(store)
    pre = s.split("pretrain")
    model = {"embed_dim": 16, "vision_cfg": {"timm_model_name": "test_resnet", "timm_model_pretrained": False, "timm_pool": "avg",
             "timm_proj": "linear", "image_size": 16},
             "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1, "mlp_ratio": 2.0}}
    out = tmp_path_factory.mktemp("clip") / "clip"
    train_tiny_clip(s.pixels(pre), pre["caption"].tolist(), model, {"steps": 1, "batch_size": 4, "lr": 1e-3, "weight_decay": 0.0}, out, 0)
    return out


def _evaluate(store, clip_dir, features, prompt, out):
    return ["evaluate", "--dataset-dir", str(store), "--clip-dir", str(clip_dir), "--seed", "1",
            "--params", json.dumps({"coop": {"n_ctx": 4, "ctx_init": None}}), "--features", str(features),
            "--prompts", str(prompt), "--methods", "coop", "--out", str(out)]


def _eval_features(path):
    save_arrays(path, {f"{k}{suffix}": torch.zeros(1, 16).numpy() if not suffix else torch.zeros(1, dtype=torch.long).numpy()
                       for k in ("test_unbiased", "test_backgrounds") for suffix in ("", "_labels", "_bg")})


def test_a_prompt_context_with_wrong_shape(store, clip_dir, tmp_path, caplog):
    features = tmp_path / "eval.safetensors"
    _eval_features(features)
    prompt = tmp_path / "ctx.safetensors"
    save_arrays(prompt, {"ctx": torch.zeros(3, 16).numpy()})  # three context vectors, the config says four
    out = tmp_path / "metrics.csv"
    _fails(_evaluate(store, clip_dir, features, prompt, out), caplog, str(prompt), "(3, 16)", "(4, 16)")
    assert not out.exists()


# --- a corrupt input the workflow made is removed, and the one line says what rebuilds it ----------------


def _truncated(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def test_a_truncated_shard_is_removed_by_the_merge(store, tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    seed = Path("build/embedded/counterfactuals/shapes/main/seed1")
    images = [seed / f"shard{k}-of-2.safetensors" for k in range(2)]
    for path in images:
        save_arrays(path, {"images": torch.zeros(2, 3, 4, 4).numpy()})
    _truncated(images[0])  # the first the merge reads
    argv = ["merge_counterfactuals", "--split", "split.parquet", "--images", *map(str, images),
            "--tables", *(str(p.with_suffix(".parquet")) for p in images), "--out-images", str(seed / "counterfactuals.safetensors"),
            "--out-table", str(seed / "counterfactuals.parquet")]
    _fails(argv, caplog, f"{images[0]} is corrupt", f"`snakemake --forcerun {images[0]}` rebuilds it")
    assert not images[0].exists() and images[1].exists() and not (seed / "counterfactuals.safetensors").exists()


def test_a_truncated_feature_file_is_removed_by_its_reader(store, clip_dir, tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    features = Path("build/embedded/features/shapes/eval.safetensors")
    _eval_features(features)
    _truncated(features)
    prompt = Path("build/embedded/prompts/shapes/main/coop/seed1.safetensors")
    save_arrays(prompt, {"ctx": torch.zeros(4, 16).numpy()})
    out = Path("build/embedded/metrics/shapes/main/seed1.csv")
    _fails(_evaluate(store, clip_dir, features, prompt, out), caplog, f"{features} is corrupt", "removed it")
    assert not features.exists() and prompt.exists() and not out.exists()


def test_a_truncated_model_takes_its_folder(tmp_path, monkeypatch, caplog):
    """The oracle's weights, read by a job through load_state_dict: the whole model folder goes."""
    from dicap import cli
    from dicap.io import load_state_dict, save_state_dict

    monkeypatch.chdir(tmp_path)
    folder = Path("build/embedded/models/shapes/oracle/model")
    save_state_dict(folder / "oracle.safetensors", torch.nn.Linear(8, 4))
    _truncated(folder / "oracle.safetensors")

    def read_model(model: Path) -> None:
        """Read a model."""
        load_state_dict(model / "oracle.safetensors", torch.nn.Linear(8, 4))

    monkeypatch.setattr(cli, "jobs", lambda: {"read_model": read_model})
    _fails(["read_model", "--model", str(folder)], caplog, "oracle.safetensors is corrupt", f"removed {folder}:")
    assert not folder.exists() and folder.parent.exists()


def test_validate_config_names_file_line_and_column_of_any_file(tmp_path, capsys, caplog):
    """What the README offers for a --configfile, which Snakemake loads before the workflow."""
    from dicap.cli import main

    bad = tmp_path / "over.yaml"
    bad.write_text("counterfactual:\n\tguidance_scale: 3\n")
    assert main(["validate-config", str(bad)]) == 1
    assert f"{bad}:2:1: not valid YAML" in caplog.text


@pytest.mark.parametrize("job", ["make_split", "make-split", "train_prompt", "evaluate", "record_reference"])
def test_a_jobs_own_command_line_builds_its_parser_alone_and_parses_as_the_whole_one(job):
    """``parser(job)`` holds that job only (a job's command line builds no other) and reads its
    options as the parser of every job does; a name that is no job gets every job, so argparse's
    error lists them."""
    from dicap.cli import jobs, parser

    def commands(top):
        return set(next(a for a in top._actions if a.dest == "command").choices)

    name = job.replace("-", "_")
    assert commands(parser(job)) == {name, *([name.replace("_", "-")] if "_" in name else [])}
    everything = commands(parser())
    assert commands(parser("no_such_job")) == commands(parser(None)) == everything and set(jobs()) <= everything
    action = next(a for a in parser(job)._actions if a.dest == "command").choices[name]
    whole = next(a for a in parser()._actions if a.dest == "command").choices[name]
    assert [(a.dest, a.option_strings, a.nargs, a.required, a.default) for a in action._actions] == \
        [(a.dest, a.option_strings, a.nargs, a.required, a.default) for a in whole._actions]
