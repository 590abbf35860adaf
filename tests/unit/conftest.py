"""The unit tier: in-process tests of one module each (tests/unit/<package>/test_<module>.py
mirrors src/dicap/<package>/<module>.py).  A unit test starts no process: every way of starting
one raises here, so a test that needs a subprocess fails and moves to tests/workflow/."""

from __future__ import annotations

import os
import platform
import subprocess

import matplotlib.font_manager  # noqa: F401  (builds matplotlib's font cache, which runs fc-list, before any guard)
import pytest

# The standard library caches what it learns from a subprocess: learn it here, before the guard.
platform.processor()  # `uname -p`, read by report.reproduction.machine()


class SubprocessInUnitTest(RuntimeError):
    """A unit test tried to start a process."""


def _refuse(what: str):
    def refuse(*args, **kwargs):
        raise SubprocessInUnitTest(f"a unit test started a process ({what}): it belongs in tests/workflow/ (tests/README.md)")
    return refuse


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    """Every unit test runs, fixtures included (a module's fixtures are set up inside its first
    test's protocol), with subprocess, fork, spawn and os.system refused."""
    if item.get_closest_marker("unit") is None:  # a listed exception (conftest.TIER_EXCEPTIONS)
        return (yield)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(subprocess.Popen, "_execute_child", _refuse("subprocess.Popen"))
        for name in ("system", "fork", "forkpty", "posix_spawn", "posix_spawnp", "execv", "execve", "spawnv", "spawnve"):
            if hasattr(os, name):
                patch.setattr(os, name, _refuse(f"os.{name}"))
        return (yield)


# --- fixtures shared by the tests of several modules ------------------------------------------------

PIXEL_T = 1000  # diffusion steps of the tiny pixel UNet
AUDIT_SIZES = {"image_size": 16, "pretrain_per_class": 12, "pool_per_class": 3, "val_per_class": 1, "test_per_class": 2}


@pytest.fixture(scope="module")
def diffusion():
    """A tiny random class-conditional pixel UNet (3 classes, 8 px) with its schedule."""
    import torch

    from dicap.backbones.diffusion import DiffusionBundle, build_unet, make_schedule

    torch.manual_seed(0)
    unet = build_unet(image_size=8, n_classes=3, model_cfg={"block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4})
    unet.requires_grad_(False)
    return DiffusionBundle(unet.eval(), make_schedule(PIXEL_T), 3)


@pytest.fixture
def images():
    """Three random 8 px images in [-1, 1] and their classes 0, 1, 2."""
    import torch

    gen = torch.Generator().manual_seed(1)
    return torch.rand(3, 3, 8, 8, generator=gen) * 2 - 1, torch.tensor([0, 1, 2])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny random latent diffusion checkpoint in the diffusers folder layout."""
    from dicap.testing.tiny_models import save_latent_checkpoint

    return save_latent_checkpoint(tmp_path_factory.mktemp("latent_ckpt"))


@pytest.fixture(scope="module")
def text_encoder():
    from latent_stand_ins import StandInTextEncoder

    return StandInTextEncoder()


@pytest.fixture(scope="module")
def bundle(checkpoint, text_encoder):
    """The latent model of ``checkpoint`` over the stand-in classes."""
    from dicap.backbones.latent_diffusion import load_latent_diffusion
    from latent_stand_ins import CLASSES, TEMPLATE

    return load_latent_diffusion(checkpoint, CLASSES, TEMPLATE, device="cpu", text_encoder=text_encoder, text_batch_size=2)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A tiny random open_clip CLIP, saved and loaded as a local-dir checkpoint."""
    from dicap.backbones.clip import load_clip
    from dicap.testing.tiny_models import save_tiny_clip

    return load_clip({"path": str(save_tiny_clip(tmp_path_factory.mktemp("clip")))})


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The audit's world: a rendered store, a briefly trained oracle, and 'counterfactuals' that are the truth."""
    import numpy as np
    import pandas as pd

    from dicap.audit.oracle import load_oracle, train_oracle
    from dicap.counterfactual.generate import true_counterfactuals
    from dicap.data import embedded
    from dicap.data.store import DatasetStore

    root = tmp_path_factory.mktemp("audit")
    embedded.build("shapes", AUDIT_SIZES, 0, root / "data")
    store = DatasetStore.open(root / "data")
    pre = store.split("pretrain")
    params = {"steps": 30, "batch_size": 32, "lr": 0.003, "width": 8, "noise_std": 0.05}
    train_oracle(store.pixels(pre), pre, len(store.classes), params, root / "oracle", seed=0)
    split = store.split("train")
    table = pd.DataFrame({
        "row": np.arange(len(split)), "y": split["label"], "y_cf": (split["label"] + 1) % 10,
        "guidance_scale": 3.0, "guide": "cfg", "sampling": "random", "reconstruction_mse": 0.01,
    })
    truth = true_counterfactuals(store, split, table["y_cf"].to_numpy())
    arrays = {"images": truth, "true_images": truth, "unguided_images": store.pixels(split)}
    return store, split, arrays, table, load_oracle(root / "oracle")
