"""The paper suite end to end on a CPU, offline: the real rules and code from download to
Table 1, with tiny stand-ins only where the real thing needs the internet or a GPU.

A local HTTP server plays the dataset host (a DTD archive with the real layout, and a CoOp
split file), a tiny random Stable-Diffusion-style folder plays the pretrained diffusion
model (with its CLIP text encoder and tokenizer) and a tiny open_clip checkpoint plays
ViT-B/16.  Everything else - config.paper.yaml, the download, verification and extraction,
CoOp's split, the file-backed store, latent DDIM inversion and guided regeneration,
feature caching, prompt training and evaluation - is what a cluster run executes.
"""

from __future__ import annotations

import json
import os

import pandas as pd
import yaml

from dicap.prompting.methods import LEARNERS
from dicap.testing.tiny_models import save_clip_text_encoder, save_latent_checkpoint, save_tiny_clip
from local_mirror import DTD_CLASSES as CLASSES, DTD_PER_SPLIT as PER_SPLIT, captioned_flickr, coop_folder, dtd_archive, local_entry, local_registry, \
    striped_jpeg, varied_vqa, zip_bytes
from snakemake_runner import ENV, REPO, job_counts, snakemake

def test_paper_suite_from_download_to_table(server, tmp_path):
    archive, split_file = dtd_archive()
    registry = local_registry(server, ["dtd"], {"dtd-r1.0.1.tar.gz": archive, "split_zhou_DescribableTextures.json": split_file})
    (tmp_path / "registry.yaml").write_text(yaml.safe_dump(registry))
    sd = save_clip_text_encoder(save_latent_checkpoint(tmp_path / "sd"))
    clip = save_tiny_clip(tmp_path / "clip")
    override = {
        "datasets": ["dtd"],
        "seeds": [1],
        "data": {"root": str(tmp_path / "data"), "image_size": 16, "shots": 2, "val_shots": 1},
        "clip": {"pretrained": {"model": f"local-dir:{clip}", "tag": None, "cache_dir": None}},
        "diffusion": {"pretrained": {"path": str(sd), "cache_dir": None, "dtype": "float32", "image_size": 16,
                                     "template": "a photo of a {}."}},
        "counterfactual": {"steps": 4, "shards": 2, "images_per_shard": None, "batch_size": 8},  # tiny stand-ins: not the real sizes
        "tasks": {"datasets": {"retrieval": [], "vqa": []}},  # Tables 2 and 3 have a test of their own (below)
        # every learner, and DiCap's term on CoOp and on MaPLe (which reads the image files itself)
        "methods": ["zeroshot", *LEARNERS, "dicap", "dicap_pos", "dicap_maple"],
        "prompt": {"epochs": 2, "learners": {
            "cocoop": {"epochs": 1, "batch_size": 1},
            "kgcoop": {"epochs": 2, "batch_size": 4, "kg_weight": 8.0, "template": "a photo of a {}."},
            "maple": {"n_ctx": 2, "ctx_init": "a photo", "depth": 9, "epochs": 1, "batch_size": 4, "lr": 0.0035},
            "cpl": {"epochs": 1, "batch_size": 1, "cpl_weight": 1.0, "mask_weight": 0.07, "template": "a photo of a {}."},
        }},
    }
    (tmp_path / "override.yaml").write_text(yaml.safe_dump(override))
    env = {**ENV, "DICAP_REGISTRY": str(tmp_path / "registry.yaml"), "DICAP_MIRROR": server.base}
    work = tmp_path / "work"
    args = ["-s", str(REPO / "Snakefile"), "--configfile", str(REPO / "config.yaml"), str(REPO / "config.paper.yaml"),
            str(tmp_path / "override.yaml"), "--directory", str(work), "--cores", "2"]  # rule all
    out = snakemake(*args, env=env, timeout=900)
    assert out.returncode == 0, (out.stdout + out.stderr)[-5000:]

    ready = json.loads((tmp_path / "data" / "dtd" / "READY.json").read_text())
    assert ready["key"] == "dtd"
    store = pd.read_parquet(work / "build/paper/data/dtd/factors.parquet")
    assert store.groupby("split").size().to_dict() == {k: v * len(CLASSES) for k, v in PER_SPLIT.items()}
    (split_path,) = (work / "build/paper/splits/dtd").glob("seed1-*.parquet")  # keyed by the split's parameters
    shots = pd.read_parquet(split_path)
    assert sorted(shots["label"].unique()) == [0, 1] and len(shots) == 2 * 2  # base classes only, 2 shots each

    table_bytes = (work / "results" / "table1.csv").read_bytes()
    table = pd.read_csv(work / "results" / "table1.csv")
    assert (table["suite"] == "paper").all() and set(table["split"]) == {"test"}
    assert set(table["dataset"]) == {"dtd", "average"} and set(table["method"]) == set(override["methods"])
    assert table[["base", "novel", "hm"]].notna().all().all()

    backbones = pd.read_csv(work / "results" / "backbones.csv")
    assert backbones["dataset"].tolist() == ["dtd"] and backbones["counterfactuals"].iloc[0] == 4
    assert 0 <= backbones["clip_zero_shot_accuracy"].iloc[0] <= 1
    assert (work / "results" / "cost.csv").stat().st_size > 0
    assert not (work / "results" / "counterfactual_audit.csv").exists()  # no true counterfactuals for real data

    again = snakemake(*args, "-n", env=env)
    assert "Nothing to be done" in again.stdout + again.stderr

    # The embedded suite never overwrites the paper run's tables: it stops in one line (the other
    # direction: test_tiny_pipeline.py::test_the_paper_suite_never_takes_the_embedded_tables_for_its_own).
    embedded = snakemake("-n", "-s", str(REPO / "Snakefile"), "--configfile", str(REPO / "config.yaml"),
                         "--directory", str(work))
    assert embedded.returncode != 0 and "results/ holds the paper suite's tables" in embedded.stdout + embedded.stderr
    assert (work / "results" / "table1.csv").read_bytes() == table_bytes
    assert not os.environ.get("DICAP_REGISTRY")  # the test's registry never leaks into other tests


