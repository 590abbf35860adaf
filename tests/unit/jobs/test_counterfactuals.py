"""The counterfactual jobs (jobs/counterfactuals.py) read the split and the shards' tables through
dicap.io: a damaged one names itself (CorruptArtifact), so the job removes it and says what rebuilds it."""

from __future__ import annotations

import pytest
import torch

from dicap.data import embedded
from dicap.io import save_arrays, write_table
from dicap.jobs.counterfactuals import counterfactual_shard, merge_counterfactuals
from helpers import SIZES, assert_corrupt, truncated_table


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("store") / "data"
    embedded.build("shapes", SIZES, 0, root)
    return root


def test_a_shard_names_a_truncated_split(store, tmp_path):
    split = truncated_table(tmp_path / "split.parquet")
    assert_corrupt(split, counterfactual_shard, dataset_dir=store, split=split, clip_dir=tmp_path, class_text_features=tmp_path,
                   diffusion_dir=tmp_path, seed=1, shard=0, shards=1, params={}, out_images=tmp_path / "i.safetensors",
                   out_table=tmp_path / "t.parquet")


@pytest.mark.parametrize("damaged", ["split", "table0", "table1"])
def test_the_merge_names_a_truncated_split_or_shard_table(tmp_path, damaged):
    import pandas as pd

    images = [tmp_path / f"shard{k}-of-2.safetensors" for k in range(2)]
    tables = [p.with_suffix(".parquet") for p in images]
    for path, table in zip(images, tables):
        save_arrays(path, {"images": torch.zeros(1, 3, 4, 4).numpy()})
        write_table(table, pd.DataFrame({"row": [0]}))
    write_table(tmp_path / "split.parquet", pd.DataFrame({"label": [0, 1]}))
    path = tmp_path / "split.parquet" if damaged == "split" else tables[int(damaged[-1])]
    truncated_table(path)
    assert_corrupt(path, merge_counterfactuals, tmp_path / "split.parquet", images, tables,
                   tmp_path / "out.safetensors", tmp_path / "out.parquet")
    assert not (tmp_path / "out.safetensors").exists()


@pytest.mark.parametrize("variant", ["main", "all_classes", "sample_random", "guidance_scale10"])
def test_y_cf_is_chosen_among_the_classes_the_variant_trains_on(store, variant):
    """The shard job reads the class set from the variant's settings (layout.variant_settings)."""
    from dicap import layout
    from dicap.data.splits import trained_classes
    from dicap.data.store import DatasetStore
    from dicap.jobs.counterfactuals import _target_classes

    opened = DatasetStore.open(store)
    settings = layout.variant_settings(variant, {"guidance_scale": 3.0, "sampling": "similarity"})
    classes = _target_classes(opened, settings)
    assert classes == trained_classes(opened, variant)
    assert len(classes) == (len(opened.classes) if variant == layout.ALL_CLASSES else len(opened.base_classes))
