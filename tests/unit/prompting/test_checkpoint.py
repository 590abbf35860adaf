"""Interrupted prompt training resumes from its last checkpoint and ends with the bytes of an uninterrupted run.

An interruption is simulated by making the loop's ``optimizer_step`` raise part-way through
an epoch, the way a scheduler's kill lands at an arbitrary step.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

open_clip = pytest.importorskip("open_clip")

from helpers import NAMES, PARAMS, SIZES, tokenize  # noqa: E402
from helpers import prompt_features as _features  # noqa: E402
from helpers import with_key as _with  # noqa: E402

from dicap import layout  # noqa: E402
from dicap.config import ConfigError, validate_config  # noqa: E402
from dicap.prompting import trainer  # noqa: E402
from dicap.prompting.checkpoint import checkpoint_path  # noqa: E402
from dicap.prompting.methods import build_learner  # noqa: E402
from dicap.runtime import optimizer_step  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BUILD = layout.Build("embedded")
STEPS_PER_EPOCH = 3  # PARAMS' batch of 8 over _features()' 24 images
EVERY = 4  # checkpoints after epochs 4, 8 and 12 of PARAMS' 15


class Interrupted(Exception):
    """Stands in for a kill: raised from inside the training loop."""


class Steps:
    """Replaces the loop's ``optimizer_step``: counts the steps taken, and raises after ``stop_after``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, stop_after: int | None = None) -> None:
        self.count, self.stop_after = 0, stop_after
        monkeypatch.setattr(trainer, "optimizer_step", self)

    def __call__(self, *args, **kwargs) -> float:
        if self.stop_after is not None and self.count >= self.stop_after:
            raise Interrupted(f"interrupted after {self.count} steps")
        self.count += 1
        return optimizer_step(*args, **kwargs)


def _train(clip_model, method="coop", checkpoint=None, every=0, seed=0, params=PARAMS, feats=None):
    """A fresh learner trained once; returns (the bytes of every learned tensor, history)."""
    learner = build_learner(method, clip_model, tokenize, NAMES, {"n_ctx": 4, "ctx_init": "a photo of a"})
    feats = _features() if feats is None else feats
    params = {**params, "cf_positive_weight": 0.5} if method == "dicap_pos" else params
    history = trainer.train_context(learner, method, feats, params, 20.0, seed, checkpoint=checkpoint, checkpoint_every=every)
    return b"".join(t.detach().numpy().tobytes() for t in learner.trainable_state().values()), history


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as handle:
        return handle.metadata()


def _assert_same_safetensors(got: Path, want: Path) -> None:
    """Same tensors to the byte and same metadata.

    Not the file's bytes: safetensors 0.8 writes ``__metadata__`` keys in a random order
    (safetensors/safetensors#584), so two saves of one result already differ there.
    """
    from dicap.io import load_arrays

    a, b = load_arrays(got), load_arrays(want)
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape
        assert a[name].tobytes() == b[name].tobytes(), name
    assert _metadata(got) == _metadata(want)


def _messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records]


# --- the training loop ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["coop", "dicap", "dicap_pos", "dicap_cocoop", "cpl"])  # one tensor, and several
def test_interrupted_training_resumes_to_the_same_bytes(clip_model, tmp_path, monkeypatch, caplog, method):
    want_ctx, want_history = _train(clip_model, method)
    ckpt = tmp_path / "seed0.checkpoint.safetensors"

    steps = Steps(monkeypatch, stop_after=10 * STEPS_PER_EPOCH + 1)  # one step into epoch 11
    with pytest.raises(Interrupted):
        _train(clip_model, method, ckpt, EVERY)
    meta = _metadata(ckpt)
    assert meta["epoch"] == "8" and meta["scheduler_steps"] == str(8 * STEPS_PER_EPOCH)
    assert json.loads(meta["history"]) == want_history[:8]

    steps = Steps(monkeypatch)
    with caplog.at_level(logging.INFO, logger="dicap"):
        ctx, history = _train(clip_model, method, ckpt, EVERY)
    assert f"resuming {method} from epoch 8 of 15 ({ckpt})" in _messages(caplog)
    assert steps.count == (15 - 8) * STEPS_PER_EPOCH  # epochs 9..15 only
    assert history == want_history
    assert ctx == want_ctx


def test_saving_checkpoints_does_not_change_the_result(clip_model, tmp_path):
    assert _train(clip_model, checkpoint=tmp_path / "c.safetensors", every=1) == _train(clip_model)


