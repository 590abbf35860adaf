# Dataset download (paper suite) or rendering (embedded suite), and few-shot split creation.


# A paper store records its image root relative to data.root; every job (local, or re-parsing
# this file on a cluster node) resolves it against this machine's data.root.
if PAPER:
    os.environ.update(DICAP_DATA_ROOT=os.path.abspath(config["data"]["root"]))  # set for the jobs, not read here


# Downloads run where Snakemake runs (a login node has the network compute nodes often lack),
# unless `--config downloads=cluster` sends them as jobs (to a transfer partition, say:
# docs/cluster.md#running-it-end-to-end).
if config["downloads"] == "controller":

    localrules:
        download_dataset,


rule download_dataset:
    output:
        SOURCE_READY,
    params:
        code=code_version("download_dataset"),
        root=lambda wildcards, output: os.path.dirname(os.path.dirname(output[0])),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=24 * 60,
    log:
        log_path("download_dataset", "dataset"),
    benchmark:
        bench_path("download_dataset", "dataset")
    conda:
        ENV
    shell:
        "dicap download_dataset --dataset {wildcards.dataset} --root {params.root} > {log} 2>&1"


rule prepare_dataset:
    input:
        unpack(dataset_source),
    output:
        DATA_FILES,
    params:
        code=code_version("prepare_dataset"),
        data=data_params,
        out=lambda wildcards, output: os.path.dirname(output[0]),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10 if not PAPER else 60,
    log:
        log_path("prepare_dataset", "dataset"),
    benchmark:
        bench_path("prepare_dataset", "dataset")
    conda:
        ENV
    shell:
        "dicap prepare_dataset --dataset {wildcards.dataset} --params {params.data:q}"
        " --out {params.out} > {log} 2>&1"


rule make_split:
    input:
        data=DATA_FILES,
    output:
        B(layout.SPLIT),
    params:
        code=code_version("make_split"),
        # the parameters the file's key names: the embedded suite biases the draw (spurious_strength),
        # except for the negative control's unbiased shots
        split=lambda wc: as_json(SPLIT_PARAMS_BY_KEY[wc.split_key]),
        dataset_dir=dataset_dir,
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        log_path("make_split", "dataset", "seed", "split_key"),
    benchmark:
        bench_path("make_split", "dataset", "seed", "split_key")
    conda:
        ENV
    shell:
        "dicap make_split --dataset-dir {params.dataset_dir} --seed {wildcards.seed}"
        " --params {params.split:q} --out {output} > {log} 2>&1"


# Embedded suite: the same classes rendered with one non-causal factor at values no other
# render shows, one test split per shift (results/domain_generalization; data/shifts.py).  A
# store of its own, so the dataset's store, and every table read from it, keeps its bytes.
rule prepare_shifts:
    output:
        [B(t) for t in (layout.SHIFTED_TABLE, layout.SHIFTED_CLASSES, layout.SHIFTED_IMAGES)],
    params:
        code=code_version("prepare_shifts"),
        data=lambda wc: as_json({k: config["data"][k] for k in ("image_size", "downstream_style")}),
        seed=config["data"]["render_seed"],
        shifts=config["transfer"]["shifts"],
        per_class=config["transfer"]["shift_per_class"],
        out=lambda wildcards, output: os.path.dirname(output[0]),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        log_path("prepare_shifts", "dataset"),
    benchmark:
        bench_path("prepare_shifts", "dataset")
    conda:
        ENV
    shell:
        "dicap prepare_shifts --dataset {wildcards.dataset} --params {params.data:q} --seed {params.seed}"
        " --shifts {params.shifts} --per-class {params.per_class} --out {params.out} > {log} 2>&1"
