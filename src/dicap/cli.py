"""``dicap <command>``: the console entry point every Snakemake rule calls.

Each command takes its parameter block as JSON (``--params``, filled from ``params:`` in the
rule) and explicit input/output paths, so a rule's shell line says everything the job
reads and writes.  Heavy libraries are imported inside the commands: a merge or a table
job should not pay for torch and open_clip.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger("dicap")

COMMANDS: dict[str, Callable[[argparse.Namespace], None]] = {}


def command(name: str, *arguments: tuple[tuple[str, ...], dict[str, Any]]):
    """Register a subcommand with its arguments."""

    def wrap(fn: Callable[[argparse.Namespace], None]):
        fn.arguments = arguments  # type: ignore[attr-defined]
        COMMANDS[name] = fn
        return fn

    return wrap


def arg(*flags: str, **kwargs: Any) -> tuple[tuple[str, ...], dict[str, Any]]:
    return flags, kwargs


PARAMS = arg("--params", type=json.loads, required=True, help="JSON parameter block from the rule's params:")
THREADS = arg("--threads", type=int, default=1)
SEED = arg("--seed", type=int, required=True)
DATASET = arg("--dataset-dir", type=Path, required=True)
CLIP = arg("--clip-dir", type=Path, required=True)
OUT = arg("--out", type=Path, required=True)


@command("download-dataset", arg("--dataset", required=True), arg("--root", type=Path, required=True))
def download_dataset(a: argparse.Namespace) -> None:
    """Fetch, verify and extract one paper-suite dataset into ``<root>/<dataset>/`` (READY.json last)."""
    from dicap.data.paper_sources import prepare_paper_dataset

    prepare_paper_dataset(a.dataset, a.root)


@command("prepare-dataset", arg("--dataset", required=True), PARAMS, OUT)
def prepare_dataset(a: argparse.Namespace) -> None:
    """Render an embedded dataset, or index a downloaded one with CoOp's splits."""
    from dicap.data import embedded

    if a.dataset in embedded.KINDS:
        embedded.build(a.dataset, a.params, a.params["render_seed"], a.out)
        return
    from dicap.data.coop import build_store
    from dicap.data.paper_sources import load_registry

    entry = {"key": a.dataset, **load_registry()["datasets"][a.dataset]}
    table = build_store(entry, Path(a.params["root"]) / a.dataset, a.params["image_size"], a.out)
    log.info("%s: %s", a.dataset, table.groupby("split").size().to_dict())


@command("make-split", DATASET, SEED, PARAMS, OUT)
def make_split(a: argparse.Namespace) -> None:
    """Draw the few-shot training split of one seed, then keep its base classes.

    As in CoOp the shots are drawn over all classes before the base/novel split; drawing
    class by class in label order, the base classes' picks are the same either way.  The
    embedded suite's spurious draw is defined for the classes that train only (a novel
    class's pool need not hold enough images of its paired background), so it draws there.
    """
    from dicap.data.splits import few_shot
    from dicap.data.store import DatasetStore, base_novel_split
    from dicap.io import write_table

    store = DatasetStore.open(a.dataset_dir)
    base, _ = base_novel_split(len(store.classes))
    spurious = a.params.get("spurious_strength")
    classes = base if spurious is not None else range(len(store.classes))
    split = few_shot(store.split("train"), classes, a.params["shots"], a.seed, spurious)
    write_table(a.out, split[split["label"].isin(base)].reset_index(drop=True))