def test_paper_retrieval_and_vqa_from_download_to_tables(server, tmp_path):
    """Tables 2 and 3 on a Flickr30k and a VQAv2 in their real layouts: download (Flickr30k's
    licence-gated images placed by hand), CPL's splits, text-conditioned counterfactual
    shards, CoOp and DiCap contexts, R@K and VQA accuracy."""
    karpathy, flickr_tar = captioned_flickr(n_train=30, n_val=1, n_test=6)
    questions, annotations, val2014 = varied_vqa(n_images=12)
    files = {"caption_datasets.zip": zip_bytes({"dataset_flickr30k.json": karpathy}), "flickr30k-images.tar.gz": flickr_tar,
             "v2_Questions_Val_mscoco.zip": zip_bytes({"v2_OpenEnded_mscoco_val2014_questions.json": questions}),
             "v2_Annotations_Val_mscoco.zip": zip_bytes({"v2_mscoco_val2014_annotations.json": annotations}),
             "val2014.zip": val2014}
    registry = local_registry(server, ["flickr30k", "vqav2", "dtd"], files)  # dtd: the config's `datasets` must name an entry
    (tmp_path / "registry.yaml").write_text(yaml.safe_dump(registry))
    placed = tmp_path / "data" / "flickr30k" / "downloads"
    placed.mkdir(parents=True)
    (placed / "flickr30k-images.tar.gz").write_bytes(flickr_tar)  # the manual step docs/cluster.md gives
    sd = save_clip_text_encoder(save_latent_checkpoint(tmp_path / "sd"))
    clip = save_tiny_clip(tmp_path / "clip")
    methods = ["zeroshot", "coop", "dicap"]
    override = {
        "datasets": ["dtd"], "seeds": [1, 2],
        "data": {"root": str(tmp_path / "data"), "image_size": 16, "shots": 2, "val_shots": 1},
        "clip": {"pretrained": {"model": f"local-dir:{clip}", "tag": None, "cache_dir": None}},
        "diffusion": {"pretrained": {"path": str(sd), "cache_dir": None, "dtype": "float32", "image_size": 16,
                                     "template": "a photo of a {}."}},
        "counterfactual": {"steps": 4, "shards": 2, "images_per_shard": None, "batch_size": 8},  # tiny stand-ins: not the real sizes
        "prompt": {"epochs": 2, "batch_size": 4},
        "tasks": {"methods": methods, "percent": 20, "vqa_test_items": 9, "vqa_answers": 2,
                  "datasets": {"retrieval": ["flickr30k"], "vqa": ["vqav2"]}},  # MSCOCO runs Flickr30k's code
    }
    (tmp_path / "override.yaml").write_text(yaml.safe_dump(override))
    env = {**ENV, "DICAP_REGISTRY": str(tmp_path / "registry.yaml"), "DICAP_MIRROR": server.base}
    work = tmp_path / "work"
    args = ["-s", str(REPO / "Snakefile"), "--configfile", str(REPO / "config.yaml"), str(REPO / "config.paper.yaml"),
            str(tmp_path / "override.yaml"), "--directory", str(work), "--cores", "2"]
    out = snakemake(*args, "results/table2.csv", "results/table3.csv", env=env, timeout=900)
    assert out.returncode == 0, (out.stdout + out.stderr)[-5000:]

    counts = job_counts(out.stdout + out.stderr)
    assert counts.get("counterfactual_shard") == 2 * 2 * 2 and counts.get("train_task_prompt") == 2 * 2 * len(methods), counts
    shards = pd.concat([pd.read_parquet(p) for p in (work / "build/paper/counterfactuals/flickr30k/main/seed1").glob("shard*.parquet")])
    assert len(shards) == 6  # 20 % of the 30 Karpathy train images, each regenerated with its caption's edit
    edited = shards[shards["edited"]]
    assert (edited["cf_text"] != edited["text"]).all() and (shards.loc[~shards["edited"], "cf_text"] == shards.loc[~shards["edited"], "text"]).all()

    table2 = pd.read_csv(work / "results/table2.csv")
    assert set(table2["dataset"]) == {"flickr30k"} and table2["method"].tolist() == methods and (table2["seeds"].astype(str) == "1 2").all()
    assert table2[["i2t_r1", "t2i_r1", "i2t_r10"]].notna().all().all() and (table2["i2t_r10"] >= table2["i2t_r1"]).all()
    assert "novel_i2t_r1" not in table2  # real captions have no classes to split by
    table3 = pd.read_csv(work / "results/table3.csv")
    assert set(table3["dataset"]) == {"vqav2"} and table3["method"].tolist() == methods
    assert {"vqa_accuracy", "top1", "yes/no_accuracy", "number_accuracy", "other_accuracy"} <= set(table3)
    assert table3[["vqa_accuracy", "top1"]].apply(lambda c: c.between(0, 100)).all().all()
    history = json.loads((work / "build/paper/tasks/vqa/prompts/vqav2/dicap/seed1.json").read_text())
    assert {"ce", "cf"} <= set(history["history"][0])  # DiCap's hard negative was trained on

    again = snakemake(*args, "results/table2.csv", "results/table3.csv", "-n", env=env)
    assert "Nothing to be done" in again.stdout + again.stderr


