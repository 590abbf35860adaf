"""Jobs of rules/data.smk: download a paper dataset, prepare a store (or an embedded dataset's
shift store), draw a few-shot split.

Each function is the rule of the same name.  Jobs take explicit paths and a parameter block,
so a rule's shell line says everything the job reads and writes; heavy libraries are imported
inside the functions, since `dicap <job>` imports this module only to call one of them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

log = logging.getLogger(__name__)

__all__ = ["download_dataset", "prepare_dataset", "prepare_shifts", "make_split"]


def download_dataset(dataset: str, root: Path) -> None:
    """Fetch, verify and extract one paper-suite dataset into ``<root>/<dataset>/`` (READY.json last)."""
    from dicap.data.paper_sources import prepare_paper_dataset

    prepare_paper_dataset(dataset, root)


def prepare_dataset(dataset: str, params: Annotated[dict[str, Any], "the config's data block"], out: Path) -> None:
    """Render an embedded dataset, or index a downloaded one with CoOp's splits."""
    from dicap.data import embedded

    if dataset in embedded.DATASETS:
        embedded.build(dataset, params, params["render_seed"], out)
        return
    from dicap.data.coop import build_store
    from dicap.data.paper_sources import load_registry, task_of
    from dicap.data.text_store import build_text_store

    entry = {"key": dataset, **load_registry()["datasets"][dataset]}
    if task_of(entry) == "classification":
        table = build_store(entry, Path(params["root"]) / dataset, params["image_size"], out)
    else:  # Flickr30k, MSCOCO, VQAv2: images with captions or questions, no classes
        table = build_text_store(entry, Path(params["root"]) / dataset, params["image_size"], params, out)
    log.info("%s: %s", dataset, table.groupby("split").size().to_dict())


def prepare_shifts(dataset: str, params: Annotated[dict[str, Any], "the config's data block (image_size, downstream_style)"],
                   seed: int, out: Path, shifts: Annotated[list[str], "splits to render: background object_colour style noise"],
                   per_class: int) -> None:
    """Render an embedded dataset's domain-generalization store: one test split per shifted factor."""
    from dicap.data import shifts as shift_store

    shift_store.build(dataset, params, seed, out, shifts, per_class)
    log.info("%s: %d objects per class under shifts %s", dataset, per_class, ", ".join(shifts))


def make_split(dataset_dir: Path, seed: int,
               params: Annotated[dict[str, Any], "shots (and spurious_strength, classes), or a text dataset's percent"],
               out: Path) -> None:
    """Draw the few-shot training split of one seed: shots of the base classes (of every class
    where ``classes`` is ``all``), or a text dataset's share of its pool with one caption or question each."""
    from dicap.data.splits import training_split
    from dicap.data.store import DatasetStore
    from dicap.data.text_store import few_shot_split
    from dicap.io import write_table

    store = DatasetStore.open(dataset_dir)
    if store.is_text_task:
        if "percent" not in params:
            raise ValueError(f"{dataset_dir} is a {store.task} dataset: its split takes 'percent' (tasks.percent), got {sorted(params)}")
        write_table(out, few_shot_split(store, params["percent"], seed))
        return
    write_table(out, training_split(store, params["shots"], seed, params.get("spurious_strength"), params.get("classes", "base")))

