# Transfer: prompts scored unchanged where they did not learn (src/dicap/jobs/transfer.py).
#   results/domain_generalization - the same classes in another domain: the paper suite's
#       ImageNet-V2, -Sketch, -A, -R; the embedded suite's renders under unseen factor values
#   results/cross_dataset         - other classes: the paper suite's ten other datasets
# A target's test images are encoded once by the source dataset's CLIP; one job per (source,
# variant, target, seed) then scores every method the variant trains.


rule encode_target_features:
    input:
        data=target_store,
        clip=CLIP,
    output:
        B(layout.TARGET_FEATURES),
    params:
        code=code_version("encode_target_features"),
        dataset_dir=dataset_dir,
    threads: 1
    resources:
        mem_mb=grow_with_attempt(by_suite(2000, 16000)),
        runtime=by_suite(30, 180),
        gpu=by_suite(0, 1),
    log:
        log_path("encode_target_features", "dataset", "target"),
    benchmark:
        bench_path("encode_target_features", "dataset", "target")
    conda:
        ENV
    shell:
        "dicap encode_target_features --dataset-dir {params.dataset_dir} --clip-dir {input.clip}"
        " --threads {threads} --out {output} > {log} 2>&1"


rule evaluate_transfer:
    input:
        data=target_store,
        clip=CLIP,
        features=B(layout.TARGET_FEATURES),
        prompts=lambda wc: expand(PROMPT, method=variant_methods(wc.variant), allow_missing=True),
    output:
        B(layout.TRANSFER_METRICS),
    params:
        code=code_version("evaluate_transfer"),
        prompt=lambda wc: as_json({m: PLAN.learner_params(m, wc.variant) for m in variant_methods(wc.variant)}),
        methods=lambda wc: variant_methods(wc.variant),
        dataset_dir=dataset_dir,
    threads: 1
    resources:
        mem_mb=by_suite(2000, 16000),
        runtime=by_suite(30, 240),
        gpu=by_suite(0, 1),
    log:
        log_path("evaluate_transfer", "dataset", "variant", "target", "seed"),
    benchmark:
        bench_path("evaluate_transfer", "dataset", "variant", "target", "seed")
    conda:
        ENV
    shell:
        "dicap evaluate_transfer --dataset-dir {params.dataset_dir} --clip-dir {input.clip}"
        " --features {input.features} --prompts {input.prompts} --methods {params.methods}"
        " --seed {wildcards.seed} --target {wildcards.target} --params {params.prompt:q}"
        " --threads {threads} --out {output} > {log} 2>&1"


rule domain_generalization:
    input:
        lambda wc: transfer_metrics("domain_generalization"),
    output:
        csv="results/domain_generalization.csv",
        md="results/domain_generalization.md",
        paired="results/domain_generalization_paired.csv",  # written beside the csv (report/transfer.py: paired_path)
        provenance="results/domain_generalization.provenance.json",
    params:
        code=code_version("domain_generalization"),
        config=as_json(config),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        log_path("domain_generalization"),
    benchmark:
        bench_path("domain_generalization")
    conda:
        ENV
    shell:
        "dicap domain_generalization --metrics {input} --config-json {params.config:q} --out-csv {output.csv} --out-md {output.md} > {log} 2>&1"


rule cross_dataset:
    input:
        lambda wc: transfer_metrics("cross_dataset"),
    output:
        csv="results/cross_dataset.csv",
        md="results/cross_dataset.md",
        paired="results/cross_dataset_paired.csv",  # written beside the csv (report/transfer.py: paired_path)
        provenance="results/cross_dataset.provenance.json",
    params:
        code=code_version("cross_dataset"),
        config=as_json(config),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        log_path("cross_dataset"),
    benchmark:
        bench_path("cross_dataset")
    conda:
        ENV
    shell:
        "dicap cross_dataset --metrics {input} --config-json {params.config:q} --out-csv {output.csv} --out-md {output.md} > {log} 2>&1"
