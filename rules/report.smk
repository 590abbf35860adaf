# Tables and figures under results/.


rule table1:
    input:
        expand(METRICS, dataset=DATASETS, variant=layout.MAIN, seed=SEEDS),
    output:
        csv=report("results/table1.csv", caption="captions/table1.rst", category="Table 1"),
        md="results/table1.md",
        provenance="results/table1.provenance.json",
        metrics=directory("results/table1_metrics"),
        paired="results/table1_paired.csv",
    params:
        code=code_version("table1"),
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
        "dicap table1 --suite {params.suite} --datasets {params.datasets} --metrics {input}"
        " --config-json {params.config:q} --out-csv {output.csv} --out-md {output.md}"
        " --out-metrics {output.metrics} --out-paired {output.paired} > {log} 2>&1"


rule figure_table1:
    input:
        "results/table1_paired.csv",
    output:
        report("results/figures/table1_bars.png", caption="captions/table1_bars.rst", category="Table 1"),
    params:
        code=code_version("figure_table1"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        log_path("figure_table1"),
    conda:
        ENV
    shell:
        "dicap figure_table1 --paired {input} --out {output} > {log} 2>&1"


rule figure_counterfactuals:
    input:
        unpack(figure_runs),
        data=DATA_FILES,
        split=layout.fill(SPLIT, seed=SEEDS[0]),
    output:
        report(
            "results/figures/counterfactuals_{dataset}.png",
            caption="captions/counterfactual_grid.rst",
            category="Counterfactual audit",
            subcategory="{dataset}",
        ),
    params:
        code=code_version("figure_counterfactuals"),
        dataset_dir=dataset_dir,
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        log_path("figure_counterfactuals", "dataset"),
    conda:
        ENV
    shell:
        "dicap figure_counterfactuals --dataset-dir {params.dataset_dir} --split {input.split}"
        " --images {input.images} --audits {input.audits} --out {output} > {log} 2>&1"


rule figure_generator_curve:
    input:
        PLAN.generator_curves(),
    output:
        report("results/figures/generator_curve.png", caption="captions/generator_curve.rst", category="Counterfactual audit"),
    params:
        code=code_version("figure_generator_curve"),
        datasets=DATASETS,
        guidance_scale=COUNTERFACTUAL["guidance_scale"],
        inversion_depth=COUNTERFACTUAL["inversion_depth"],
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        log_path("figure_generator_curve"),
    conda:
        ENV
    shell:
        "dicap figure_generator_curve --datasets {params.datasets} --curves {input}"
        " --guidance-scale {params.guidance_scale} --inversion-depth {params.inversion_depth} --out {output} > {log} 2>&1"


rule backbone_report:
    input:
        unpack(lambda wc: {"checks": PLAN.diffusion_checks()} if PLAN.diffusion_checks() else {}),  # embedded suite
        clip_reports=expand(CLIP_REPORT, dataset=DATASETS),
        diffusion_reports=expand(DIFFUSION_REPORT, dataset=DATASETS),
        cf=expand(CF_TABLE, dataset=DATASETS, variant=layout.MAIN, seed=SEEDS),
    output:
        report("results/backbones.csv", caption="captions/backbones.rst", category="Backbones"),
    params:
        code=code_version("backbone_report"),
        datasets=DATASETS,
        checks=lambda wc, input: f"--diffusion-checks {input.checks}" if "checks" in input.keys() else "",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        log_path("backbone_report"),
    conda:
        ENV
    shell:
        "dicap backbone_report --datasets {params.datasets} --clip-reports {input.clip_reports}"
        " --diffusion-reports {input.diffusion_reports} --cf-tables {input.cf} {params.checks} --out {output} > {log} 2>&1"


rule shortcut:
    input:
        shortcut_metrics(),
    output:
        csv=report("results/shortcut.csv", caption="captions/shortcut.rst", category="Shortcut"),
        md="results/shortcut.md",
        png=report("results/figures/shortcut.png", caption="captions/shortcut.rst", category="Shortcut"),
    params:
        code=code_version("shortcut"),
        datasets=DATASETS,
        factor=config["data"]["spurious_factor"],
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        log_path("shortcut"),
    benchmark:
        bench_path("shortcut")
    conda:
        ENV
    shell:
        "dicap shortcut --datasets {params.datasets} --metrics {input} --factor {params.factor}"
        " --out-csv {output.csv} --out-md {output.md} --out-png {output.png} > {log} 2>&1"


rule calibration:
    input:
        metrics=shortcut_metrics(),
        backbones="results/backbones.csv",
    output:
        csv=report("results/calibration.csv", caption="captions/calibration.rst", category="Calibration"),
        md="results/calibration.md",
    params:
        code=code_version("calibration"),
        datasets=DATASETS,
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        log_path("calibration"),
    benchmark:
        bench_path("calibration")
    conda:
        ENV
    shell:
        "dicap calibration --datasets {params.datasets} --metrics {input.metrics} --backbones {input.backbones}"
        " --out-csv {output.csv} --out-md {output.md} > {log} 2>&1"


rule cost_report:
    input:
        # everything else `all` builds, so that their benchmark files are written first
        "results/table1.csv",
        "results/backbones.csv",
        AUDIT_RESULTS,
        SHORTCUT_RESULTS,
        CALIBRATION_RESULTS,
    output:
        report("results/cost.csv", caption="captions/cost.rst", category="Cost"),
    params:
        code=code_version("cost_report"),
        suite=config["suite"],
        benchmarks=layout.BENCHMARKS,
        warm="--warm" if WARM_RUN else "",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        log_path("cost_report"),
    conda:
        ENV
    shell:
        "dicap cost_report --suite {params.suite} --benchmarks {params.benchmarks} {params.warm} --out {output} > {log} 2>&1"


rule reproduction:
    input:
        unpack(reproduction_inputs),
    output:
        csv=report("results/reproduction.csv", caption="captions/reproduction.rst", category="Reproduction"),
        md="results/reproduction.md",
    params:
        code=code_version("reproduction"),
        audit=lambda wildcards, input: f"--audit {input.audit}" if "audit" in input.keys() else "",
        shortcut=lambda wildcards, input: f"--shortcut {input.shortcut}" if "shortcut" in input.keys() else "",
        tasks=lambda wildcards, input: " ".join(f"--{t.replace('_', '-')} {input[t]}" for t in ("table2", "table3", *layout.TRANSFER_TABLES)
                                                if t in input.keys()),
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
        "dicap reproduction --table1 {input.table1} --backbones {input.backbones} {params.audit} {params.shortcut} {params.tasks}"
        " {params.reference}"
        " --out-csv {output.csv} --out-md {output.md} > {log} 2>&1"
