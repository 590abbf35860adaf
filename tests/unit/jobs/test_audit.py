"""The audit jobs (jobs/audit.py) read the split and the counterfactuals' table through dicap.io:
a damaged one names itself (CorruptArtifact), so the job removes it and says what rebuilds it."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from dicap.backbones import clip as clip_lib
from dicap.backbones import diffusion as diffusion_lib
from dicap.data import embedded
from dicap.io import save_arrays, write_table
from dicap.jobs.audit import audit_counterfactuals, generator_curve
from helpers import SIZES, assert_corrupt, truncated_table


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("store") / "data"
    embedded.build("shapes", SIZES, 0, root)
    return root


@pytest.fixture
def no_models(monkeypatch):
    """The models a job loads before its tables: stand-ins, as only the tables are under test."""
    model = SimpleNamespace(model=torch.nn.Identity())
    monkeypatch.setattr(clip_lib, "load_clip", lambda *a, **k: model)
    monkeypatch.setattr(clip_lib, "load_class_text_features", lambda *a, **k: None)
    monkeypatch.setattr(diffusion_lib, "load_diffusion", lambda *a, **k: None)


def test_the_generator_curve_names_a_truncated_split(store, tmp_path, no_models):
    split = truncated_table(tmp_path / "split.parquet")
    assert_corrupt(split, generator_curve, dataset_dir=store, split=split, diffusion_dir=tmp_path, oracle_dir=tmp_path,
                   clip_dir=tmp_path, class_text_features=tmp_path, params={"sampling": "random"}, scales=[1.0],
                   depths=[0.5], images=1, seed=1, out=tmp_path / "curve.parquet")


@pytest.mark.parametrize("damaged", ["split", "table"])
def test_the_audit_names_a_truncated_split_or_counterfactual_table(store, tmp_path, no_models, damaged):
    paths = {"split": tmp_path / "split.parquet", "table": tmp_path / "counterfactuals.parquet"}
    for path in paths.values():
        write_table(path, pd.DataFrame({"row": [0]}))
    save_arrays(tmp_path / "counterfactuals.safetensors", {"images": torch.zeros(1, 3, 4, 4).numpy()})
    truncated_table(paths[damaged])
    assert_corrupt(paths[damaged], audit_counterfactuals, dataset_dir=store, split=paths["split"], oracle_dir=tmp_path,
                   clip_dir=tmp_path, images=tmp_path / "counterfactuals.safetensors", table=paths["table"],
                   out=tmp_path / "audit.parquet")
    assert not (tmp_path / "audit.parquet").exists()