@command("clip-backbone", DATASET, PARAMS, THREADS, OUT)
def clip_backbone(a: argparse.Namespace) -> None:
    """Pretrain the tiny CLIP (embedded) or point at a pretrained one (paper), then record
    its zero-shot accuracy on the first test split and its class text features."""
    import numpy as np

    from dicap import runtime
    from dicap.backbones import clip
    from dicap.data.store import DatasetStore
    from dicap.guards import check_finite
    from dicap.io import atomic_dir, provenance, save_arrays, write_json

    pretrained = a.params.get("pretrained")
    seed = 0 if pretrained else a.params["train"]["seed"]
    runtime.setup(a.threads, seed)
    store = DatasetStore.open(a.dataset_dir)
    with atomic_dir(a.out) as tmp:
        losses: list[float] = []
        if pretrained:
            write_json(tmp / clip.PRETRAINED_FILE, pretrained)
        else:
            pre = store.split("pretrain")
            losses = clip.train_tiny_clip(
                store.pixels(pre), pre["caption"].tolist(), a.params["model"], a.params["train"], tmp, seed
            )
        bundle = clip.load_clip({"path": str(tmp)})
        bundle.model.to(runtime.device())
        split = store.test_splits[0]
        test = store.split(split)
        features = _encode_rows(bundle, store, test)
        text = bundle.encode_texts([a.params["template"].format(c) for c in store.classes])
        check_finite(a.out / "class_text_features.safetensors", {"class text features": text, "test image features": features})
        acc = float(((features @ text.numpy().T).argmax(1) == test["label"].to_numpy()).mean())
        save_arrays(tmp / "class_text_features.safetensors", {"features": text.numpy().astype(np.float32)})
        write_json(tmp / "report.json", {
            "zero_shot_accuracy": acc, "zero_shot_split": split,
            "final_loss": float(np.mean(losses[-20:])) if losses else None, **provenance(a.params, seed),
        })
    log.info("zero-shot accuracy on %s: %.3f", split, acc)


@command("diffusion-backbone", DATASET, PARAMS, THREADS, OUT)
def diffusion_backbone(a: argparse.Namespace) -> None:
    """Train the class-conditional UNet (label dropout gives the marginal score too), or
    record which pretrained latent model the paper suite uses."""
    import numpy as np

    from dicap import runtime
    from dicap.backbones import diffusion
    from dicap.data.store import DatasetStore
    from dicap.io import atomic_dir, provenance, write_json

    if a.params.get("pretrained"):  # paper suite: nothing to train, check it is there
        from dicap.backbones.latent_diffusion import write_pretrained_pointer

        with atomic_dir(a.out) as tmp:
            write_pretrained_pointer(a.params["pretrained"], tmp)
            write_json(tmp / "report.json", {"final_loss": None, "pretrained": a.params["pretrained"]["path"]})
        return
    seed = a.params["train"]["seed"]
    runtime.setup(a.threads, seed)
    store = DatasetStore.open(a.dataset_dir)
    pre = store.split("pretrain")
    with atomic_dir(a.out) as tmp:
        losses = diffusion.train_unet(
            store.pixels(pre), pre["label"].to_numpy(), len(store.classes), a.params["model"], a.params["train"], tmp, seed
        )
        write_json(tmp / "report.json", {
            "final_loss": float(np.mean(losses[-20:])) if losses else None, **provenance(a.params, seed),
        })


@command("guide-classifier", DATASET, PARAMS, THREADS, OUT)
def guide_classifier(a: argparse.Namespace) -> None:
    """Train the noise-aware classifier used by the ``classifier`` guide."""
    from dicap import runtime
    from dicap.backbones.guides import train_noisy_classifier
    from dicap.data.store import DatasetStore
    from dicap.io import atomic_dir

    runtime.setup(a.threads, a.params["seed"])
    store = DatasetStore.open(a.dataset_dir)
    pre = store.split("pretrain")
    with atomic_dir(a.out) as tmp:
        train_noisy_classifier(store.pixels(pre), pre["label"].to_numpy(), len(store.classes), a.params, tmp, a.params["seed"])


