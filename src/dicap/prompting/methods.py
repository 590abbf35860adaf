"""Method names -> what trains: a prompt learner, plus DiCap's counterfactual term or not.

DiCap's term is a plug-in: it applies on top of any learner, in one of three readings of
how a counterfactual enters the loss (:data:`READINGS`; ``<reading>`` alone means CoOp):

- ``zeroshot``: the hand-written template, nothing trained (CoOp's initial context);
- ``<learner>``: the learner alone (``coop``, ``cocoop``, ``kgcoop``, ``maple``, ``cpl``);
- ``dicap_<learner>``, **the paper's**: the learner plus DiCap's hard negative (the source
  class's prompt must prefer the factual image to its counterfactual); ``dicap`` is ``dicap_coop``;
- ``dicap_pos_<learner>``: the hard negative, and each counterfactual also a labelled example
  of its target class ``y_cf``; ``dicap_pos`` is ``dicap_pos_coop``;
- ``dicap_label_<learner>``: the counterfactual only as a labelled example of ``y_cf``, no hard
  negative; ``dicap_label`` is ``dicap_label_coop``.

Why three: the counterfactual keeps its source image's background, so in the hard negative
the background cancels from the gradient and cannot be unlearned; as an example of ``y_cf``
the same background appears under another class (docs/method.md, "Why a hard negative that
keeps the background cannot remove a background shortcut").  The paper's reading stays the
default ``dicap``; the other two are reported beside it, never in its place.

A learner's hyperparameters are config's ``prompt`` block with its recipe
(``prompt.learners.<learner>``) laid over it, and on every class (the ``all_classes``
variant) its cross-dataset change from the registry: :func:`method_params` is the one place
that merge happens, for the rules' ``params:`` and for the jobs alike.  What each learner is and
costs is in :mod:`dicap.prompting.registry`; a job parses its method once and passes the
:class:`Method` on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dicap.prompting.registry import LEARNERS as REGISTRY
from dicap.prompting.registry import LearnerSpec

LEARNERS = tuple(REGISTRY)
PIXEL_LEARNERS = tuple(name for name, spec in REGISTRY.items() if spec.uses_pixels)  # read images, not cached features
ZEROSHOT = "zeroshot"
DICAP, DICAP_POS, DICAP_LABEL = "dicap", "dicap_pos", "dicap_label"
# DiCap's readings -> (hard negative, counterfactual a labelled example of y_cf).
READINGS = {DICAP: (True, False), DICAP_POS: (True, True), DICAP_LABEL: (False, True)}
# The prompt keys each counterfactual term reads: what a loss ablation can change for a reading.
HARD_NEGATIVE_KEYS, CF_POSITIVE_KEYS = ("cf_weight", "cf_temperature"), ("cf_positive_weight",)


def reading_name(reading: str, learner: str = "coop") -> str:
    """A reading on a learner: ``dicap_label`` on CoOp, ``dicap_label_maple`` on MaPLe."""
    return reading if learner == "coop" else f"{reading}_{learner}"


# Every valid name, in the schema's order: a test keeps the two equal.
METHODS = (ZEROSHOT, *LEARNERS, *READINGS, *(reading_name(r, x) for r in READINGS for x in LEARNERS[1:]))
# Learners with one text feature per prompt on cached image features: the text tasks' (a
# conditional learner would encode every caption per image, thousands per test image).
TEXT_TASK_LEARNERS = tuple(name for name, spec in REGISTRY.items() if spec.text_tasks)
NOT_TRAINING = ("checkpoint_every", "learners")  # prompt keys that are not a learner's parameters


@dataclass(frozen=True)
class Method:
    name: str
    learner: str  # zeroshot scores CoOp's learner untrained
    hard_negative: bool = False  # DiCap's term: the counterfactual a hard negative of its source class
    cf_positive: bool = False  # the counterfactual a labelled example of y_cf

    @property
    def trains(self) -> bool:
        return self.name != ZEROSHOT

    @property
    def uses_counterfactuals(self) -> bool:
        """Whether training reads counterfactual files: any of DiCap's readings."""
        return self.hard_negative or self.cf_positive

    @property
    def reading(self) -> str | None:
        """Which of DiCap's readings (``dicap``, ``dicap_pos``, ``dicap_label``), None for none."""
        flags = (self.hard_negative, self.cf_positive)
        return next((r for r, f in READINGS.items() if f == flags), None)

    @property
    def loss_keys(self) -> tuple[str, ...]:
        """The prompt keys its counterfactual terms read (none without one)."""
        return (HARD_NEGATIVE_KEYS if self.hard_negative else ()) + (CF_POSITIVE_KEYS if self.cf_positive else ())

    @property
    def spec(self) -> LearnerSpec:
        """The learner's registry entry: pixels or features, conditional, cost."""
        return REGISTRY[self.learner]


