# Base-to-novel evaluation of every method of one dataset and seed.


rule evaluate:
    input:
        data=DATA_FILES,
        clip=CLIP,
        features=EVAL_FEATURES,
        prompts=lambda wc: expand(PROMPT, method=variant_methods(wc.variant), allow_missing=True),
    output:
        METRICS,
    params:
        code=code_version("evaluate"),
        prompt=lambda wc: as_json({m: PLAN.learner_params(m, wc.variant) for m in variant_methods(wc.variant)}),  # no trainer keys
        methods=lambda wc: variant_methods(wc.variant),
        dataset_dir=dataset_dir,
    threads: 1
    resources:
        mem_mb=by_suite(2000, 16000),
        runtime=by_suite(30, 240),
        gpu=by_suite(0, 1),  # the per-image learners (CoCoOp, CPL, MaPLe) encode prompts or images per test image
    log:
        log_path("evaluate", "dataset", "variant", "seed"),
    benchmark:
        bench_path("evaluate", "dataset", "variant", "seed")
    conda:
        ENV
    shell:
        "dicap evaluate --dataset-dir {params.dataset_dir} --clip-dir {input.clip}"
        " --features {input.features} --prompts {input.prompts} --methods {params.methods}"
        " --seed {wildcards.seed} --params {params.prompt:q} --threads {threads} --out {output} > {log} 2>&1"
