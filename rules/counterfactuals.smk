# Abduction and action, sharded: each shard is one (GPU, on a cluster) job; a merge
# checks that the shards cover the few-shot split exactly once.


rule counterfactual_shard:
    input:
        unpack(guide_inputs),
        data=DATA_FILES,
        split=SPLIT,
        clip=CLIP,
        diffusion=DIFFUSION,
    output:
        images=f"{CF_DIR}/shard{{shard}}-of-{{shards}}.safetensors",
        table=f"{CF_DIR}/shard{{shard}}-of-{{shards}}.parquet",
    params:
        code=code_version("counterfactual-shard"),
        cf=lambda wc: as_json(variant_params(wc.variant)),
        dataset_dir=dataset_dir,
        classifier=lambda wc, input: f"--classifier-dir {input.classifier}" if "classifier" in input.keys() else "",
    wildcard_constraints:
        variant=GENERATED_VARIANTS,
    threads: 1
    resources:
        mem_mb=grow_with_attempt(by_suite(4000, 32000)),  # a retry after an out-of-memory kill asks for more
        runtime=by_suite(60, 240),
        gpu=1,  # asked of a scheduler (sbatch --gpus=1); a local run only counts it
    log:
        log_path("counterfactual_shard", "{dataset}", "{variant}", "seed{seed}", "shard{shard}-of-{shards}"),
    benchmark:
        bench_path("counterfactual_shard", "{dataset}", "{variant}", "seed{seed}", "shard{shard}-of-{shards}")
    conda:
        ENV
    shell:
        "dicap counterfactual-shard --dataset-dir {params.dataset_dir} --clip-dir {input.clip}"
        " --diffusion-dir {input.diffusion} {params.classifier} --split {input.split}"
        " --seed {wildcards.seed} --shard {wildcards.shard} --shards {wildcards.shards}"
        " --params {params.cf:q} --threads {threads}"
        " --out-images {output.images} --out-table {output.table} > {log} 2>&1"


rule merge_counterfactuals:
    input:
        split=SPLIT,
        images=expand(f"{CF_DIR}/shard{{shard}}-of-{SHARDS}.safetensors", shard=range(SHARDS), allow_missing=True),
        tables=expand(f"{CF_DIR}/shard{{shard}}-of-{SHARDS}.parquet", shard=range(SHARDS), allow_missing=True),
    output:
        images=CF_IMAGES,
        table=CF_TABLE,
    wildcard_constraints:
        variant=GENERATED_VARIANTS,
    params:
        code=code_version("merge-counterfactuals"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        log_path("merge_counterfactuals", "{dataset}", "{variant}", "seed{seed}"),
    benchmark:
        bench_path("merge_counterfactuals", "{dataset}", "{variant}", "seed{seed}")
    conda:
        ENV
    shell:
        "dicap merge-counterfactuals --split {input.split} --images {input.images} --tables {input.tables}"
        " --out-images {output.images} --out-table {output.table} > {log} 2>&1"
