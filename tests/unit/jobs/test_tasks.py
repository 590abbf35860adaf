"""The text-task job (jobs/tasks.py) reads its split through dicap.io: a damaged one names itself
(CorruptArtifact), so the job removes it and says what rebuilds it."""

from __future__ import annotations

import pytest

from dicap.data import embedded
from dicap.jobs.tasks import train_task_prompt
from helpers import SIZES, assert_corrupt, truncated_table


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("store") / "data"
    embedded.build("shapes", SIZES, 0, root)
    return root


@pytest.mark.parametrize("task", ["retrieval", "vqa"])
def test_a_task_prompt_names_a_truncated_split(store, tmp_path, task):
    split = truncated_table(tmp_path / "split.parquet")
    assert_corrupt(split, train_task_prompt, dataset_dir=store, clip_dir=tmp_path, features=tmp_path / "f.safetensors",
                   split=split, task=task, method="coop", seed=1, params={}, out=tmp_path / "ctx.safetensors")
