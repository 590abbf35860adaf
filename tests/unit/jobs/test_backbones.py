"""The CLIP backbone's pretraining data (jobs/backbones.py): its own world, then each other world it
is asked to read too (clip.pretrain_with), so the cross-dataset table can name the other's classes."""

from __future__ import annotations

import numpy as np
import pytest

from dicap.data import embedded
from dicap.data.store import DatasetStore
from dicap.jobs.backbones import _other_worlds, _pretraining_pairs
from helpers import SIZES


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("worlds")
    for name in ("digits", "shapes"):
        embedded.build(name, SIZES, 0, root / name)
    return {name: DatasetStore.open(root / name) for name in ("digits", "shapes")}


@pytest.mark.parametrize("order", [("digits",), ("digits", "shapes"), ("shapes", "digits")])
def test_each_world_adds_its_captioned_pretraining_images_whole_and_in_order(stores, order):
    images, captions = _pretraining_pairs([stores[name] for name in order])
    parts = [stores[name].split("pretrain") for name in order]
    assert len(images) == len(captions) == sum(len(p) for p in parts)
    start = 0
    for name, part in zip(order, parts):
        end = start + len(part)
        assert np.array_equal(images[start:end], stores[name].pixels(part)), name
        assert captions[start:end] == part["caption"].tolist(), name
        start = end
    if len(order) == 2:  # the other world's class names reach the captions: what lets its CLIP name them
        other = stores[order[1]].classes
        assert any(c in " ".join(captions[len(parts[0]):]) for c in other)


@pytest.mark.parametrize(("given", "named"), [(["shapes"], []), ([], ["shapes"]), (["shapes"], ["digits"]),
                                              (["digits", "shapes"], ["shapes", "digits"])])
def test_stores_that_are_not_the_worlds_the_params_name_are_refused_naming_both(stores, given, named):
    with pytest.raises(ValueError, match="--pretrain-with gives the stores of"):
        _other_worlds([stores[n].root for n in given], named)
    assert [s.dataset for s in _other_worlds([stores[n].root for n in named], named)] == named
