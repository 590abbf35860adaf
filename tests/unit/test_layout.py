"""The build tree's one owner (src/dicap/layout.py): paths made and read back, variant names
made and read back, and the rules, jobs and benchmarks using it rather than spelling paths."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dicap import layout
from helpers import REPO

CONFIG_CF = {"guidance_scale": 3.0, "sampling": "similarity", "guide": "cfg", "steps": 20}


def test_build_fills_the_suite_and_leaves_other_wildcards():
    build = layout.Build("embedded")
    assert build(layout.CLIP_MODEL) == "build/embedded/models/{dataset}/clip/model"
    assert build(layout.METRICS, dataset="shapes", variant="guidance_scale10", seed=3) == "build/embedded/metrics/shapes/guidance_scale10/seed3.csv"
    assert layout.fill(layout.SPLIT, split_key="abc") == "splits/{dataset}/seed{seed}-abc.parquet"


@pytest.mark.parametrize("template", [layout.METRICS, layout.AUDIT, layout.TRAIN_FEATURES, layout.CF_IMAGES, layout.PROMPT])
def test_every_per_seed_path_reads_back_what_made_it(template, tmp_path):
    wildcards = {"dataset": "digits", "variant": "sample_random", "seed": 12, "method": "coop"}
    path = tmp_path / layout.Build("embedded")(template, **wildcards)
    assert layout.seed_key(template, path, ["shapes", "digits"]) == ("digits", "sample_random", 12)


def test_a_path_of_another_shape_or_dataset_is_refused(tmp_path):
    with pytest.raises(ValueError, match="does not follow"):
        layout.seed_key(layout.METRICS, tmp_path / "metrics" / "shapes" / "seed3.csv")
    with pytest.raises(ValueError, match="does not follow"):
        layout.seed_key(layout.METRICS, tmp_path / "audit" / "shapes" / "main" / "seed3.csv")
    with pytest.raises(ValueError, match="'shapes' is not one of"):
        layout.seed_key(layout.METRICS, tmp_path / "metrics" / "shapes" / "main" / "seed3.csv", ["digits"])


def test_reports_are_found_by_the_dataset_their_path_names(tmp_path):
    build = layout.Build("embedded")
    paths = [tmp_path / build(layout.ORACLE_REPORT, dataset=d) for d in ("digits", "shapes")]
    assert layout.by_dataset(layout.ORACLE_REPORT, paths, ["shapes"]) == {"digits": paths[0], "shapes": paths[1]}
    with pytest.raises(ValueError, match=r"for datasets \['dtd'\]"):
        layout.by_dataset(layout.ORACLE_REPORT, paths, ["dtd"])


@pytest.mark.parametrize("value", [0, 0.5, 1, 2.25, 10, 50, 123.5])
def test_a_guidance_scale_survives_the_trip_through_its_folder_name(value):
    name = layout.guidance_variant(value, CONFIG_CF)
    assert re.fullmatch(layout.GENERATED_VARIANTS, name) and re.fullmatch(layout.VARIANTS, name)
    assert layout.parse_variant(name).guidance_scale == float(value)
    assert layout.variant_settings(name, CONFIG_CF) == {**CONFIG_CF, "guidance_scale": float(value)}


@pytest.mark.parametrize("value", [1e-7, 3.1234567, 1e7])
def test_a_guidance_scale_without_a_faithful_name_is_refused(value):
    with pytest.raises(ValueError, match="reads back as the same number"):
        layout.guidance_variant(value, CONFIG_CF)


def test_config_values_are_the_main_variant():
    assert layout.guidance_variant(3, CONFIG_CF) == layout.MAIN == layout.sampling_variant("similarity", CONFIG_CF)
    assert layout.variant_settings(layout.MAIN, CONFIG_CF) == CONFIG_CF
    assert layout.sampling_variant("centroid", CONFIG_CF) == "sample_centroid"
    assert layout.variant_settings("sample_centroid", CONFIG_CF) == {**CONFIG_CF, "sampling": "centroid"}


@pytest.mark.parametrize("key", list(layout.LOSS_PREFIXES.values()))
@pytest.mark.parametrize("value", [0.25, 4.0, 0.125])
def test_each_loss_key_has_variants_that_read_back(key, value):
    """cf_weight, cf_temperature (the hard negative) and cf_positive_weight (the labelled counterfactual)."""
    prompt = {"cf_weight": 1.0, "cf_temperature": 0.07, "cf_positive_weight": 1.0}
    name = layout.loss_variant(key, value, prompt)
    assert re.fullmatch(layout.VARIANTS, name) and not re.fullmatch(layout.GENERATED_VARIANTS, name)
    assert layout.parse_variant(name).prompt_overrides == {key: value}
    assert layout.generated_variant(name) == layout.MAIN  # main's counterfactuals
    assert layout.loss_variant(key, prompt[key], prompt) == layout.MAIN
    assert len({layout.loss_variant(k, value, prompt) for k in layout.LOSS_PREFIXES.values()}) == len(layout.LOSS_PREFIXES)


def test_true_cf_trains_on_mains_files_and_generates_nothing():
    assert layout.parse_variant(layout.TRUE_CF).true_cf
    assert layout.generated_variant(layout.TRUE_CF) == layout.MAIN and layout.generated_variant("guidance_scale10") == "guidance_scale10"
    assert re.fullmatch(layout.VARIANTS, layout.TRUE_CF) and not re.fullmatch(layout.GENERATED_VARIANTS, layout.TRUE_CF)
    with pytest.raises(ValueError, match="generates no counterfactuals"):
        layout.variant_settings(layout.TRUE_CF, CONFIG_CF)
    for bad in ("oracle", "guidance_scale", "sample_", "guidance_scale1e-07", "s10"):
        with pytest.raises(ValueError, match="unknown variant"):
            layout.parse_variant(bad)


def test_benchmark_files_name_their_rule(tmp_path):
    template = layout.benchmark_path("train_prompt", "dataset", "variant", "method", "seed")
    assert template == "logs/benchmarks/train_prompt/{dataset}/{variant}/{method}/seed{seed}.tsv"
    path = tmp_path / layout.fill(template, dataset="shapes", variant="main", method="coop", seed=1)
    assert layout.benchmark_rule(path, tmp_path / layout.BENCHMARKS) == "train_prompt"
    assert layout.log_path("table1") == "logs/table1.log"
    assert layout.log_path("counterfactual_shard", "dataset", "shard") == "logs/counterfactual_shard/{dataset}/shard{shard}-of-{shards}.log"


def _spelled(path: Path, needles: tuple[str, ...]) -> list[str]:
    return [f"{needle!r} in {line.strip()}" for line in path.read_text().splitlines() for needle in needles
            if needle in line and not line.lstrip().startswith("#")]


def test_rules_and_benchmarks_spell_no_build_path_or_private_file():
    """Every build path and file name comes from layout.py; no rule names a file inside another's output."""
    for path in [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]:
        found = _spelled(path, ("build/", "report.json", "class_text_features.", "true_images", "seed{", ".safetensors", ".parquet"))
        assert not found, f"{path.relative_to(REPO)}: {found[0]}"
    for path in sorted((REPO / "benchmarks").glob("*.py")):  # their scratch files in temporary folders are their own
        found = _spelled(path, ("build/", "report.json", "true_images", "seed{"))
        assert not found, f"{path.relative_to(REPO)}: {found[0]}"


