"""Every prompt learner, with the facts the plan, the schema and the jobs need about it.

This module is the one place a learner is described: its name (as method names use it),
whether it reads pixels (no cached image features), whether its prompt depends on the image,
whether it serves the text tasks, and what a cluster job of it costs.  It imports no torch,
so the Snakefile can plan with it; each learner class binds itself to its entry
(``class CoCoOp(PromptLearner, learner="cocoop")``) and a test checks both directions.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LearnerSpec:
    """What one prompt learner is and costs."""

    name: str
    cls: str  # "module:Class", imported only when a job builds the learner
    uses_pixels: bool = False  # runs the vision tower with its prompts: reads images, not cached features
    conditional: bool = False  # class text features differ per image
    text_tasks: bool = False  # one prompt per text on cached features: can train retrieval and VQA
    memory_factor: int = 1  # cluster memory over CoOp's: per-step image encoding or B x C prompts
    cluster_minutes: int = 240  # walltime asked of the cluster for one training job

    def load(self) -> Any:
        """The learner's class (imports torch)."""
        module, _, name = self.cls.partition(":")
        return getattr(importlib.import_module(module), name)


LEARNERS: dict[str, LearnerSpec] = {spec.name: spec for spec in (
    LearnerSpec("coop", "dicap.prompting.learner:PromptLearner", text_tasks=True),
    LearnerSpec("cocoop", "dicap.prompting.cocoop:CoCoOp", conditional=True, memory_factor=2, cluster_minutes=720),
    LearnerSpec("kgcoop", "dicap.prompting.kgcoop:KgCoOp", text_tasks=True),
    LearnerSpec("maple", "dicap.prompting.maple:MaPLe", uses_pixels=True, memory_factor=4, cluster_minutes=720),
    LearnerSpec("cpl", "dicap.prompting.cpl:CPL", conditional=True, memory_factor=2, cluster_minutes=720),
)}


def learner_spec(name: str) -> LearnerSpec:
    """The entry of learner ``name``; ValueError naming the known ones."""
    try:
        return LEARNERS[name]
    except KeyError:
        raise ValueError(f"unknown learner {name!r}: expected one of {', '.join(LEARNERS)}") from None