@command(
    "counterfactual-shard", DATASET, CLIP, SEED, PARAMS, THREADS,
    arg("--split", type=Path, required=True), arg("--diffusion-dir", type=Path, required=True),
    arg("--classifier-dir", type=Path), arg("--shard", type=int, required=True), arg("--shards", type=int, required=True),
    arg("--out-images", type=Path, required=True), arg("--out-table", type=Path, required=True),
)
def counterfactual_shard(a: argparse.Namespace) -> None:
    """Invert and regenerate one shard of a few-shot split towards chosen classes."""
    import pandas as pd

    from dicap import runtime
    from dicap.backbones.clip import load_clip
    from dicap.backbones.diffusion import load_diffusion
    from dicap.backbones.guides import make_guide
    from dicap.backbones.latent_diffusion import load_from_dir
    from dicap.counterfactual import generate, sampling, shards
    from dicap.data.store import DatasetStore, base_novel_split
    from dicap.guards import check_not_constant, check_table_finite
    from dicap.io import load_arrays, save_arrays, write_table

    runtime.setup(a.threads, a.seed)
    store = DatasetStore.open(a.dataset_dir)
    split = pd.read_parquet(a.split)
    base, _ = base_novel_split(len(store.classes))
    text = load_arrays(a.clip_dir / "class_text_features.safetensors")["features"]
    latent = load_from_dir(a.diffusion_dir, store.classes, runtime.device())  # paper suite
    diffusion = latent if latent is not None else load_diffusion(a.diffusion_dir)
    # CLIP, loaded once, serves the centroids, the 'clip' guide and a latent model's confidence column.
    centroid = a.params["sampling"] == "centroid"
    clip = load_clip({"path": str(a.clip_dir)}) if centroid or a.params["guide"] == "clip" or latent is not None else None
    # every shard encodes the whole split for the centroids: the same targets everywhere
    image_features = _encode_rows(clip, store, split) if centroid else None
    targets = sampling.choose_targets(split["label"].to_numpy(), base, a.params["sampling"], a.seed, text, image_features)
    rows = shards.shard_rows(split, a.shard, a.shards)
    guide = make_guide(a.params["guide"], diffusion, a.classifier_dir, clip=clip, text_features=text, grad_batch_size=2)
    if rows.empty:  # more shards than images: a valid empty output, which the merge accepts
        log.info("shard %d of %d is empty (%d images in the split): writing empty outputs", a.shard, a.shards, len(split))
    arrays, table = generate.generate(store, rows, targets[rows["row"].to_numpy()], diffusion, guide, a.params)
    check_not_constant(a.out_images, "counterfactual images", arrays["images"])
    check_table_finite(a.out_table, table)
    save_arrays(a.out_images, arrays)
    write_table(a.out_table, table)


@command(
    "merge-counterfactuals", arg("--split", type=Path, required=True),
    arg("--images", type=Path, nargs="+", required=True), arg("--tables", type=Path, nargs="+", required=True),
    arg("--out-images", type=Path, required=True), arg("--out-table", type=Path, required=True),
)
def merge_counterfactuals(a: argparse.Namespace) -> None:
    """Join the shards of one split, checking that they cover it exactly once."""
    import pandas as pd

    from dicap.counterfactual.shards import merge
    from dicap.io import load_arrays, save_arrays, write_table

    parts = [(load_arrays(i), pd.read_parquet(t)) for i, t in zip(a.images, a.tables)]
    arrays, table = merge(parts, len(pd.read_parquet(a.split)))
    save_arrays(a.out_images, arrays)
    write_table(a.out_table, table)


