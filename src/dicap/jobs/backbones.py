"""Jobs of rules/backbones.smk: the frozen CLIP, the diffusion model and the guide classifier.

Each function is the rule of the same name.  A backbone writes its model folder and, as
separate declared outputs, what later stages read from it (a report, CLIP's class text
features), so no rule reaches into another's folder.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

log = logging.getLogger(__name__)

__all__ = ["clip_backbone", "diffusion_backbone", "guide_classifier"]


def _final_loss(losses: list[float]) -> float | None:
    """The mean of the last 20 steps: one step's loss is too noisy to compare runs by."""
    import numpy as np

    return float(np.mean(losses[-20:])) if losses else None


def clip_backbone(
    dataset_dir: Path,
    params: Annotated[dict[str, Any], "the config's clip block"],
    out: Annotated[Path, "the model folder"],
    report: Annotated[Path, "report.json: zero-shot accuracy, final loss, provenance"],
    class_text_features: Annotated[Path, "the template's text features of every class"],
    pretrain_with: Annotated[list[Path] | None, "other worlds' stores whose pretraining images it also learns from"] = None,
    threads: int = 1,
) -> None:
    """Pretrain the tiny CLIP (embedded) or point at a pretrained one (paper), then record
    its zero-shot accuracy on the first test split and its class text features.

    ``pretrain_with`` adds other embedded worlds' captioned pretraining images to the
    dataset's own (``clip.pretrain_with``), so the CLIP can be scored on their classes too
    (results/cross_dataset); the report still measures it on the dataset's own renders."""
    from dicap import runtime
    from dicap.backbones import clip
    from dicap.data.store import DatasetStore
    from dicap.data.vocabulary import OBJECT_TERMS
    from dicap.evaluation.metrics import linear_probe_accuracy, zero_shot_accuracy
    from dicap.guards import check_finite
    from dicap.io import atomic_dir, provenance, write_json

    pretrained = params.get("pretrained")
    seed = 0 if pretrained else params["train"]["seed"]
    runtime.setup(threads, seed)
    store = DatasetStore.open(dataset_dir)
    with atomic_dir(out) as tmp:
        losses: list[float] = []
        if pretrained:
            clip.write_pretrained_pointer(pretrained, tmp)
        else:
            images, captions = _pretraining_pairs([store, *_other_worlds(pretrain_with or [], params.get("pretrain_with", []))])
            losses = clip.train_tiny_clip(images, captions, params["model"], params["train"], tmp, seed)
        bundle = clip.load_clip({"path": str(tmp)})
        bundle.model.to(runtime.device())
        split = store.test_splits[0]
        test = store.split(split)
        features = bundle.encode_rows(store, test)
        # A retrieval or VQA dataset has no classes: its "classes" are the object terms its
        # counterfactuals swap (data/vocabulary.py), and it has no zero-shot accuracy.
        names = store.classes if not store.is_text_task else list(OBJECT_TERMS)
        text = bundle.encode_texts([params["template"].format(c) for c in names]).numpy()
        check_finite(class_text_features, {"class text features": text, "test image features": features})
        accuracy = None if store.is_text_task else zero_shot_accuracy(features, test["label"].to_numpy(), text)
        probe = None
        if not pretrained and not store.is_text_task:  # the tiny CLIP: its features must carry the class
            pool = store.split("train")
            probe = linear_probe_accuracy(bundle.encode_rows(store, pool), pool["label"].to_numpy(), features,
                                          test["label"].to_numpy())
        clip.save_class_text_features(class_text_features, text)
        write_json(report, {
            "zero_shot_accuracy": accuracy, "zero_shot_split": split, "linear_probe": probe, "final_loss": _final_loss(losses),
            **provenance(params, seed),
        })
    log.info("linear probe on %s: %s", split, probe)
    log.info("zero-shot accuracy on %s: %s", split, "none (no classes)" if accuracy is None else f"{accuracy:.3f}")


def _other_worlds(dirs: list[Path], named: list[str]) -> list[Any]:
    """The stores ``--pretrain-with`` gives, refused unless they are the worlds the params name
    (the params are what the report records and what reruns the job when they change)."""
    from dicap.data.store import DatasetStore

    stores = [DatasetStore.open(d) for d in dirs]
    if [s.dataset for s in stores] != list(named):
        raise ValueError(f"--pretrain-with gives the stores of {[s.dataset for s in stores]} ({', '.join(map(str, dirs)) or 'none'}), "
                         f"but the clip params' pretrain_with names {list(named)}")
    return stores


def _pretraining_pairs(stores: list[Any]) -> tuple[Any, list[str]]:
    """Every store's captioned pretraining images, one world after another."""
    import numpy as np

    splits = [store.split("pretrain") for store in stores]
    return (np.concatenate([store.pixels(pre) for store, pre in zip(stores, splits)]),
            [caption for pre in splits for caption in pre["caption"]])


def diffusion_backbone(
    dataset_dir: Path,
    params: Annotated[dict[str, Any], "the config's diffusion block"],
    out: Annotated[Path, "the model folder"],
    report: Annotated[Path, "report.json: final loss (or the pretrained model) and provenance"],
    threads: int = 1,
) -> None:
    """Train the class-conditional UNet (label dropout gives the marginal score too), or
    record which pretrained latent model the paper suite uses."""
    from dicap import runtime
    from dicap.backbones import diffusion
    from dicap.data.store import DatasetStore
    from dicap.io import atomic_dir, provenance, write_json

    if params.get("pretrained"):  # paper suite: nothing to train, check it is there
        from dicap.backbones.latent_diffusion import write_pretrained_pointer

        with atomic_dir(out) as tmp:
            write_pretrained_pointer(params["pretrained"], tmp)
            write_json(report, {"final_loss": None, "pretrained": params["pretrained"]["path"]})
        return
    seed = params["train"]["seed"]
    runtime.setup(threads, seed)
    store = DatasetStore.open(dataset_dir)
    pre = store.split("pretrain")
    with atomic_dir(out) as tmp:
        losses = diffusion.train_unet(store.pixels(pre), pre["label"].to_numpy(), len(store.classes), params["model"],
                                      params["train"], tmp, seed)
        write_json(report, {"final_loss": _final_loss(losses), **provenance(params, seed)})


def guide_classifier(
    dataset_dir: Path, params: Annotated[dict[str, Any], "the config's guide_classifier.train block"], out: Path, threads: int = 1
) -> None:
    """Train the noise-aware classifier used by the ``classifier`` guide."""
    from dicap import runtime
    from dicap.backbones.guides import train_noisy_classifier
    from dicap.data.store import DatasetStore
    from dicap.io import atomic_dir

    runtime.setup(threads, params["seed"])
    store = DatasetStore.open(dataset_dir)
    pre = store.split("pretrain")
    with atomic_dir(out) as tmp:
        train_noisy_classifier(store.pixels(pre), pre["label"].to_numpy(), len(store.classes), params, tmp, params["seed"])

