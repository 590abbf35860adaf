"""Plain helpers shared by several test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]  # the checkout: config.yaml, README.md, rules/, benchmarks/

# The smallest rendered dataset the jobs accept: one pool of 3 images per class.
SIZES = {"image_size": 16, "pretrain_per_class": 2, "pool_per_class": 3, "val_per_class": 1, "test_per_class": 1}

# Prompt learning on conftest's tiny ``clip_model``.
CONTEXT = 16
NAMES = ["circle", "square", "triangle"]
PARAMS = {
    "epochs": 15, "batch_size": 8, "lr": 0.5, "weight_decay": 0.0,
    "cf_weight": 1.0, "cf_temperature": 0.07, "cf_positive_weight": 0.0,
}


def tokenize(texts):
    import open_clip

    return open_clip.tokenize(texts, context_length=CONTEXT)


def prompt_features(n_per_class: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    """Well separated synthetic image features: one random direction per class, plus noise."""
    gen = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(len(NAMES), 32, generator=gen), dim=-1)
    labels = torch.arange(len(NAMES)).repeat_interleave(n_per_class)
    x = F.normalize(centres[labels] + 0.1 * torch.randn(len(labels), 32, generator=gen), dim=-1)
    y_cf = (labels + 1) % len(NAMES)
    x_cf = F.normalize(centres[y_cf] + 0.1 * torch.randn(len(labels), 32, generator=gen), dim=-1)
    return {"train": x, "train_labels": labels, "cf": x_cf, "cf_labels": y_cf}


def with_key(config: dict, dotted: str, value) -> dict:
    """A copy of ``config`` with the key ``a.b.c`` set to ``value``."""
    out = copy.deepcopy(config)
    *parents, last = dotted.split(".")
    node = out
    for p in parents:
        node = node[p]
    node[last] = value
    return out


# The tiny open_clip CLIP that prompt_workspace saves (a 16-wide ViT: one layer per tower).
WORKSPACE_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 16, "patch_size": 8, "width": 16, "layers": 1, "head_width": 16, "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 1, "layers": 1, "mlp_ratio": 2.0},
}


def prompt_workspace(root: Path) -> Path:
    """``root`` laid out as the workflow's working directory for ``train_prompt``, no job run: the
    rendered shapes dataset (SIZES), a tiny CLIP, and main's seed-1 feature cache (5 base classes
    x 4 images, 16-wide features), all at their ``dicap.layout`` paths."""
    import open_clip

    from dicap import layout
    from dicap.backbones.clip import save_local_dir
    from dicap.data import embedded
    from dicap.io import save_arrays

    build = layout.Build("embedded")
    embedded.build("shapes", SIZES, 0, root / build(layout.DATA, dataset="shapes"))
    torch.manual_seed(0)
    save_local_dir(open_clip.CLIP(**WORKSPACE_CLIP), WORKSPACE_CLIP, root / build(layout.CLIP_MODEL, dataset="shapes"))
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(5).repeat_interleave(4)
    feats = {"train": torch.randn(20, 16, generator=gen), "train_labels": labels,
             "cf": torch.randn(20, 16, generator=gen), "cf_labels": (labels + 1) % 5}
    save_arrays(root / build(layout.TRAIN_FEATURES, dataset="shapes", variant="main", seed=1),
                {k: F.normalize(v, dim=-1).numpy() if v.is_floating_point() else v.numpy() for k, v in feats.items()})
    return root


# --- paper-scale text tasks: a batch's candidate texts (tests/unit/prompting/, evaluation/) -----------

INIT = {"n_ctx": 4, "ctx_init": "a photo of a"}
TEXTS = [*NAMES, "ring", "bar", "star", "cross", "arrow"]  # a text task's candidate texts
SCALE, KG_WEIGHT = 20.0, 8.0
TRAIN = {**PARAMS, "cf_temperature": 0.5}  # a softer pair softmax: DiCap's term is not ~0


def text_learner(clip_model, kind: str):
    """CoOp or KgCoOp over TEXTS, its context moved off the template so KgCoOp's penalty is not ~0."""
    from dicap.prompting.kgcoop import KgCoOp
    from dicap.prompting.learner import PromptLearner

    learner = KgCoOp(clip_model, tokenize, TEXTS, **INIT, kg_weight=KG_WEIGHT) if kind == "kgcoop" \
        else PromptLearner(clip_model, tokenize, TEXTS, **INIT)
    with torch.no_grad():
        learner.ctx.add_(0.3 * torch.randn(learner.ctx.shape, generator=torch.Generator().manual_seed(1)))
    return learner


def feature_batch(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random unit image features and their counterfactuals'."""
    gen = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, 32, generator=gen), dim=-1), F.normalize(torch.randn(n, 32, generator=gen), dim=-1)


def cf_term(learner, x, x_cf, y, cf_valid):
    """DiCap's term (and every term) of one batch, trained as ``dicap`` with TRAIN, rows ``cf_valid``."""
    from dicap.prompting.methods import parse_method
    from dicap.prompting.trainer import batch_losses

    terms = batch_losses(learner, parse_method("dicap"), x, y, x_cf, None, torch.arange(len(y)), TRAIN, SCALE,
                         cf_valid=cf_valid)
    return terms["cf"][1], terms


class TransformerCalls:
    """How many sequences each call of the text transformer encodes: the cost of a step.

    Counted at the first block's norm, which every encoding passes through, the full context's
    and the scoring's shorter one alike (learner.encode_text_embeddings)."""

    def __init__(self, learner):
        self.sizes: list[int] = []
        first = learner.clip.transformer.resblocks[0].ln_1
        self.handle = first.register_forward_hook(lambda _m, args, _o: self.sizes.append(len(args[0])))

    def __enter__(self) -> TransformerCalls:
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()


def rules_by_file() -> dict[str, set[str]]:
    """rules/X.smk -> the names of the rules it defines that run a job (a loop's names expanded by
    Snakemake itself would need a run: a loop rule is read from its ``name:`` f-string and the
    loop's list, ``ablation_{_ablation}`` over ABLATIONS)."""
    found: dict[str, set[str]] = {}
    for path in sorted((REPO / "rules").glob("*.smk")):
        names = set()
        for block in re.split(r"(?m)^\s*rule\b", path.read_text())[1:]:
            if "shell:" not in block:
                continue
            named = re.match(r"\s*(\w+)\s*:", block)
            names.add(named.group(1) if named else re.search(r'name:\s*\n\s*f?"([^"]+)"', block).group(1))
        found[path.stem] = names
    return found


def truncated_table(path: Path) -> Path:
    """A small table written at ``path`` as the workflow writes it, then damaged as a killed copy
    leaves it: a Parquet file cut in half, a CSV file emptied (a CSV cut mid-row still parses)."""
    import pandas as pd

    from dicap.io import write_table

    write_table(path, pd.DataFrame({"row": range(8), "label": range(8)}))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2] if path.suffix == ".parquet" else b"")
    return path


def assert_corrupt(path: Path, read, *args, **kwargs) -> None:
    """``read(*args, **kwargs)`` raises CorruptArtifact naming ``path`` (so the job removes it)."""
    import pytest

    from dicap.io import CorruptArtifact

    with pytest.raises(CorruptArtifact) as err:
        read(*args, **kwargs)
    assert err.value.path == Path(path) and str(err.value).startswith(f"{path} is not a readable table"), err.value
