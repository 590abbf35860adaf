"""The train_prompt rule and its checkpoints: the interval is kept out of the rule's params, so
changing it reruns nothing, while a real training parameter does (Snakemake's params trigger).
The training loop's own checkpoint and resume tests are tests/unit/prompting/test_checkpoint.py."""

from __future__ import annotations

import json

import pytest
import yaml

from dicap import layout
from dicap.prompting.checkpoint import checkpoint_path
from helpers import REPO, prompt_workspace
from snakemake_runner import snakemake

BUILD = layout.Build("embedded")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A working directory laid out as the workflow's: dataset, CLIP and one feature cache, no jobs run."""
    return prompt_workspace(tmp_path_factory.mktemp("resume"))


def test_changing_the_interval_does_not_rerun_training(workspace, tmp_path):
    """The rule keeps the interval out of params: Snakemake sees no change, while a real parameter reruns."""
    target = BUILD(layout.PROMPT, dataset="shapes", variant="main", method="coop", seed=1)

    def plan(*args: str, **prompt):
        override = tmp_path / "override.yaml"
        override.write_text(yaml.safe_dump({"datasets": ["shapes"], "prompt": {"epochs": 2, "batch_size": 8, **prompt}}))
        return snakemake(target, *args, "--configfile", str(REPO / "config.yaml"), str(override),
                         "--directory", str(workspace), "--allowed-rules", "train_prompt", timeout=300)

    run = plan("--cores", "1", "-p", checkpoint_every=1)
    printed = run.stdout + run.stderr
    assert run.returncode == 0, printed[-3000:]
    shell_line = next(line for line in printed.splitlines() if "dicap train_prompt" in line)
    assert "--checkpoint-every 1 " in shell_line
    assert "checkpoint_every" not in shell_line.split("--params", 1)[1].split("--checkpoint-every")[0]
    prompt = workspace / target
    assert prompt.exists() and not checkpoint_path(prompt).exists()
    assert "checkpoint_every" not in json.loads(prompt.with_suffix(".json").read_text())["params"]

    same = plan("-n", checkpoint_every=3)
    assert same.returncode == 0 and "Nothing to be done" in same.stdout + same.stderr, same.stdout[-2000:]
    changed = plan("-n", checkpoint_every=3, lr=0.001)  # the control: a training parameter does rerun
    assert changed.returncode == 0 and "rule train_prompt:" in changed.stdout, changed.stdout[-2000:]
    assert "Params have changed" in changed.stdout
