# Dataset download (the embedded suite renders its data) and few-shot split creation.


rule prepare_dataset:
    output:
        DATA_FILES,
    params:
        data=as_json(config["data"]),
        out=lambda wildcards, output: os.path.dirname(output[0]),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        log_path("prepare_dataset", "{dataset}"),
    benchmark:
        bench_path("prepare_dataset", "{dataset}")
    conda:
        ENV
    shell:
        "dicap prepare-dataset --dataset {wildcards.dataset} --params {params.data:q}"
        " --out {params.out} > {log} 2>&1"


rule make_split:
    input:
        data=DATA_FILES,
    output:
        SPLIT,
    params:
        split=as_json({k: config["data"][k] for k in ("shots", "spurious_strength")}),
        dataset_dir=dataset_dir,
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        log_path("make_split", "{dataset}", "seed{seed}"),
    benchmark:
        bench_path("make_split", "{dataset}", "seed{seed}")
    conda:
        ENV
    shell:
        "dicap make-split --dataset-dir {params.dataset_dir} --seed {wildcards.seed}"
        " --params {params.split:q} --out {output} > {log} 2>&1"
