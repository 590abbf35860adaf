# Frozen-encoder feature caches: the few-shot images and their counterfactuals, and the
# evaluation splits, encoded once; prompt training and evaluation read these.


rule encode_train_features:
    input:
        unpack(cf_source),
        data=DATA_FILES,
        split=split_of,
        clip=CLIP,
    output:
        TRAIN_FEATURES,
    params:
        code=code_version("encode_train_features"),
        dataset_dir=dataset_dir,
        counterfactuals=lambda wc, input: (f"--counterfactual-images {input.images} --counterfactual-table {input.table}"
                                           if "images" in input.keys() else ""),
    threads: 1
    resources:
        mem_mb=grow_with_attempt(by_suite(2000, 16000)),
        runtime=by_suite(30, 180),
        gpu=by_suite(0, 1),
    log:
        log_path("encode_train_features", "dataset", "variant", "seed"),
    benchmark:
        bench_path("encode_train_features", "dataset", "variant", "seed")
    conda:
        ENV
    shell:
        "dicap encode_train_features --dataset-dir {params.dataset_dir} --clip-dir {input.clip}"
        " --split {input.split} {params.counterfactuals} --variant {wildcards.variant} --threads {threads} --out {output} > {log} 2>&1"


rule encode_eval_features:
    input:
        data=DATA_FILES,
        clip=CLIP,
    output:
        EVAL_FEATURES,
    params:
        code=code_version("encode_eval_features"),
        dataset_dir=dataset_dir,
    threads: 1
    resources:
        mem_mb=grow_with_attempt(by_suite(2000, 16000)),
        runtime=by_suite(30, 180),
        gpu=by_suite(0, 1),
    log:
        log_path("encode_eval_features", "dataset"),
    benchmark:
        bench_path("encode_eval_features", "dataset")
    conda:
        ENV
    shell:
        "dicap encode_eval_features --dataset-dir {params.dataset_dir} --clip-dir {input.clip}"
        " --threads {threads} --out {output} > {log} 2>&1"
