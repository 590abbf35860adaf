# The counterfactual audit (embedded suite): an independent oracle judges every generated
# counterfactual against the true one the structural causal model renders.


rule oracle:
    input:
        data=DATA_FILES,
    output:
        directory(ORACLE),
    params:
        code=code_version("oracle"),
        train=as_json(config["oracle"]["train"]),
        dataset_dir=dataset_dir,
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    log:
        log_path("oracle", "{dataset}"),
    benchmark:
        bench_path("oracle", "{dataset}")
    conda:
        ENV
    shell:
        "dicap oracle --dataset-dir {params.dataset_dir} --params {params.train:q}"
        " --threads {threads} --out {output} > {log} 2>&1"


rule audit_counterfactuals:
    input:
        data=DATA_FILES,
        split=SPLIT,
        oracle=ORACLE,
        images=CF_IMAGES,
        table=CF_TABLE,
    output:
        AUDIT,
    params:
        code=code_version("audit-counterfactuals"),
        dataset_dir=dataset_dir,
    wildcard_constraints:
        variant=GENERATED_VARIANTS,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    log:
        log_path("audit_counterfactuals", "{dataset}", "{variant}", "seed{seed}"),
    benchmark:
        bench_path("audit_counterfactuals", "{dataset}", "{variant}", "seed{seed}")
    conda:
        ENV
    shell:
        "dicap audit-counterfactuals --dataset-dir {params.dataset_dir} --split {input.split}"
        " --oracle-dir {input.oracle} --images {input.images} --table {input.table}"
        " --threads {threads} --out {output} > {log} 2>&1"


rule counterfactual_audit:
    input:
        audits=expand(AUDIT, dataset=DATASETS, variant="main", seed=SEEDS),
        oracles=expand(ORACLE, dataset=DATASETS),
    output:
        report("results/counterfactual_audit.csv", caption="captions/counterfactual_audit.rst", category="Counterfactual audit"),
    params:
        code=code_version("audit-summary"),
        datasets=DATASETS,
        reports=ORACLE_REPORTS,
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        log_path("counterfactual_audit"),
    benchmark:
        bench_path("counterfactual_audit")
    conda:
        ENV
    shell:
        "dicap audit-summary --datasets {params.datasets} --audits {input.audits}"
        " --oracle-reports {params.reports} --out {output} > {log} 2>&1"