def _doc_yaml_blocks(containing: str) -> list[dict]:
    """The ```yaml blocks of docs/adding-a-dataset.md that contain ``containing``, parsed."""
    text = (REPO / "docs" / "adding-a-dataset.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```yaml\n")[1:]]
    return [yaml.safe_load(b) for b in blocks if containing in b]


def test_your_own_dataset_from_a_local_folder_to_table(tmp_path):
    """docs/adding-a-dataset.md's worked example as written (its registry file and config
    override, with this test's paths): a folder already on disk, no download, to Table 1."""
    (registry,) = _doc_yaml_blocks("  my_birds:\n")
    (mine,) = _doc_yaml_blocks("datasets: [my_birds]")
    entry = registry["datasets"]["my_birds"]
    shared = tmp_path / "shared" / "my_birds"
    _, n = coop_folder(shared, CLASSES, PER_SPLIT, image=lambda label, i: striped_jpeg((60 * label, 100 + 30 * i % 150, 200 - 40 * label), 2 + label),
                       split_name=entry["split_file"])
    entry.update(link=str(shared), images=n)
    (tmp_path / "my_registry.yaml").write_text(yaml.safe_dump(registry))
    sd = save_clip_text_encoder(save_latent_checkpoint(tmp_path / "sd"))
    clip = save_tiny_clip(tmp_path / "clip")
    mine["data"]["root"] = str(tmp_path / "data")
    override = {
        **mine, "seeds": [1], "methods": ["zeroshot", "coop", "dicap"],
        "data": {**mine["data"], "image_size": 16, "shots": 2, "val_shots": 1},
        "clip": {"pretrained": {"model": f"local-dir:{clip}", "tag": None, "cache_dir": None}},
        "diffusion": {"pretrained": {"path": str(sd), "cache_dir": None, "dtype": "float32", "image_size": 16,
                                     "template": "a photo of a {}."}},
        "counterfactual": {"steps": 4, "shards": 2, "batch_size": 8},
        "tasks": {"datasets": {"retrieval": [], "vqa": []}},
        "prompt": {"epochs": 2},
    }
    (tmp_path / "my.yaml").write_text(yaml.safe_dump(override))
    env = {**ENV, "DICAP_REGISTRY": str(tmp_path / "my_registry.yaml")}
    work = tmp_path / "work"
    args = ["-s", str(REPO / "Snakefile"), "--configfile", str(REPO / "config.yaml"), str(REPO / "config.paper.yaml"),
            str(tmp_path / "my.yaml"), "--directory", str(work), "--cores", "2", "results/table1.csv"]
    out = snakemake(*args, env=env, timeout=900)
    assert out.returncode == 0, (out.stdout + out.stderr)[-5000:]

    assert (tmp_path / "data" / "my_birds").is_symlink() and not (shared / "downloads").exists()
    ready = json.loads((shared / "READY.json").read_text())
    assert ready["local"] is True and ready["images"] == n
    info = json.loads((work / "build/paper/data/my_birds/classes.json").read_text())
    assert info["image_root"] == "my_birds/images" and info["classes"] == CLASSES
    table = pd.read_csv(work / "results" / "table1.csv")
    assert set(table["dataset"]) == {"my_birds", "average"} and set(table["method"]) == set(override["methods"])
    assert table[["base", "novel", "hm"]].notna().all().all()

    # a name the registry does not define stops the plan with one line listing the ones it does
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump({"datasets": ["my_bird"]}))
    typo = snakemake(*args[:6], str(tmp_path / "typo.yaml"), "--directory", str(work), "-n", env=env)
    assert typo.returncode != 0 and "key 'datasets.0' = 'my_bird': must be one of my_birds" in typo.stdout + typo.stderr


