"""Image-text retrieval data (Flickr30k, MSCOCO) with CPL's few-shot protocol.

Karpathy's split files (``dataset_flickr30k.json``, ``dataset_coco.json`` in
caption_datasets.zip) list every image once: ``{"images": [{"filename", "filepath" (COCO
only), "split": train|val|test|restval, "imgid", "sentences": [{"raw", "tokens", ...}]}]}``.
:func:`read_karpathy` turns one into two tables:

* images: ``image_id`` (Karpathy's ``imgid``), ``path`` (relative to the image root:
  ``<filepath>/<filename>`` for COCO, ``<filename>`` for Flickr30k), ``split``, ``n_captions``;
* captions: ``image_id``, ``caption_index`` (position in ``sentences``), ``caption`` (the
  ``raw`` sentence, whitespace-stripped as CPL's MSCOCO script does), ``split``.

CPL's protocol (eric-ai-lab/CPL, dataset_processing/{flickr30k,mscoco}/split.py):

* test (:func:`retrieval_test`): the Karpathy *test* images with their first 5 captions
  (CPL's ``for j in range(5)``) - Flickr30k 1,000 x 5, MSCOCO 5,000 x 5 = 25,000.  A few
  COCO images have 6 or 7 captions; the standard 25,000 keeps the first 5, so do we.
* few-shot training (:func:`retrieval_training`): ``percent`` % of the Karpathy *train*
  images, each paired with ONE of its first 5 captions drawn by the seed.  CPL's MSCOCO script
  draws from the Karpathy *val* split (5,000 images), which cannot give its own counts
  414/828/2,483/4,139 (0.5-5 % of 5,000 is 25-250); 0.5/1/3/5 % of the 82,783 Karpathy
  train images, rounded half up, gives exactly those counts (413.9, 827.8, 2,483.5, 4,139.2),
  and of Flickr30k's 29,000 exactly 145/290/870/1,450.  So the pool is ``split == "train"``
  only - not ``restval`` (train + restval = 113,287 would give 566/1,133/3,399/5,664), and
  never val or test.

The draw is a seeded permutation of the pool (sorted by image id, so the file's order does
not matter) whose first n images are taken, and one caption index per pool image from a
second stream of the same seed: for one seed the 0.5 % set is inside the 1 % set and an
image keeps its caption across fractions; different seeds give different sets.  CPL's code
also truncates Flickr30k test captions at 265 characters; that is left to the tokenizer
(CLIP truncates to 77 tokens anyway).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from dicap.data.annotation_files import load_json_list, percent_count, refuse_duplicates, require

KARPATHY_SPLITS = ("train", "restval", "val", "test")
CAPTIONS_PER_IMAGE = 5  # CPL's test set and caption draw use the first five
FEW_SHOT_POOL = "train"


def read_karpathy(path: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The images and captions tables of one Karpathy split file (see the module docstring)."""
    _, images = load_json_list(path, "images")
    image_rows, caption_rows = [], []
    for i, image in enumerate(images):
        where = f"images[{i}]"
        require(path, where, image, {"imgid": int, "filename": str, "split": str, "sentences": list})
        if "filepath" in image:
            require(path, where, image, {"filepath": str})
        if image["split"] not in KARPATHY_SPLITS:
            raise ValueError(f"{path}: {where} has a bad 'split' ({image['split']!r}; expected one of {KARPATHY_SPLITS})")
        if not image["sentences"]:
            raise ValueError(f"{path}: {where} (imgid {image['imgid']}) has an empty 'sentences' list")
        for j, sentence in enumerate(image["sentences"]):
            require(path, f"{where}.sentences[{j}]", sentence, {"raw": str})
            caption_rows.append({"image_id": image["imgid"], "caption_index": j, "caption": sentence["raw"].strip(),
                                 "split": image["split"]})
        rel = f"{image['filepath']}/{image['filename']}" if "filepath" in image else image["filename"]
        image_rows.append({"image_id": image["imgid"], "path": rel, "split": image["split"],
                           "n_captions": len(image["sentences"])})
    refuse_duplicates(path, "imgid", (row["image_id"] for row in image_rows))
    refuse_duplicates(path, "filename", (row["path"] for row in image_rows))
    return pd.DataFrame(image_rows), pd.DataFrame(caption_rows)


def retrieval_test(images: pd.DataFrame, captions: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The Karpathy test images and their first 5 captions, both sorted by image id."""
    test_images = images[images["split"] == "test"].sort_values("image_id").reset_index(drop=True)
    if test_images.empty:
        raise ValueError("the Karpathy file has no test images")
    short = test_images[test_images["n_captions"] < CAPTIONS_PER_IMAGE]
    if not short.empty:
        raise ValueError(f"test image {int(short['image_id'].iloc[0])} has fewer than {CAPTIONS_PER_IMAGE} captions")
    test_captions = captions[(captions["split"] == "test") & (captions["caption_index"] < CAPTIONS_PER_IMAGE)]
    test_captions = test_captions.sort_values(["image_id", "caption_index"]).reset_index(drop=True)
    return test_images, test_captions


def few_shot_count(images: pd.DataFrame, percent: float) -> int:
    """How many training images ``percent`` % gives (see the module docstring for the pool)."""
    return percent_count(int((images["split"] == FEW_SHOT_POOL).sum()), percent, "half_up")


def retrieval_training(images: pd.DataFrame, captions: pd.DataFrame, percent: float, seed: int) -> pd.DataFrame:
    """``percent`` % of the Karpathy train images, one seeded caption each: columns image_id,
    path, caption_index, caption; sorted by image id."""
    pool = images[images["split"] == FEW_SHOT_POOL].sort_values("image_id").reset_index(drop=True)
    n = few_shot_count(images, percent)
    if n < 1:
        raise ValueError(f"{percent} % of {len(pool)} training images is less than one image")
    rng_images, rng_captions = (np.random.default_rng([seed, stream]) for stream in (0, 1))
    order = rng_images.permutation(len(pool))
    # one draw per pool image, so an image keeps its caption whatever the fraction
    choice = rng_captions.integers(0, np.minimum(pool["n_captions"].to_numpy(), CAPTIONS_PER_IMAGE))
    picked = pool.iloc[np.sort(order[:n])].assign(caption_index=choice[np.sort(order[:n])])
    out = picked[["image_id", "path", "caption_index"]].merge(captions[["image_id", "caption_index", "caption"]],
                                                              on=["image_id", "caption_index"], how="left", validate="1:1")
    if out["caption"].isna().any():
        raise ValueError("the captions table lacks a caption the images table announces")
    return out.reset_index(drop=True)
