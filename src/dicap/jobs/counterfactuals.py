"""Jobs of rules/counterfactuals.smk: one shard of counterfactuals, and the merge of the shards.

Each function is the rule of the same name.  Heavy libraries are imported inside the
functions: the merge job should not pay for torch.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

log = logging.getLogger(__name__)

__all__ = ["counterfactual_shard", "merge_counterfactuals"]


def counterfactual_shard(
    dataset_dir: Path,
    split: Annotated[Path, "the few-shot split"],
    clip_dir: Path,
    class_text_features: Annotated[Path, "clip_backbone's class text features"],
    diffusion_dir: Path,
    seed: int,
    shard: int,
    shards: int,
    params: Annotated[dict[str, Any], "the variant's counterfactual settings"],
    out_images: Path,
    out_table: Path,
    classifier_dir: Annotated[Path | None, "the noise-aware classifier (guide 'classifier' only)"] = None,
    diffusion_check: Annotated[Path | None, "diffusion_check's report (embedded suite): a failed check refuses the model"] = None,
    threads: int = 1,
    compile_unet: Annotated[int, "0: keep the UNet eager though the model compiles it (the plan's budget: too few images to repay it)"] = 1,
) -> None:
    """Invert and regenerate one shard of a few-shot split towards chosen classes."""

    from dicap import runtime
    from dicap.backbones.clip import load_class_text_features, load_clip
    from dicap.backbones.diffusion import load_diffusion
    from dicap.backbones.guides import CLIP_GRAD_BATCH_SIZE, make_guide
    from dicap.backbones.latent_diffusion import load_from_dir
    from dicap.counterfactual import generate, sampling, shards as sharding
    from dicap.data.store import DatasetStore
    from dicap.guards import check_not_constant, check_table_finite
    from dicap.io import read_json, read_table, save_arrays, write_table

    if diffusion_check is not None and not (check := read_json(diffusion_check))["passed"]:
        raise ValueError(check["refusal"])  # one line: the model, the class, its read, the key
    runtime.setup(threads, seed)
    store = DatasetStore.open(dataset_dir)
    rows_of_split = read_table(split)
    text = load_class_text_features(class_text_features)
    rows = sharding.shard_rows(rows_of_split, shard, shards)
    if store.is_text_task:  # retrieval, VQA: each image's own text, and its object-noun edit
        prompts = _text_prompts(store, rows, text, params)
        rows = rows.assign(label=prompts.labels)
        names, template = prompts.names, "{}"
    else:
        names, template = store.classes, None
    latent = load_from_dir(diffusion_dir, names, runtime.device(), template, compile=bool(compile_unet))  # paper suite
    diffusion = latent if latent is not None else load_diffusion(diffusion_dir)
    # CLIP, loaded once, serves the centroids, the 'clip' guide and a latent model's confidence column.
    centroid = params["sampling"] == "centroid" and not store.is_text_task
    clip = load_clip({"path": str(clip_dir)}) if centroid or params["guide"] == "clip" or latent is not None else None
    if store.is_text_task:
        targets = prompts.targets
        text = clip.encode_texts(names).numpy() if clip is not None and names else text  # the posterior over the shard's texts
    else:
        # every shard encodes the whole split for the centroids: the same targets everywhere
        image_features = clip.encode_rows(store, rows_of_split) if clip is not None and centroid else None
        targets = sampling.choose_targets(rows_of_split["label"].to_numpy(), _target_classes(store, params), params["sampling"],
                                          seed, text, image_features)[rows["row"].to_numpy()]
    guide = make_guide(params["guide"], diffusion, classifier_dir, clip=clip, text_features=text,
                       grad_batch_size=CLIP_GRAD_BATCH_SIZE)
    if rows.empty:  # more shards than images: a valid empty output, which the merge accepts
        log.info("shard %d of %d is empty (%d images in the split): writing empty outputs", shard, shards, len(rows_of_split))
    else:
        log.info("shard %d of %d: %d of the split's %d images, guide %s, %s targets", shard, shards, len(rows),
                 len(rows_of_split), params["guide"], params["sampling"])
    arrays, table = generate.generate(store, rows, targets, diffusion, guide, params)
    if store.is_text_task:  # shard-local y / y_cf: the texts themselves say what was changed
        table = table.assign(text=[names[i] for i in rows["label"]], cf_text=[names[i] for i in targets], edited=prompts.edited)
    check_not_constant(out_images, "counterfactual images", arrays[sharding.GENERATED])
    check_table_finite(out_table, table, not_measured=("reconstruction_mse",))  # NaN: round trip not sampled
    save_arrays(out_images, arrays)
    write_table(out_table, table)


def _target_classes(store, params: dict[str, Any]) -> list[int]:
    """The classes ``y_cf`` is chosen among: those the variant trains on (its settings'
    ``classes``, :func:`dicap.layout.variant_settings`; the base half where none is set)."""
    from dicap.data.splits import class_set

    return class_set(store, params.get("classes", "base"))


def _text_prompts(store, rows, object_features, params: dict[str, Any]):
    """The prompts of a text dataset's shard: swap each text's first object noun for the
    nearest other COCO object term (by clip_backbone's text features of the terms)."""
    from dicap.counterfactual.caption_edits import row_prompts, swap_table
    from dicap.data.vocabulary import OBJECT_TERMS

    if params["guide"] == "classifier":
        raise ValueError(f"counterfactual.guide 'classifier' needs classes; {store.dataset} is a {store.task} dataset "
                         "without any: use cfg or clip")
    prompts = row_prompts(rows["prompt"].tolist(), swap_table(OBJECT_TERMS, object_features))
    log.info("%d of %d texts name an object and get a counterfactual", int(prompts.edited.sum()), len(rows))
    return prompts


def merge_counterfactuals(
    split: Path, images: list[Path], tables: list[Path], out_images: Path, out_table: Path
) -> None:
    """Join the shards of one split, checking that they cover it exactly once."""

    from dicap.counterfactual.shards import merge
    from dicap.io import load_arrays, read_table, save_arrays, write_table

    parts = [(load_arrays(i), read_table(t)) for i, t in zip(images, tables)]
    arrays, table = merge(parts, len(read_table(split)))
    save_arrays(out_images, arrays)
    write_table(out_table, table)

