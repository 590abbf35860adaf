# The counterfactual audit (embedded suite): an independent oracle judges every generated
# counterfactual against the true one the structural causal model renders, and, before any
# counterfactual, whether the diffusion model draws every class it is asked for; the generator
# curve has it judge a few images regenerated over guidance scales x inversion depths.


rule oracle:
    input:
        data=DATA_FILES,
    output:
        model=directory(ORACLE),
        report=ORACLE_REPORT,
    params:
        code=code_version("oracle"),
        train=as_json(config["oracle"]["train"]),
        dataset_dir=dataset_dir,
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    log:
        log_path("oracle", "dataset"),
    benchmark:
        bench_path("oracle", "dataset")
    conda:
        ENV
    shell:
        "dicap oracle --dataset-dir {params.dataset_dir} --params {params.train:q}"
        " --threads {threads} --out {output.model} --report {output.report} > {log} 2>&1"


rule diffusion_check:
    input:
        data=DATA_FILES,
        diffusion=DIFFUSION,
        oracle=ORACLE,
    output:
        B(layout.DIFFUSION_CHECK),
    params:
        code=code_version("diffusion_check"),
        check=as_json(config["diffusion"]["check"]),
        steps=COUNTERFACTUAL["steps"],
        guidance_scale=COUNTERFACTUAL["guidance_scale"],
        dataset_dir=dataset_dir,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    log:
        log_path("diffusion_check", "dataset"),
    benchmark:
        bench_path("diffusion_check", "dataset")
    conda:
        ENV
    shell:
        "dicap diffusion_check --dataset-dir {params.dataset_dir} --diffusion-dir {input.diffusion}"
        " --oracle-dir {input.oracle} --params {params.check:q} --steps {params.steps}"
        " --guidance-scale {params.guidance_scale} --threads {threads} --out {output} > {log} 2>&1"


rule generator_curve:
    input:
        unpack(guide_inputs),
        data=DATA_FILES,
        split=layout.fill(SPLIT, seed=SEEDS[0]),
        diffusion=DIFFUSION,
        oracle=ORACLE,
        clip=CLIP,
        class_text_features=CLASS_TEXT_FEATURES,
    output:
        B(GENERATOR_CURVE),
    params:
        code=code_version("generator_curve"),
        cf=as_json({k: COUNTERFACTUAL[k] for k in ("guide", "steps", "batch_size", "sampling")}),  # it sets scale and depth itself
        scales=PLAN.curve_settings["scales"],
        depths=PLAN.curve_settings["depths"],
        images=config["report"]["curve_images"],
        seed=SEEDS[0],
        dataset_dir=dataset_dir,
        classifier=lambda wc, input: f"--classifier-dir {input.classifier}" if "classifier" in input.keys() else "",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    log:
        log_path("generator_curve", "dataset"),
    benchmark:
        bench_path("generator_curve", "dataset")
    conda:
        ENV
    shell:
        "dicap generator_curve --dataset-dir {params.dataset_dir} --split {input.split} --diffusion-dir {input.diffusion}"
        " --oracle-dir {input.oracle} --clip-dir {input.clip} --class-text-features {input.class_text_features}"
        " {params.classifier} --params {params.cf:q} --scales {params.scales} --depths {params.depths}"
        " --images {params.images} --seed {params.seed} --threads {threads} --out {output} > {log} 2>&1"


rule audit_counterfactuals:
    input:
        data=DATA_FILES,
        split=SPLIT,
        oracle=ORACLE,
        clip=CLIP,
        images=CF_IMAGES,
        table=CF_TABLE,
    output:
        AUDIT,
    params:
        code=code_version("audit_counterfactuals"),
        dataset_dir=dataset_dir,
    wildcard_constraints:
        variant=layout.GENERATED_VARIANTS,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    log:
        log_path("audit_counterfactuals", "dataset", "variant", "seed"),
    benchmark:
        bench_path("audit_counterfactuals", "dataset", "variant", "seed")
    conda:
        ENV
    shell:
        "dicap audit_counterfactuals --dataset-dir {params.dataset_dir} --split {input.split}"
        " --oracle-dir {input.oracle} --clip-dir {input.clip} --images {input.images} --table {input.table}"
        " --threads {threads} --out {output} > {log} 2>&1"


rule audit_summary:
    input:
        audits=expand(AUDIT, dataset=DATASETS, variant=layout.MAIN, seed=SEEDS),
        oracle_reports=expand(ORACLE_REPORT, dataset=DATASETS),
    output:
        csv=report("results/counterfactual_audit.csv", caption="captions/counterfactual_audit.rst", category="Counterfactual audit"),
        md="results/counterfactual_audit.md",
    params:
        code=code_version("audit_summary"),
        datasets=DATASETS,
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        log_path("audit_summary"),
    benchmark:
        bench_path("audit_summary")
    conda:
        ENV
    shell:
        "dicap audit_summary --datasets {params.datasets} --audits {input.audits}"
        " --oracle-reports {input.oracle_reports} --out {output.csv} --out-md {output.md} > {log} 2>&1"
