"""Jobs of rules/audit.smk: the independent oracle, its check of the diffusion model, the
counterfactual audit and the generator curve (embedded suite).

Each function is the rule of the same name.  The audit judges every generated counterfactual
with an oracle against the true counterfactual the structural causal model renders; the check
has the same oracle read samples the diffusion model draws from noise, before any
counterfactual is made; the curve has it judge a few images regenerated over a grid of
guidance scales and inversion depths.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

log = logging.getLogger(__name__)

__all__ = ["oracle", "diffusion_check", "generator_curve", "audit_counterfactuals", "audit_summary"]
# The summary's markdown: what a reader compares first (the csv has every column).
SUMMARY_MD_COLUMNS = ["dataset", "variant", "guidance_scale", "counterfactuals", "valid", "valid_bg_kept", "faithful", "no_object",
                      "clip_cosine_to_true", "factual_clip_cosine_to_true", "cld", "unguided_cld", "true_cld", "true_valid",
                      "oracle_heldout_class_accuracy", "oracle_heldout_no_object_recall"]


def oracle(
    dataset_dir: Path,
    params: Annotated[dict[str, Any], "the config's oracle.train block"],
    out: Annotated[Path, "the model folder"],
    report: Annotated[Path, "report.json: the oracle's scores on the unbiased test split"],
    threads: int = 1,
) -> None:
    """Train the audit's independent oracle (class and factors) on the pretraining split and the pool."""
    import pandas as pd

    from dicap import runtime
    from dicap.audit.oracle import held_out_report, load_oracle, train_oracle
    from dicap.data.store import DatasetStore
    from dicap.io import atomic_dir, provenance, write_json

    runtime.setup(threads, params["seed"])
    store = DatasetStore.open(dataset_dir)
    # The judge reads the downstream style too (data.downstream_style): it learns from the
    # pretraining images and the few-shot pool, which the test splits never overlap.
    pre = pd.concat([store.split("pretrain"), store.split("train")], ignore_index=True)
    test = store.split("test_unbiased")
    with atomic_dir(out) as tmp:
        train_oracle(store.pixels(pre), pre, len(store.classes), params, tmp, params["seed"])
        scores = held_out_report(load_oracle(tmp), store.pixels(test), test, store.images["test_unbiased"].shape[1])
        write_json(report, {"test_unbiased": scores, **provenance(params, params["seed"])})
    log.info("oracle on test_unbiased: %s", scores)


def diffusion_check(
    dataset_dir: Path,
    diffusion_dir: Path,
    oracle_dir: Path,
    params: Annotated[dict[str, Any], "the config's diffusion.check block"],
    steps: Annotated[int, "counterfactual.steps: DDIM steps over the whole schedule"],
    guidance_scale: Annotated[float, "counterfactual.guidance_scale: the classifier-free scale also read"],
    out: Annotated[Path, "check.json: per-class reads, the verdict and, when it fails, the refusal"],
    threads: int = 1,
) -> None:
    """Have the oracle read samples of every class the diffusion model draws from noise."""
    from dicap import runtime
    from dicap.audit.diffusion_check import CHECKED_SCALE, check_report, class_reads
    from dicap.audit.oracle import load_oracle
    from dicap.backbones.diffusion import load_diffusion
    from dicap.data.store import DatasetStore
    from dicap.io import provenance, write_json

    runtime.setup(threads, params["seed"])
    store = DatasetStore.open(dataset_dir)
    scales = list(dict.fromkeys([CHECKED_SCALE, float(guidance_scale)]))
    reads = class_reads(load_diffusion(diffusion_dir), load_oracle(oracle_dir), store.image_shape[0], steps, scales,
                        params["samples_per_class"], params["seed"])
    report = check_report(reads, store.classes, params["min_class_read"], str(diffusion_dir), guidance_scale)
    write_json(out, report | {"steps": steps, **provenance(params, params["seed"])})
    log.info("class reads at s = %g: %s", CHECKED_SCALE, report["reads"][f"{CHECKED_SCALE:g}"])
    if not report["passed"]:
        log.warning("%s", report["refusal"])