def test_a_checkpoint_after_the_last_epoch_resumes_to_the_end(clip_model, tmp_path, monkeypatch):
    """Killed after training but before the output was written: the rerun only rewrites the output."""
    ckpt = tmp_path / "c.safetensors"
    want = _train(clip_model, checkpoint=ckpt, every=5)
    assert _metadata(ckpt)["epoch"] == "15"
    steps = Steps(monkeypatch)
    assert _train(clip_model, checkpoint=ckpt, every=5) == want
    assert steps.count == 0


@pytest.mark.parametrize(
    "other",
    [
        {"seed": 1},
        {"params": {**PARAMS, "lr": 0.4}},
        {"params": {**PARAMS, "epochs": 16}},
        {"feats": _features(seed=1)},
        {"method": "dicap"},
    ],
    ids=["seed", "lr", "epochs", "features", "method"],
)
def test_a_checkpoint_of_other_inputs_is_ignored(clip_model, tmp_path, monkeypatch, caplog, other):
    want = _train(clip_model)
    ckpt = tmp_path / "c.safetensors"
    Steps(monkeypatch, stop_after=10 * STEPS_PER_EPOCH)
    with pytest.raises(Interrupted):
        _train(clip_model, checkpoint=ckpt, every=EVERY, **other)
    assert _metadata(ckpt)["epoch"] == "8"

    steps = Steps(monkeypatch)
    with caplog.at_level(logging.INFO, logger="dicap"):
        got = _train(clip_model, checkpoint=ckpt, every=EVERY)
    assert steps.count == 15 * STEPS_PER_EPOCH  # from epoch 0
    assert got == want
    messages = _messages(caplog)
    assert any(m.startswith(f"ignoring checkpoint {ckpt}: it was written for different inputs") for m in messages), messages
    assert not any(m.startswith("resuming") for m in messages)


def test_an_unreadable_checkpoint_is_ignored(clip_model, tmp_path, monkeypatch, caplog):
    ckpt = tmp_path / "c.safetensors"
    ckpt.write_bytes(b"\x80\x04 not a safetensors file")
    want = _train(clip_model)
    steps = Steps(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="dicap"):
        got = _train(clip_model, checkpoint=ckpt, every=EVERY)
    assert got == want
    assert steps.count == 15 * STEPS_PER_EPOCH
    assert any(m.startswith(f"ignoring checkpoint: {ckpt} is not a readable safetensors file") for m in _messages(caplog))


def test_negative_interval_is_rejected(clip_model, tmp_path):
    with pytest.raises(ValueError, match="checkpoint_every"):
        _train(clip_model, checkpoint=tmp_path / "c.safetensors", every=-1)


# --- configuration ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [-1, "5", 2.5, None])
def test_config_rejects_a_bad_interval_naming_the_key(config, value):
    with pytest.raises(ConfigError) as info:
        validate_config(_with(config, "prompt.checkpoint_every", value))
    assert "'prompt.checkpoint_every'" in str(info.value)


def test_config_interval_is_required_and_zero_allowed(config):
    assert config["prompt"]["checkpoint_every"] >= 0
    validate_config(_with(config, "prompt.checkpoint_every", 0))
    broken = {**config, "prompt": {k: v for k, v in config["prompt"].items() if k != "checkpoint_every"}}
    with pytest.raises(ConfigError, match=r"'prompt'.*'checkpoint_every'"):
        validate_config(broken)


# --- the command and the rule ----------------------------------------------------------------------

TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 16, "patch_size": 8, "width": 16, "layers": 1, "head_width": 16, "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 1, "layers": 1, "mlp_ratio": 2.0},
}
CLI_PARAMS = {**PARAMS, "n_ctx": 4, "ctx_init": "a photo of a", "epochs": 6, "cf_positive_weight": 0.5}
CLI_STEPS_PER_EPOCH = 3  # 5 base classes x 4 images, batches of 8


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A working directory laid out as the workflow's: dataset, CLIP and one feature cache, no jobs run."""
    from dicap.backbones.clip import save_local_dir
    from dicap.data import embedded
    from dicap.io import save_arrays

    root = tmp_path_factory.mktemp("resume")
    embedded.build("shapes", SIZES, 0, root / BUILD(layout.DATA, dataset="shapes"))
    torch.manual_seed(0)
    save_local_dir(open_clip.CLIP(**TINY_CLIP), TINY_CLIP, root / BUILD(layout.CLIP_MODEL, dataset="shapes"))
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(5).repeat_interleave(4)
    feats = {"train": torch.randn(20, 16, generator=gen), "train_labels": labels,
             "cf": torch.randn(20, 16, generator=gen), "cf_labels": (labels + 1) % 5}
    save_arrays(root / BUILD(layout.TRAIN_FEATURES, dataset="shapes", variant="main", seed=1),
                {k: torch.nn.functional.normalize(v, dim=-1).numpy() if v.is_floating_point() else v.numpy() for k, v in feats.items()})
    return root


