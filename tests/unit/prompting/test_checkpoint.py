"""Checkpoints (prompting/checkpoint.py): interrupted prompt training resumes from its last
checkpoint and ends with the bytes of an uninterrupted run; a checkpoint of other inputs is
ignored.

An interruption is simulated by making the loop's ``optimizer_step`` raise part-way through
an epoch, the way a scheduler's kill lands at an arbitrary step."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import torch

from dicap import layout
from dicap.prompting import trainer
from dicap.prompting.checkpoint import checkpoint_path, fingerprint
from dicap.prompting.methods import build_learner
from dicap.runtime import optimizer_step
from helpers import NAMES, PARAMS, SCALE, TRAIN, prompt_workspace, tokenize
from helpers import feature_batch as _batch
from helpers import prompt_features as _features
from helpers import text_learner as _learner

pytestmark = pytest.mark.usefixtures("single_thread")

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


# --- the command and the rule ----------------------------------------------------------------------

CLI_PARAMS = {**PARAMS, "n_ctx": 4, "ctx_init": "a photo of a", "epochs": 6, "cf_positive_weight": 0.5}
CLI_STEPS_PER_EPOCH = 3  # 5 base classes x 4 images, batches of 8


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A working directory laid out as the workflow's: dataset, CLIP and one feature cache, no jobs run."""
    return prompt_workspace(tmp_path_factory.mktemp("resume"))


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


def test_checkpoint_sits_beside_the_output():
    assert checkpoint_path(Path("prompts/coop/seed3.safetensors")) == Path("prompts/coop/seed3.checkpoint.safetensors")


def test_the_checkpoint_fingerprint_covers_cf_valid(clip_model):
    learner = _learner(clip_model, "coop")
    x, x_cf = _batch(4)
    features = {"train": x, "train_labels": torch.tensor([0, 1, 2, 0]), "cf": x_cf}
    state = learner.trainable_state()
    keys = {fingerprint("dicap", 0, TRAIN, SCALE, state, f) for f in (
        features,
        {**features, "cf_valid": torch.ones(4, dtype=torch.bool)},
        {**features, "cf_valid": torch.tensor([True, False, True, True])},
    )}
    assert len(keys) == 3
