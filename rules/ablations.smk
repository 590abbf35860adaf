# Ablations, each run by its rule name (``snakemake ablation_scale``): a CSV and a figure
# under results/ablations/.  Variants that equal config.yaml's settings reuse the main run.


for _kind, _x in (("scale", "s"), ("sampling", "sampling"), ("oracle", "counterfactuals")):

    rule:
        name:
            f"ablation_{_kind}"
        input:
            **ablation_inputs(_kind),
        output:
            csv=report(f"results/ablations/{_kind}.csv", caption="captions/ablation.rst", category="Ablations"),
            png=report(f"results/ablations/{_kind}.png", caption="captions/ablation.rst", category="Ablations"),
        params:
            code=code_version("ablation"),
            x=_x,
            datasets=DATASETS,
            reports=ORACLE_REPORTS,
        threads: 1
        resources:
            mem_mb=1000,
            runtime=10,
        log:
            log_path(f"ablation_{_kind}"),
        benchmark:
            bench_path(f"ablation_{_kind}")
        conda:
            ENV
        shell:
            "dicap ablation --x {params.x} --datasets {params.datasets} --metrics {input.metrics}"
            " --audits {input.audits} --oracle-reports {params.reports}"
            " --out-csv {output.csv} --out-png {output.png} > {log} 2>&1"
