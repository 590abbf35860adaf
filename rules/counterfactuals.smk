# Abduction and action, sharded: each shard is one (GPU, on a cluster) job; a merge
# checks that the shards cover the few-shot split exactly once.


rule counterfactual_shard:
    input:
        unpack(guide_inputs),
        unpack(diffusion_check_of),
        data=DATA_FILES,
        split=split_of,
        clip=CLIP,
        class_text_features=CLASS_TEXT_FEATURES,
        diffusion=DIFFUSION,
    output:
        images=CF_SHARD_IMAGES,
        table=CF_SHARD_TABLE,
    params:
        code=code_version("counterfactual_shard"),
        cf=lambda wc: as_json({k: v for k, v in layout.variant_settings(wc.variant, COUNTERFACTUAL).items() if k not in ("shards", "images_per_shard")}),  # the shard count: a wildcard
        dataset_dir=dataset_dir,
        classifier=lambda wc, input: f"--classifier-dir {input.classifier}" if "classifier" in input.keys() else "",
        check=lambda wc, input: f"--diffusion-check {input.check}" if "check" in input.keys() else "",
    wildcard_constraints:
        variant=layout.GENERATED_VARIANTS,
    threads: 1
    resources:
        mem_mb=grow_with_attempt(by_suite(4000, 32000)),  # a retry after an out-of-memory kill asks for more
        runtime=shard_runtime,  # the shard's budget (src/dicap/budget.py), doubling with each retry
        gpu=1,  # asked of a scheduler (sbatch --gpus=1); a local run only counts it
        compile_unet=lambda wc: PLAN.shard_compiles(wc.dataset, wc.variant),  # not a parameter: no rerun trigger (rules/prompts.smk)
    log:
        log_path("counterfactual_shard", "dataset", "variant", "seed", "shard"),
    benchmark:
        bench_path("counterfactual_shard", "dataset", "variant", "seed", "shard")
    conda:
        ENV
    shell:
        "dicap counterfactual_shard --dataset-dir {params.dataset_dir} --clip-dir {input.clip}"
        " --class-text-features {input.class_text_features}"
        " --diffusion-dir {input.diffusion} {params.check} {params.classifier} --split {input.split}"
        " --seed {wildcards.seed} --shard {wildcards.shard} --shards {wildcards.shards}"
        " --params {params.cf:q} --threads {threads} --compile-unet {resources.compile_unet}"
        " --out-images {output.images} --out-table {output.table} > {log} 2>&1"


rule merge_counterfactuals:
    input:
        unpack(shard_files),
        split=split_of,
    output:
        images=CF_IMAGES,
        table=CF_TABLE,
    wildcard_constraints:
        variant=layout.GENERATED_VARIANTS,
    params:
        code=code_version("merge_counterfactuals"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        log_path("merge_counterfactuals", "dataset", "variant", "seed"),
    benchmark:
        bench_path("merge_counterfactuals", "dataset", "variant", "seed")
    conda:
        ENV
    shell:
        "dicap merge_counterfactuals --split {input.split} --images {input.images} --tables {input.tables}"
        " --out-images {output.images} --out-table {output.table} > {log} 2>&1"
