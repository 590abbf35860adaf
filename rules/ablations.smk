# Ablations, each run by its rule name (``snakemake ablation_guidance_scale``): a CSV and a
# figure under results/ablations/.  Variants that equal config.yaml's settings reuse the main run.


for _ablation in [a for a in ABLATIONS if a not in PROMPT_ABLATIONS]:

    rule:
        name:
            f"ablation_{_ablation}"
        input:
            **ablation_inputs(_ablation),
        output:
            csv=report(f"results/ablations/{_ablation}.csv", caption="captions/ablation.rst", category="Ablations"),
            png=report(f"results/ablations/{_ablation}.png", caption="captions/ablation.rst", category="Ablations"),
        params:
            code=code_version(f"ablation_{_ablation}"),
            ablation=_ablation,  # the shell runs when the job does, after the loop: read the name from here
            datasets=DATASETS,
        threads: 1
        resources:
            mem_mb=1000,
            runtime=10,
        log:
            log_path(f"ablation_{_ablation}"),
        benchmark:
            bench_path(f"ablation_{_ablation}")
        conda:
            ENV
        shell:
            "dicap ablation_{params.ablation} --datasets {params.datasets} --metrics {input.metrics}"
            " --audits {input.audits} --oracle-reports {input.oracle_reports}"
            " --out-csv {output.csv} --out-png {output.png} > {log} 2>&1"


# The prompt ablations change only the prompt training: accuracy per setting, no audit.
for _ablation in PROMPT_ABLATIONS:

    rule:
        name:
            f"ablation_{_ablation}"
        input:
            metrics=ablation_inputs(_ablation)["metrics"],
        output:
            csv=report(f"results/ablations/{_ablation}.csv", caption="captions/ablation.rst", category="Ablations"),
            png=report(f"results/ablations/{_ablation}.png", caption="captions/ablation.rst", category="Ablations"),
        params:
            code=code_version(f"ablation_{_ablation}"),
            ablation=_ablation,
            datasets=DATASETS,
            settings=as_json(PLAN.prompt_ablation_settings(_ablation)),
        threads: 1
        resources:
            mem_mb=1000,
            runtime=10,
        log:
            log_path(f"ablation_{_ablation}"),
        benchmark:
            bench_path(f"ablation_{_ablation}")
        conda:
            ENV
        shell:
            "dicap ablation_{params.ablation} --datasets {params.datasets} --metrics {input.metrics}"
            " --settings {params.settings:q} --out-csv {output.csv} --out-png {output.png} > {log} 2>&1"