@command(
    "encode-features", DATASET, CLIP, THREADS, OUT,
    arg("--split", type=Path, help="few-shot split: encode it (and --counterfactuals); else the eval splits"),
    arg("--counterfactuals", type=Path, help="merged counterfactual images"),
    arg("--counterfactual-key", default="images", help="'images' (generated) or 'true_images' (the oracle ablation)"),
    arg("--counterfactual-table", type=Path),
)
def encode_features(a: argparse.Namespace) -> None:
    """Cache frozen CLIP image features so prompt training never re-encodes images."""
    import numpy as np
    import pandas as pd

    from dicap import runtime
    from dicap.backbones.clip import load_clip
    from dicap.data.store import DatasetStore
    from dicap.guards import check_finite
    from dicap.io import load_arrays, save_arrays

    runtime.setup(a.threads, 0)
    store = DatasetStore.open(a.dataset_dir)
    bundle = load_clip({"path": str(a.clip_dir)})
    bundle.model.to(runtime.device())
    out: dict[str, np.ndarray] = {}
    if a.split:
        split = pd.read_parquet(a.split)
        out["train"] = _encode_rows(bundle, store, split)
        out["train_labels"] = split["label"].to_numpy()
        if a.counterfactuals:
            table = pd.read_parquet(a.counterfactual_table)
            arrays = load_arrays(a.counterfactuals)
            if a.counterfactual_key not in arrays:
                raise KeyError(f"{a.counterfactuals} holds no {a.counterfactual_key!r} (it has: {', '.join(arrays)})")
            out["cf"] = bundle.encode_images(arrays[a.counterfactual_key]).numpy()
            out["cf_labels"] = table["y_cf"].to_numpy()
    else:
        for name in ("val", *store.test_splits):
            rows = store.split(name)
            out[name] = _encode_rows(bundle, store, rows)
            out[f"{name}_labels"] = rows["label"].to_numpy()
    check_finite(a.out, out)
    save_arrays(a.out, out)