def test_paper_transfer_tables_from_download(server, tmp_path):
    """results/domain_generalization.csv and results/cross_dataset.csv as a cluster makes them:
    prompts learned on every class of the source (DTD, downloaded; the all_classes variant),
    scored unchanged on ImageNet-A in its real layout (200 classes, downloaded) and on a
    dataset of the user's own folder (other classes), each among all its classes."""
    archive, split_file = dtd_archive()
    registry = local_registry(server, ["dtd", "imagenet_a"], {"dtd-r1.0.1.tar.gz": archive,
                                                             "split_zhou_DescribableTextures.json": split_file})
    birds = ["wren", "finch", "robin"]
    split_sha, n = coop_folder(tmp_path / "data" / "my_birds", birds, PER_SPLIT)
    registry["datasets"]["my_birds"] = local_entry(n, split_sha)
    (tmp_path / "registry.yaml").write_text(yaml.safe_dump(registry))
    sd = save_clip_text_encoder(save_latent_checkpoint(tmp_path / "sd"))
    clip = save_tiny_clip(tmp_path / "clip")
    methods = ["zeroshot", "coop", "cocoop", "maple", "dicap", "dicap_maple"]  # cached features, per-image prompts, pixels
    override = {
        "datasets": ["dtd"], "seeds": [1, 2], "methods": methods,
        "data": {"root": str(tmp_path / "data"), "image_size": 16, "shots": 2, "val_shots": 1},
        "clip": {"pretrained": {"model": f"local-dir:{clip}", "tag": None, "cache_dir": None}},
        "diffusion": {"pretrained": {"path": str(sd), "cache_dir": None, "dtype": "float32", "image_size": 16,
                                     "template": "a photo of a {}."}},
        "counterfactual": {"steps": 4, "shards": 2, "images_per_shard": None, "batch_size": 8},  # tiny stand-ins
        "tasks": {"datasets": {"retrieval": [], "vqa": []}},
        "prompt": {"epochs": 2, "learners": {"cocoop": {"epochs": 1, "batch_size": 1},
                                             "maple": {"n_ctx": 2, "ctx_init": "a photo", "depth": 9, "epochs": 1,
                                                       "batch_size": 4, "lr": 0.0035}}},
        "transfer": {"source": "dtd", "domain_generalization": ["imagenet_a"], "cross_dataset": ["my_birds"]},
    }
    (tmp_path / "override.yaml").write_text(yaml.safe_dump(override))
    env = {**ENV, "DICAP_REGISTRY": str(tmp_path / "registry.yaml"), "DICAP_MIRROR": server.base}
    work = tmp_path / "work"
    args = ["-s", str(REPO / "Snakefile"), "--configfile", str(REPO / "config.yaml"), str(REPO / "config.paper.yaml"),
            str(tmp_path / "override.yaml"), "--directory", str(work), "--cores", "2"]
    out = snakemake(*args, "results/domain_generalization.csv", "results/cross_dataset.csv", env=env, timeout=900)
    assert out.returncode == 0, (out.stdout + out.stderr)[-5000:]

    counts = job_counts(out.stdout + out.stderr)
    assert counts["encode_target_features"] == 3 and counts["evaluate_transfer"] == 3 * 2  # dtd, imagenet_a, my_birds
    assert counts["train_prompt"] == len(methods) * 2 and "evaluate" not in counts  # one all-class run serves both tables
    (split_path,) = (work / "build/paper/splits/dtd").glob("seed1-*.parquet")
    assert sorted(pd.read_parquet(split_path)["label"].unique()) == [0, 1, 2, 3]  # every class trains, not the base half
    cf = pd.read_parquet(work / "build/paper/counterfactuals/dtd/all_classes/seed1/counterfactuals.parquet")
    assert set(cf["y_cf"]) - {0, 1} and set(cf["y"]) == {0, 1, 2, 3}  # y_cf among every class too

    dg = pd.read_csv(work / "results/domain_generalization.csv")
    assert set(dg["domain"]) == {"dtd", "imagenet_a", "average"} and set(dg["method"]) == set(methods)
    assert (dg["variant"] == "all_classes").all() and (dg["seeds"].astype(str) == "1 2").all()
    average = dg[dg["domain"] == "average"].set_index("method")["accuracy"]
    on_a = dg[dg["domain"] == "imagenet_a"].set_index("method")["accuracy"]
    assert (average == on_a).all()  # the source's own column is not averaged
    metrics = pd.read_csv(work / "build/paper/transfer/dtd/all_classes/imagenet_a/seed1.csv")
    assert set(metrics["split"]) == {"test"} and ((metrics["accuracy"] >= 0) & (metrics["accuracy"] <= 100)).all()
    cross = pd.read_csv(work / "results/cross_dataset.csv")
    assert set(cross["domain"]) == {"dtd", "my_birds", "average"} and cross["accuracy"].notna().all()
    markdown = (work / "results/cross_dataset.md").read_text()
    assert "## Learned on dtd" in markdown and "DiCap against its own learner" in markdown
    again = snakemake(*args, "-n", "results/domain_generalization.csv", "results/cross_dataset.csv", env=env)
    assert "Nothing to be done" in again.stdout + again.stderr