def generator_curve(
    dataset_dir: Path,
    split: Annotated[Path, "the first seed's few-shot split: the curve's images come from it"],
    diffusion_dir: Path,
    oracle_dir: Path,
    clip_dir: Annotated[Path, "the frozen CLIP: the cosine to the true counterfactual (and the 'clip' guide's posterior)"],
    class_text_features: Annotated[Path, "clip_backbone's class text features (the 'clip' guide)"],
    params: Annotated[dict[str, Any], "the config's counterfactual block: guide, steps, batch_size, sampling"],
    scales: Annotated[list[float], "guidance scales"],
    depths: Annotated[list[float], "inversion depths"],
    images: Annotated[int, "report.curve_images: how many of the split's images"],
    seed: Annotated[int, "the split's seed: draws each image's y_cf"],
    out: Annotated[Path, "the curve, one row per image and setting (parquet)"],
    classifier_dir: Annotated[Path | None, "the noise-aware classifier (guide 'classifier' only)"] = None,
    threads: int = 1,
) -> None:
    """Regenerate a few fixed images at every guidance scale x inversion depth; the oracle and CLIP judge each."""

    from dicap import runtime
    from dicap.audit.generator_curve import curve_rows, generator_curve as curve
    from dicap.audit.oracle import load_oracle
    from dicap.backbones.clip import load_class_text_features, load_clip
    from dicap.backbones.diffusion import load_diffusion
    from dicap.backbones.guides import CLIP_GRAD_BATCH_SIZE, make_guide
    from dicap.data.store import DatasetStore
    from dicap.guards import check_table_finite
    from dicap.io import read_table, write_table

    runtime.setup(threads, seed)
    store = DatasetStore.open(dataset_dir)
    diffusion = load_diffusion(diffusion_dir)
    clip = load_clip({"path": str(clip_dir)})
    clip.model.to(runtime.device())
    text = load_class_text_features(class_text_features)
    few_shot = read_table(split)
    image_features = clip.encode_rows(store, few_shot) if params["sampling"] == "centroid" else None
    rows, targets = curve_rows(few_shot, images, store.base_classes, seed, params["sampling"], text, image_features)
    guide = make_guide(params["guide"], diffusion, classifier_dir, clip=clip, text_features=text, grad_batch_size=CLIP_GRAD_BATCH_SIZE)
    frame = curve(store, rows, targets, diffusion, guide, load_oracle(oracle_dir), clip, scales, depths, params["steps"],
                  params["batch_size"])
    check_table_finite(out, frame)
    write_table(out, frame)
    means = frame.groupby(["guidance_scale", "inversion_depth"])[["valid", "faithful"]].mean()
    log.info("generator curve over %d images x %d settings:\n%s", len(rows), len(means), means.round(3).to_string())


def audit_counterfactuals(
    dataset_dir: Path,
    split: Path,
    oracle_dir: Path,
    clip_dir: Annotated[Path, "the frozen CLIP: its image features are the latent space of clip_cosine_to_true and cld"],
    images: Path,
    table: Path,
    out: Path,
    threads: int = 1,
) -> None:
    """Score each counterfactual of one split: validity, preservation, distance to the truth, CLD."""

    from dicap import runtime
    from dicap.audit import scoring
    from dicap.audit.oracle import load_oracle
    from dicap.backbones.clip import load_clip
    from dicap.data.store import DatasetStore
    from dicap.io import load_arrays, read_table, write_table

    runtime.setup(threads, 0)
    store = DatasetStore.open(dataset_dir)
    clip = load_clip({"path": str(clip_dir)})
    clip.model.to(runtime.device())
    frame = scoring.audit_counterfactuals(store, read_table(split), load_arrays(images), read_table(table),
                                          load_oracle(oracle_dir), clip)
    write_table(out, frame)
    log.info("validity %.3f, faithful %.3f over %d counterfactuals", frame["valid"].mean(), frame["faithful"].mean(), len(frame))


def audit_summary(
    datasets: list[str],
    audits: Annotated[list[Path], "per-image audits of the main variant"],
    oracle_reports: Annotated[list[Path], "the oracle rule's report of each dataset"],
    out: Path,
    out_md: Annotated[Path, "the headline columns as a markdown table"],
) -> None:
    """Average per-image audits over images and seeds: results/counterfactual_audit.{csv,md}."""
    from dicap.audit.scoring import read_audits, read_oracle_reports, summarise
    from dicap.io import atomic_output, write_table
    from dicap.report.markdown import markdown_table

    summary = summarise(read_audits(audits, datasets), read_oracle_reports(oracle_reports, datasets))
    write_table(out, summary)
    shown = summary[[c for c in SUMMARY_MD_COLUMNS if c in summary]]
    rows = ([f"{v:.3f}" if isinstance(v, float) else v for v in row] for row in shown.itertuples(index=False))
    with atomic_output(out_md) as tmp:
        tmp.write_text("\n".join([
            "# Counterfactual audit (mean over images, then seeds)", "",
            "Every validity figure stands beside the oracle's own held-out accuracy on real renders "
            "(`oracle_heldout_class_accuracy`) and on objectless images (`oracle_heldout_no_object_recall`); "
            "`cld` is Diff-SCM's Counterfactual Latent Divergence in the frozen CLIP's image features (lower is better). "
            "Every column: docs/method.md, the counterfactual audit.", "",
            *markdown_table(list(shown.columns), rows), ""]))

