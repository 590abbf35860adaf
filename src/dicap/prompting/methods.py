"""Method names -> what trains: a prompt learner, plus DiCap's counterfactual term or not.

DiCap's term is a plug-in: it applies on top of any learner.

- ``zeroshot``: the hand-written template, nothing trained (CoOp's initial context);
- ``<learner>``: the learner alone (``coop``, ``cocoop``, ``kgcoop``, ``maple``, ``cpl``);
- ``dicap_<learner>``: the learner plus DiCap's hard negative; ``dicap`` is ``dicap_coop``;
- ``dicap_pos_<learner>``: plus each counterfactual as a labelled example of ``y_cf`` too;
  ``dicap_pos`` is ``dicap_pos_coop``.

A learner's hyperparameters are config's ``prompt`` block with its recipe
(``prompt.learners.<learner>``) laid over it: :func:`method_params` is the one place that
merge happens, for the rules' ``params:`` and for the jobs alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

LEARNERS = ("coop", "cocoop", "kgcoop", "maple", "cpl")
PIXEL_LEARNERS = ("maple",)  # run the vision tower with their prompts: no cached image features
ZEROSHOT = "zeroshot"
DICAP, DICAP_POS = "dicap", "dicap_pos"
# Every valid name, in the schema's order: a test keeps the two equal.
METHODS = (ZEROSHOT, *LEARNERS, DICAP, DICAP_POS, *(f"{DICAP}_{x}" for x in LEARNERS[1:]),
           *(f"{DICAP_POS}_{x}" for x in LEARNERS[1:]))
# Learners with one text feature per prompt on cached image features: the text tasks' (a
# conditional learner would encode every caption per image, thousands per test image).
TEXT_TASK_LEARNERS = ("coop", "kgcoop")
NOT_TRAINING = ("checkpoint_every", "learners")  # prompt keys that are not a learner's parameters


@dataclass(frozen=True)
class Method:
    name: str
    learner: str  # zeroshot scores CoOp's learner untrained
    hard_negative: bool = False  # DiCap's counterfactual term
    cf_positive: bool = False  # the counterfactual also a labelled example of y_cf

    @property
    def trains(self) -> bool:
        return self.name != ZEROSHOT

    @property
    def uses_counterfactuals(self) -> bool:
        return self.hard_negative


def parse_method(name: str) -> Method:
    """A method's name -> its learner and DiCap term; ValueError naming the valid forms."""
    if name == ZEROSHOT:
        return Method(name, "coop")
    if name in LEARNERS:
        return Method(name, name)
    for prefix, positive in ((DICAP_POS, True), (DICAP, False)):
        learner = "coop" if name == prefix else name.removeprefix(prefix + "_") if name.startswith(prefix + "_") else None
        if learner in LEARNERS:
            return Method(name, learner, hard_negative=True, cf_positive=positive)
    raise ValueError(f"unknown method {name!r}: expected {ZEROSHOT}, a learner ({', '.join(LEARNERS)}), "
                     f"{DICAP}[_<learner>] or {DICAP_POS}[_<learner>]")


def check_text_task_method(name: str) -> Method:
    """A method the text tasks (retrieval, VQA) can train: a learner on cached features with
    one prompt per text, and DiCap's hard negative at most (a counterfactual has no caption
    of its own to be a positive of)."""
    spec = parse_method(name)
    if spec.learner not in TEXT_TASK_LEARNERS or spec.cf_positive:
        raise ValueError(f"method {name!r} cannot run a text task: use {ZEROSHOT}, "
                         f"{', '.join(TEXT_TASK_LEARNERS)} or {DICAP}[_<one of them>]")
    return spec


def method_params(prompt: dict[str, Any], method: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The training parameters of ``method``: shared keys, its learner's recipe, then ``overrides``."""
    shared = {k: v for k, v in prompt.items() if k not in NOT_TRAINING}
    recipe = prompt.get("learners", {}).get(parse_method(method).learner, {})
    return shared | recipe | (overrides or {})


def build_learner(method: str, clip_model, tokenizer, class_names: list[str], params: dict[str, Any], **extra: Any):
    """The learner ``method`` trains, built from its parameters (``extra``: e.g. MaPLe's preprocess)."""
    from dicap.prompting.cocoop import CoCoOp
    from dicap.prompting.cpl import CPL
    from dicap.prompting.kgcoop import KgCoOp
    from dicap.prompting.learner import PromptLearner
    from dicap.prompting.maple import MaPLe

    classes = {"coop": PromptLearner, "cocoop": CoCoOp, "kgcoop": KgCoOp, "maple": MaPLe, "cpl": CPL}
    learner = classes[parse_method(method).learner]
    recipe = {k: v for k, v in params.items() if k not in ("n_ctx", "ctx_init")}
    return learner(clip_model, tokenizer, class_names, params["n_ctx"], params["ctx_init"], **recipe, **extra)