def _encode_rows(bundle, store, rows, chunk: int = 1024):
    """Image features of table rows, decoding at most ``chunk`` images at a time: a real
    test split does not fit in memory as pixels.  ``chunk`` is a multiple of the encoder's
    batch, so the batches - and the bytes - are those of one call over all rows."""
    import numpy as np

    parts = [bundle.encode_images(store.pixels(rows.iloc[i : i + chunk])).numpy() for i in range(0, len(rows), chunk)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def _epochs(text: str) -> int:
    """argparse type: a whole number of epochs, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of epochs, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more epochs, got {value}")
    return value


@command(
    "train-prompt", DATASET, CLIP, SEED, PARAMS, THREADS, OUT,
    arg("--method", required=True), arg("--features", type=Path, required=True),
    arg("--checkpoint-every", type=_epochs, default=0, metavar="EPOCHS",
        help="save a resumable checkpoint beside --out every EPOCHS epochs (0: never); a matching one is always resumed"),
)
def train_prompt(a: argparse.Namespace) -> None:
    """Learn the prompt context of one method on cached features.

    The checkpoint interval is an option, not part of ``--params``: it cannot change the
    result, so changing it must neither rerun the job nor alter the recorded provenance.
    """
    import torch

    from dicap import runtime
    from dicap.backbones.clip import load_clip
    from dicap.data.store import DatasetStore, base_novel_split
    from dicap.guards import check_finite
    from dicap.io import load_arrays, provenance, save_arrays, write_json
    from dicap.prompting.checkpoint import checkpoint_path, remove_checkpoint
    from dicap.prompting.learner import PromptLearner
    from dicap.prompting.trainer import train_context

    runtime.setup(a.threads, a.seed)
    store = DatasetStore.open(a.dataset_dir)
    bundle = load_clip({"path": str(a.clip_dir)})
    base, _ = base_novel_split(len(store.classes))
    dev = runtime.device()
    features = {k: torch.from_numpy(v).to(dev) for k, v in load_arrays(a.features).items()}
    learner = PromptLearner(bundle.model, bundle.tokenizer, [store.classes[c] for c in base], a.params["n_ctx"], a.params["ctx_init"])
    learner.to(dev)
    checkpoint = checkpoint_path(a.out)
    history = train_context(learner, a.method, features, a.params, float(bundle.model.logit_scale.exp()), a.seed,
                            checkpoint=checkpoint, checkpoint_every=a.checkpoint_every)
    check_finite(a.out, {"learned context": learner.ctx})
    save_arrays(a.out, {"ctx": learner.ctx.detach().cpu().numpy()}, meta={"method": a.method, "seed": str(a.seed)})
    write_json(a.out.with_suffix(".json"), {"method": a.method, "history": history, **provenance(a.params, a.seed)})
    remove_checkpoint(checkpoint)  # only now: a job killed before this line resumes instead of retraining


@command(
    "evaluate", DATASET, CLIP, SEED, PARAMS, THREADS, OUT,
    arg("--features", type=Path, required=True),
    arg("--prompts", type=Path, nargs="+", required=True), arg("--methods", nargs="+", required=True),
)
def evaluate(a: argparse.Namespace) -> None:
    """Score every method's prompt on base and novel classes of both test splits."""
    import pandas as pd
    import torch

    from dicap import runtime
    from dicap.backbones.clip import load_clip
    from dicap.data.store import DatasetStore, base_novel_split
    from dicap.evaluation.metrics import base_novel
    from dicap.guards import check_finite, check_table_finite
    from dicap.io import load_arrays, write_table
    from dicap.prompting.learner import PromptLearner

    runtime.setup(a.threads, a.seed)
    store = DatasetStore.open(a.dataset_dir)
    bundle = load_clip({"path": str(a.clip_dir)})
    base, novel = base_novel_split(len(store.classes))
    feats = {k: torch.from_numpy(v) for k, v in load_arrays(a.features).items()}
    check_finite(a.out, feats, source=a.features)
    rows = []
    for method, prompt in zip(a.methods, a.prompts):
        learner = PromptLearner(bundle.model, bundle.tokenizer, store.classes, a.params["n_ctx"], a.params["ctx_init"])
        ctx = load_arrays(prompt).get("ctx")
        if ctx is None or tuple(ctx.shape) != tuple(learner.ctx.shape):
            found = "no 'ctx' tensor" if ctx is None else f"ctx of shape {tuple(ctx.shape)}"
            raise ValueError(f"{prompt} holds {found}, expected {tuple(learner.ctx.shape)} (n_ctx x text width)")
        check_finite(a.out, {"ctx": ctx}, source=prompt)
        learner.ctx.data = torch.from_numpy(ctx)
        with torch.no_grad():
            text = learner()
        check_finite(a.out, {f"class text features of {method}": text})
        for split in store.test_splits:
            scores = base_novel(feats[split], feats[f"{split}_labels"], text, base, novel)
            rows.append({"method": method, "seed": a.seed, "split": split, **scores})
    check_table_finite(a.out, pd.DataFrame(rows))
    write_table(a.out, pd.DataFrame(rows))


@command(
    "table", arg("--suite", required=True), arg("--metrics", type=Path, nargs="+", required=True),
    arg("--datasets", nargs="+", required=True), arg("--config-json", type=json.loads, required=True),
    arg("--out-csv", type=Path, required=True), arg("--out-md", type=Path, required=True),
    arg("--out-metrics", type=Path, help="the same numbers as nested JSON, for dvc metrics"),
)
def table(a: argparse.Namespace) -> None:
    """Aggregate per-seed metrics into Table 1 (mean and std over seeds, average row)."""
    from dicap.report.table import build_table1, write_table1

    frame = build_table1(a.suite, a.datasets, a.metrics)
    write_table1(frame, a.out_csv, a.out_md, a.config_json, a.out_metrics)


@command("figure-bars", arg("--table", type=Path, required=True), OUT)
def figure_bars(a: argparse.Namespace) -> None:
    """Plot base / novel / HM bars per method from Table 1."""
    from dicap.report.figures import plot_table1

    plot_table1(a.table, a.out)


@command(
    "figure-counterfactuals", DATASET, arg("--split", type=Path, required=True),
    arg("--images", type=Path, nargs="+", required=True, help="merged counterfactuals, main run first, then other scales"),
    arg("--audits", type=Path, nargs="+", required=True, help="their per-image audits, in the same order"), OUT,
)
def figure_counterfactuals(a: argparse.Namespace) -> None:
    """Plot factual | counterfactuals at several s | true counterfactual, with the oracle's verdicts."""
    from dicap.report.figures import plot_counterfactual_grid

    if len(a.images) != len(a.audits):
        raise ValueError(f"{len(a.images)} counterfactual files but {len(a.audits)} audits")
    plot_counterfactual_grid(a.dataset_dir, a.split, a.images, a.audits, a.out)


@command("oracle", DATASET, PARAMS, THREADS, OUT)
def oracle(a: argparse.Namespace) -> None:
    """Train the audit's independent oracle (class and factors) on the pretraining split."""
    from dicap import runtime
    from dicap.audit.oracle import held_out_report, load_oracle, train_oracle
    from dicap.data.store import DatasetStore
    from dicap.io import atomic_dir, provenance, write_json

    runtime.setup(a.threads, a.params["seed"])
    store = DatasetStore.open(a.dataset_dir)
    pre, test = store.split("pretrain"), store.split("test_unbiased")
    with atomic_dir(a.out) as tmp:
        train_oracle(store.pixels(pre), pre, len(store.classes), a.params, tmp, a.params["seed"])
        report = held_out_report(load_oracle(tmp), store.pixels(test), test, store.images["test_unbiased"].shape[1])
        write_json(tmp / "report.json", {"test_unbiased": report, **provenance(a.params, a.params["seed"])})
    log.info("oracle on test_unbiased: %s", report)


@command(
    "audit-counterfactuals", DATASET, THREADS, OUT,
    arg("--split", type=Path, required=True), arg("--oracle-dir", type=Path, required=True),
    arg("--images", type=Path, required=True), arg("--table", type=Path, required=True),
)
def audit_counterfactuals(a: argparse.Namespace) -> None:
    """Score each counterfactual of one split: validity, preservation, distance to the truth."""
    import pandas as pd

    from dicap import runtime
    from dicap.audit.oracle import load_oracle
    from dicap.audit.scoring import audit_counterfactuals as audit
    from dicap.data.store import DatasetStore
    from dicap.io import load_arrays, write_table

    runtime.setup(a.threads, 0)
    store = DatasetStore.open(a.dataset_dir)
    frame = audit(store, pd.read_parquet(a.split), load_arrays(a.images), pd.read_parquet(a.table), load_oracle(a.oracle_dir))
    write_table(a.out, frame)
    log.info("validity %.3f, faithful %.3f over %d counterfactuals", frame["valid"].mean(), frame["faithful"].mean(), len(frame))


def _oracle_reports(datasets: list[str], reports: list[Path]) -> dict[str, dict]:
    """models/<dataset>/oracle/report.json -> the oracle's held-out scores per dataset."""
    from dicap.io import read_json

    by_dataset = {p.parent.parent.name: read_json(p)["test_unbiased"] for p in reports}
    missing = sorted(set(datasets) - set(by_dataset))
    if missing:
        raise ValueError(f"no oracle report for datasets {missing} among {[str(p) for p in reports]}")
    return by_dataset


@command(
    "audit-summary", arg("--datasets", nargs="+", required=True), arg("--audits", type=Path, nargs="+", required=True),
    arg("--oracle-reports", type=Path, nargs="+", required=True), OUT,
)
def audit_summary(a: argparse.Namespace) -> None:
    """Average per-image audits over images and seeds: results/counterfactual_audit.csv."""
    from dicap.audit.scoring import read_audits, summarise
    from dicap.io import write_table

    write_table(a.out, summarise(read_audits(a.audits, a.datasets), _oracle_reports(a.datasets, a.oracle_reports)))


@command(
    "ablation", arg("--x", required=True, help="the setting on the x axis: s, sampling or counterfactuals"),
    arg("--datasets", nargs="+", required=True), arg("--metrics", type=Path, nargs="+", required=True),
    arg("--audits", type=Path, nargs="+", required=True), arg("--oracle-reports", type=Path, nargs="+", required=True),
    arg("--out-csv", type=Path, required=True), arg("--out-png", type=Path, required=True),
)
def ablation(a: argparse.Namespace) -> None:
    """One ablation's table (audit scores and accuracy per setting) and its figure."""
    from dicap.io import write_table
    from dicap.report.ablations import build_ablation, plot_ablation

    table = build_ablation(a.metrics, a.audits, a.datasets, _oracle_reports(a.datasets, a.oracle_reports))
    write_table(a.out_csv, table)
    plot_ablation(table, a.x, a.out_png)


@command(
    "backbone-report", arg("--datasets", nargs="+", required=True), arg("--clip-reports", type=Path, nargs="+", required=True),
    arg("--diffusion-reports", type=Path, nargs="+", required=True), arg("--cf-tables", type=Path, nargs="+", required=True), OUT,
)
def backbone_report(a: argparse.Namespace) -> None:
    """Summarise what the backbones and the generator achieved, per dataset."""
    from dicap.report.table import build_backbone_report

    build_backbone_report(a.datasets, a.clip_reports, a.diffusion_reports, a.cf_tables, a.out)


@command("cost-report", arg("--suite", required=True), arg("--benchmarks", type=Path, required=True), OUT)
def cost_report(a: argparse.Namespace) -> None:
    """Summarise the rules' benchmark files: wall time and peak memory per rule."""
    from dicap.io import write_table
    from dicap.report.cost import cost_table, read_benchmarks

    write_table(a.out, cost_table(read_benchmarks(a.benchmarks), a.suite))


RESULT_TABLES = (
    arg("--table1", type=Path, required=True), arg("--backbones", type=Path),
    arg("--audit", type=Path, help="results/counterfactual_audit.csv (embedded suite only)"),
)


@command("reproduction", *RESULT_TABLES, arg("--reference", type=Path, help="results/reference/<suite>.csv, if one exists"),
         arg("--out-csv", type=Path, required=True), arg("--out-md", type=Path, required=True))
def reproduction(a: argparse.Namespace) -> None:
    """Compare every regenerated number with the reference: results/reproduction.{csv,md}."""
    from dicap.report.reproduction import compare, read_reference, regenerated_numbers, write_reproduction

    reference, info = read_reference(a.reference) if a.reference else (None, None)
    frame = compare(regenerated_numbers(a.table1, a.backbones, a.audit), reference)
    write_reproduction(frame, a.out_csv, a.out_md, info)
    log.info("%d of %d numbers within tolerance", (frame["within"] == "yes").sum(), len(frame))


@command("record-reference", *RESULT_TABLES, OUT)
def record_reference(a: argparse.Namespace) -> None:
    """Freeze this run's numbers (and this machine) as the reference later runs compare with."""
    from dicap.report.reproduction import record_reference as record
    from dicap.report.reproduction import regenerated_numbers

    record(regenerated_numbers(a.table1, a.backbones, a.audit), a.out, a.table1.with_suffix(".provenance.json"))


@command("readme-results", arg("--reference", type=Path, required=True), arg("--readme", type=Path, required=True),
         arg("--check", action="store_true", help="fail if the README's results section differs from the reference"))
def readme_results(a: argparse.Namespace) -> None:
    """Write the README's results section from the reference file."""
    from dicap.report.readme import results_section, update_readme

    if not update_readme(a.readme, results_section(a.reference), check=a.check):
        raise ValueError(f"{a.readme}'s results section differs from {a.reference}: run dicap readme-results")


@command("validate-config", arg("config", type=Path))
def validate_config(a: argparse.Namespace) -> None:
    """Check a config file against the schema."""
    from dicap.config import load_config

    load_config(a.config)
    print(f"{a.config}: valid")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dicap", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn in COMMANDS.items():
        p = sub.add_parser(name, help=(fn.__doc__ or "").splitlines()[0])
        for flags, kwargs in fn.arguments:  # type: ignore[attr-defined]
            p.add_argument(*flags, **kwargs)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        COMMANDS[args.command](args)
    except (ValueError, KeyError, FileNotFoundError, OSError) as err:
        log.error("%s", err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