@pytest.fixture
def keep_torch_settings():
    """The command pins threads and turns on deterministic algorithms for the process; undo that."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


def _train_prompt(workspace: Path, out: Path, every: int) -> int:
    from dicap.cli import main

    where = dict(dataset="shapes", variant="main", seed=1)
    return main([
        "train_prompt", "--dataset-dir", str(workspace / BUILD(layout.DATA, **where)),
        "--clip-dir", str(workspace / BUILD(layout.CLIP_MODEL, **where)),
        "--features", str(workspace / BUILD(layout.TRAIN_FEATURES, **where)), "--method", "dicap_pos", "--seed", "1",
        "--params", json.dumps(CLI_PARAMS), "--checkpoint-every", str(every), "--out", str(out),
    ])


@pytest.mark.usefixtures("keep_torch_settings")
def test_train_prompt_command_resumes_to_the_same_files(workspace, tmp_path, monkeypatch, caplog):
    want = tmp_path / "uninterrupted" / "seed1.safetensors"
    assert _train_prompt(workspace, want, every=0) == 0
    assert sorted(os.listdir(want.parent)) == ["seed1.json", "seed1.safetensors"]

    out = tmp_path / "resumed" / "seed1.safetensors"
    Steps(monkeypatch, stop_after=5 * CLI_STEPS_PER_EPOCH)  # killed as epoch 6 begins
    with pytest.raises(Interrupted):
        _train_prompt(workspace, out, every=2)
    ckpt = checkpoint_path(out)
    assert os.listdir(out.parent) == [ckpt.name] and _metadata(ckpt)["epoch"] == "4"

    steps = Steps(monkeypatch)
    with caplog.at_level(logging.INFO, logger="dicap"):
        assert _train_prompt(workspace, out, every=2) == 0
    assert f"resuming dicap_pos from epoch 4 of 6 ({ckpt})" in _messages(caplog)
    assert steps.count == 2 * CLI_STEPS_PER_EPOCH
    _assert_same_safetensors(out, want)
    assert out.with_suffix(".json").read_bytes() == want.with_suffix(".json").read_bytes()
    assert not ckpt.exists() and sorted(os.listdir(out.parent)) == ["seed1.json", "seed1.safetensors"]


def test_train_prompt_command_rejects_a_negative_interval(workspace, tmp_path, capsys):
    with pytest.raises(SystemExit):
        _train_prompt(workspace, tmp_path / "seed1.safetensors", every=-1)
    assert "--checkpoint-every" in capsys.readouterr().err


def test_changing_the_interval_does_not_rerun_training(workspace, tmp_path):
    """The rule keeps the interval out of params: Snakemake sees no change, while a real parameter reruns."""
    target = BUILD(layout.PROMPT, dataset="shapes", variant="main", method="coop", seed=1)

    def snakemake(*args: str, **prompt) -> subprocess.CompletedProcess:
        override = tmp_path / "override.yaml"
        override.write_text(yaml.safe_dump({"datasets": ["shapes"], "prompt": {"epochs": 2, "batch_size": 8, **prompt}}))
        return subprocess.run(
            [str(BIN / "snakemake"), target, *args, "--configfile", str(REPO / "config.yaml"), str(override),
             "--directory", str(workspace), "--allowed-rules", "train_prompt"],
            cwd=REPO, capture_output=True, text=True, timeout=300,
            env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"},
        )

    run = snakemake("--cores", "1", "-p", checkpoint_every=1)
    printed = run.stdout + run.stderr
    assert run.returncode == 0, printed[-3000:]
    shell_line = next(line for line in printed.splitlines() if "dicap train_prompt" in line)
    assert "--checkpoint-every 1 " in shell_line
    assert "checkpoint_every" not in shell_line.split("--params", 1)[1].split("--checkpoint-every")[0]
    prompt = workspace / target
    assert prompt.exists() and not checkpoint_path(prompt).exists()
    assert "checkpoint_every" not in json.loads(prompt.with_suffix(".json").read_text())["params"]

    same = snakemake("-n", checkpoint_every=3)
    assert same.returncode == 0 and "Nothing to be done" in same.stdout + same.stderr, same.stdout[-2000:]
    changed = snakemake("-n", checkpoint_every=3, lr=0.001)  # the control: a training parameter does rerun
    assert changed.returncode == 0 and "rule train_prompt:" in changed.stdout, changed.stdout[-2000:]
    assert "Params have changed" in changed.stdout


def test_checkpoint_sits_beside_the_output():
    assert checkpoint_path(Path("prompts/coop/seed3.safetensors")) == Path("prompts/coop/seed3.checkpoint.safetensors")