def test_control_variants_read_back():
    assert layout.parse_variant(layout.UNBIASED_SHOTS).counterfactuals == "none"
    assert layout.parse_variant(layout.TRUE_CF).counterfactuals == "true"
    assert layout.parse_variant(layout.MAIN).counterfactuals == "generated"
    for name in (layout.UNBIASED_SHOTS, layout.TRUE_CF):
        with pytest.raises(ValueError, match="generates no counterfactuals"):
            layout.variant_settings(name, {"guidance_scale": 3.0, "sampling": "similarity"})


@pytest.mark.parametrize("template", layout.FOLDER_OUTPUTS)
def test_a_file_inside_a_folder_output_is_found_in_it(template):
    folder = layout.Build("embedded")(template, dataset="shapes")
    for inside in ("weights.safetensors", "unet/config.json", "a/b/c.json"):
        assert layout.folder_output(f"{folder}/{inside}") == Path(folder)
    assert layout.folder_output(folder) is None  # the folder itself lies in none


def test_files_beside_the_folder_outputs_lie_in_none():
    b = layout.Build("embedded")
    for template in (layout.CLIP_REPORT, layout.CLASS_TEXT_FEATURES, layout.DIFFUSION_CHECK, layout.TRAIN_FEATURES,
                     layout.CF_SHARD_IMAGES, layout.DATA_IMAGES):
        assert layout.folder_output(b(template, dataset="shapes", variant="main", seed=1, shard=0, shards=2)) is None


def test_the_folder_outputs_are_the_rules_directory_outputs():
    names = dict(re.findall(r"(?m)^(\w+) = B\(layout\.(\w+)\)", (REPO / "rules" / "common.smk").read_text()))
    rules = "".join(p.read_text() for p in (REPO / "rules").glob("*.smk"))
    folders = {names[n] for n in re.findall(r"directory\((\w+)\)", rules)}
    assert folders == {name for name in dir(layout) if getattr(layout, name) in layout.FOLDER_OUTPUTS and name.isupper()} - {"FOLDER_OUTPUTS"}


def test_all_classes_reads_back_and_generates_its_own_counterfactuals():
    """Every class trains (the cross-dataset recipe): its own y_cf among every class, so its own files."""
    variant = layout.parse_variant(layout.ALL_CLASSES)
    assert variant == layout.Variant(all_classes=True) and variant.classes == "all"
    assert variant.counterfactuals == "generated" and not variant.prompt
    assert re.fullmatch(layout.GENERATED_VARIANTS, layout.ALL_CLASSES) and re.fullmatch(layout.VARIANTS, layout.ALL_CLASSES)
    assert layout.generated_variant(layout.ALL_CLASSES) == layout.ALL_CLASSES
    for cf in (CONFIG_CF, {**CONFIG_CF, "sampling": "random", "guidance_scale": 7.5}):
        assert layout.variant_settings(layout.ALL_CLASSES, cf) == {**cf, "classes": "all"}
    path = layout.Build("paper")(layout.PROMPT, dataset="imagenet", variant=layout.ALL_CLASSES, method="maple", seed=2)
    assert layout.seed_key(layout.PROMPT, path) == ("imagenet", layout.ALL_CLASSES, 2)


@pytest.mark.parametrize("name", [layout.MAIN, layout.TRUE_CF, layout.UNBIASED_SHOTS, "guidance_scale10", "sample_random",
                                  "ctx8", "cfw0.25"])
def test_every_other_variant_trains_on_the_base_classes_and_sets_no_classes(name):
    assert layout.parse_variant(name).classes == "base" and not layout.parse_variant(name).all_classes
    if layout.parse_variant(name).counterfactuals == "generated" and not layout.parse_variant(name).prompt:
        assert "classes" not in layout.variant_settings(name, CONFIG_CF)
