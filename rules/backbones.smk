# Frozen backbones: CLIP, the class-conditional diffusion model and, for the
# 'classifier' guide, a noise-aware classifier.  Each writes its model folder and, as declared
# outputs of their own, the files later rules read (reports, CLIP's class text features).


rule clip_backbone:
    input:
        data=DATA_FILES,
        pretrain_with=other_worlds,
    output:
        model=directory(CLIP),
        report=CLIP_REPORT,
        class_text_features=CLASS_TEXT_FEATURES,
    params:
        code=code_version("clip_backbone"),
        clip=lambda wc: as_json(clip_params(wc.dataset)),
        dataset_dir=dataset_dir,
        pretrain_with=other_worlds_option,
    threads: 1
    resources:
        mem_mb=by_suite(4000, 16000),
        runtime=by_suite(60, 120),
        gpu=by_suite(0, 1),
    log:
        log_path("clip_backbone", "dataset"),
    benchmark:
        bench_path("clip_backbone", "dataset")
    conda:
        ENV
    shell:
        "dicap clip_backbone --dataset-dir {params.dataset_dir} --params {params.clip:q} {params.pretrain_with}"
        " --threads {threads} --out {output.model} --report {output.report}"
        " --class-text-features {output.class_text_features} > {log} 2>&1"


rule diffusion_backbone:
    input:
        data=DATA_FILES,
    output:
        model=directory(DIFFUSION),
        report=DIFFUSION_REPORT,
    params:
        code=code_version("diffusion_backbone"),
        diffusion=as_json({k: v for k, v in config["diffusion"].items() if k != "check"}),  # the check is diffusion_check's
        dataset_dir=dataset_dir,
    threads: 1
    resources:
        mem_mb=by_suite(4000, 16000),
        runtime=120,
    log:
        log_path("diffusion_backbone", "dataset"),
    benchmark:
        bench_path("diffusion_backbone", "dataset")
    conda:
        ENV
    shell:
        "dicap diffusion_backbone --dataset-dir {params.dataset_dir} --params {params.diffusion:q}"
        " --threads {threads} --out {output.model} --report {output.report} > {log} 2>&1"


rule guide_classifier:
    input:
        data=DATA_FILES,
    output:
        directory(GUIDE_CLASSIFIER),
    params:
        code=code_version("guide_classifier"),
        train=as_json(config["guide_classifier"]["train"]),
        dataset_dir=dataset_dir,
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    log:
        log_path("guide_classifier", "dataset"),
    benchmark:
        bench_path("guide_classifier", "dataset")
    conda:
        ENV
    shell:
        "dicap guide_classifier --dataset-dir {params.dataset_dir} --params {params.train:q}"
        " --threads {threads} --out {output} > {log} 2>&1"
