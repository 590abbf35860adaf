"""The prompt-training job (jobs/prompts.py): the learner learns the classes its variant trains on
(the base half, or every class for all_classes), and refuses shots of a class it does not know."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dicap import layout
from dicap.data.store import DatasetStore
from dicap.io import save_arrays
from dicap.jobs.prompts import train_prompt
from dicap.prompting import methods
from helpers import PARAMS, prompt_workspace

BUILD = layout.Build("embedded")
WHERE = {"dataset": "shapes", "seed": 1}
TRAIN = {**PARAMS, "n_ctx": 4, "ctx_init": "a photo of a", "epochs": 1}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """prompt_workspace (main's cache: 5 base classes), plus an all_classes cache: 2 shots of each
    of the 10 classes, y_cf a novel class for a base image and the other way round."""
    root = prompt_workspace(tmp_path_factory.mktemp("all_classes"))
    gen = torch.Generator().manual_seed(1)
    labels = torch.arange(10).repeat_interleave(2)
    feats = {"train": F.normalize(torch.randn(20, 16, generator=gen), dim=-1), "train_labels": labels,
             "cf": F.normalize(torch.randn(20, 16, generator=gen), dim=-1), "cf_labels": (labels + 5) % 10}
    save_arrays(root / BUILD(layout.TRAIN_FEATURES, variant=layout.ALL_CLASSES, **WHERE), {k: v.numpy() for k, v in feats.items()})
    return root


@pytest.fixture
def built(monkeypatch) -> list[list[str]]:
    """The class names of every learner the job builds (the job still trains it)."""
    names: list[list[str]] = []
    build = methods.build_learner

    def recording(method, clip_model, tokenizer, class_names, params, **extra):
        names.append(list(class_names))
        return build(method, clip_model, tokenizer, class_names, params, **extra)

    monkeypatch.setattr(methods, "build_learner", recording)
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    yield names
    torch.set_num_threads(threads)  # the job pins threads and deterministic algorithms for the process
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


def _train(workspace: Path, out: Path, variant: str, features_variant: str | None = None, method: str = "dicap_pos") -> None:
    train_prompt(dataset_dir=workspace / BUILD(layout.DATA, **WHERE), clip_dir=workspace / BUILD(layout.CLIP_MODEL, **WHERE),
                 features=workspace / BUILD(layout.TRAIN_FEATURES, variant=features_variant or variant, **WHERE),
                 method=method, seed=1, params=TRAIN, out=out, variant=variant)


@pytest.mark.parametrize("method", ["coop", "dicap_pos"])
def test_all_classes_builds_the_learner_on_every_class(workspace, built, tmp_path, method):
    store = DatasetStore.open(workspace / BUILD(layout.DATA, **WHERE))
    out = tmp_path / "seed1.safetensors"
    _train(workspace, out, layout.ALL_CLASSES, method=method)
    assert built == [store.classes] and len(store.classes) == 10 and out.exists()


def test_main_builds_the_learner_on_the_base_classes(workspace, built, tmp_path):
    store = DatasetStore.open(workspace / BUILD(layout.DATA, **WHERE))
    _train(workspace, tmp_path / "seed1.safetensors", layout.MAIN)
    assert built == [[store.classes[c] for c in store.base_classes]] and len(built[0]) == 5


def test_shots_of_every_class_given_to_a_base_learner_are_refused(workspace, built, tmp_path):
    """The variant not passed on: the all_classes cache read as main's names the file and --variant."""
    with pytest.raises(ValueError, match=r"all_classes/seed1\.safetensors: labels \[5, 6, 7, 8, 9\] are not among the 5 "
                                         r"classes variant 'main' trains on: give --variant"):
        _train(workspace, tmp_path / "seed1.safetensors", layout.MAIN, features_variant=layout.ALL_CLASSES)
    assert not (tmp_path / "seed1.safetensors").exists()
