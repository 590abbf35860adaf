# Tables and figures under results/.


rule table1:
    input:
        expand(METRICS, dataset=DATASETS, variant="main", seed=SEEDS),
    output:
        csv=report("results/table1.csv", caption="captions/table1.rst", category="Table 1"),
        md="results/table1.md",
        provenance="results/table1.provenance.json",
        metrics="results/table1.metrics.json",
    params:
        code=code_version("table"),
        suite=config["suite"],
        datasets=DATASETS,
        config=as_json(config),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        log_path("table1"),
    benchmark:
        bench_path("table1")
    conda:
        ENV
    shell:
        "dicap table --suite {params.suite} --datasets {params.datasets} --metrics {input}"
        " --config-json {params.config:q} --out-csv {output.csv} --out-md {output.md}"
        " --out-metrics {output.metrics} > {log} 2>&1"


rule figure_table1:
    input:
        "results/table1.csv",
    output:
        report("results/figures/table1_bars.png", caption="captions/table1_bars.rst", category="Table 1"),
    params:
        code=code_version("figure-bars"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        log_path("figure_table1"),
    conda:
        ENV
    shell:
        "dicap figure-bars --table {input} --out {output} > {log} 2>&1"


rule figure_counterfactuals:
    input:
        unpack(figure_runs),
        data=DATA_FILES,
        split=SPLIT.format(dataset="{dataset}", seed=SEEDS[0]),
    output:
        report(
            "results/figures/counterfactuals_{dataset}.png",
            caption="captions/counterfactual_grid.rst",
            category="Counterfactual audit",
            subcategory="{dataset}",
        ),
    params:
        code=code_version("figure-counterfactuals"),
        dataset_dir=dataset_dir,
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        log_path("figure_counterfactuals", "{dataset}"),
    conda:
        ENV
    shell:
        "dicap figure-counterfactuals --dataset-dir {params.dataset_dir} --split {input.split}"
        " --images {input.images} --audits {input.audits} --out {output} > {log} 2>&1"


rule backbone_report:
    input:
        clip=expand(CLIP, dataset=DATASETS),
        diffusion=expand(DIFFUSION, dataset=DATASETS),
        cf=expand(CF_TABLE, dataset=DATASETS, variant="main", seed=SEEDS),
    output:
        report("results/backbones.csv", caption="captions/backbones.rst", category="Backbones"),
    params:
        code=code_version("backbone-report"),
        datasets=DATASETS,
        clip_reports=[f"{p}/report.json" for p in expand(CLIP, dataset=DATASETS)],
        diffusion_reports=[f"{p}/report.json" for p in expand(DIFFUSION, dataset=DATASETS)],
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        log_path("backbone_report"),
    conda:
        ENV
    shell:
        "dicap backbone-report --datasets {params.datasets} --clip-reports {params.clip_reports}"
        " --diffusion-reports {params.diffusion_reports} --cf-tables {input.cf} --out {output} > {log} 2>&1"


rule cost_report:
    input:
        # everything else `all` builds, so that their benchmark files are written first
        "results/table1.csv",
        "results/backbones.csv",
        AUDIT_RESULTS,
    output:
        report("results/cost.csv", caption="captions/cost.rst", category="Cost"),
    params:
        code=code_version("cost-report"),
        suite=config["suite"],
        benchmarks=os.path.join("logs", "benchmarks"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        log_path("cost_report"),
    conda:
        ENV
    shell:
        "dicap cost-report --suite {params.suite} --benchmarks {params.benchmarks} --out {output} > {log} 2>&1"


rule reproduction:
    input:
        unpack(reproduction_inputs),
    output:
        csv=report("results/reproduction.csv", caption="captions/reproduction.rst", category="Reproduction"),
        md="results/reproduction.md",
    params:
        code=code_version("reproduction"),
        audit=lambda wildcards, input: f"--audit {input.audit}" if "audit" in input.keys() else "",
        reference=lambda wildcards, input: f"--reference {input.reference}" if "reference" in input.keys() else "",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        log_path("reproduction"),
    conda:
        ENV
    shell:
        "dicap reproduction --table1 {input.table1} --backbones {input.backbones} {params.audit} {params.reference}"
        " --out-csv {output.csv} --out-md {output.md} > {log} 2>&1"