def parse_method(name: str) -> Method:
    """A method's name -> its learner and DiCap term; ValueError naming the valid forms."""
    if name == ZEROSHOT:
        return Method(name, "coop")
    if name in LEARNERS:
        return Method(name, name)
    # the longer prefixes first: dicap_label_cocoop is the label reading on CoCoOp, not dicap on "label_cocoop"
    for prefix in sorted(READINGS, key=len, reverse=True):
        learner = "coop" if name == prefix else name.removeprefix(prefix + "_") if name.startswith(prefix + "_") else None
        if learner in LEARNERS:
            hard_negative, cf_positive = READINGS[prefix]
            return Method(name, learner, hard_negative=hard_negative, cf_positive=cf_positive)
    raise ValueError(f"unknown method {name!r}: expected {ZEROSHOT}, a learner ({', '.join(LEARNERS)}), "
                     f"or {', '.join(f'{r}[_<learner>]' for r in READINGS)}")


def as_method(method: str | Method) -> Method:
    """A parsed method as it is, a name parsed: jobs parse once and pass the object on."""
    return method if isinstance(method, Method) else parse_method(method)


def check_text_task_method(name: str | Method) -> Method:
    """A method the text tasks (retrieval, VQA) can train: a learner on cached features with
    one prompt per text, and DiCap's hard negative at most (a counterfactual has no caption
    of its own to be a labelled example of: dicap_pos and dicap_label are refused)."""
    spec = as_method(name)
    if not spec.spec.text_tasks or spec.cf_positive:
        raise ValueError(f"method {spec.name!r} cannot run a text task: use {ZEROSHOT}, "
                         f"{', '.join(TEXT_TASK_LEARNERS)} or {DICAP}[_<one of them>]")
    return spec


def method_params(prompt: dict[str, Any], method: str | Method, overrides: dict[str, Any] | None = None,
                  cross_dataset: bool = False) -> dict[str, Any]:
    """The training parameters of ``method``: shared keys, its learner's (base-to-novel) recipe,
    with ``cross_dataset`` its learner's change for training on every class (the registry's
    :attr:`LearnerSpec.cross_dataset`), then ``overrides``."""
    parsed = as_method(method)
    shared = {k: v for k, v in prompt.items() if k not in NOT_TRAINING}
    recipe = prompt.get("learners", {}).get(parsed.learner, {})
    return shared | recipe | (dict(parsed.spec.cross_dataset) if cross_dataset else {}) | (overrides or {})


def build_learner(method: str | Method, clip_model, tokenizer, class_names: list[str], params: dict[str, Any], **extra: Any):
    """The learner ``method`` trains, built from its parameters (``extra``: e.g. MaPLe's preprocess)."""
    learner = as_method(method).spec.load()
    recipe = {k: v for k, v in params.items() if k not in ("n_ctx", "ctx_init")}
    return learner(clip_model, tokenizer, class_names, params["n_ctx"], params["ctx_init"], **recipe, **extra)
