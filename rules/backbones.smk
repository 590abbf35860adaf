# Frozen backbones: CLIP, the class-conditional diffusion model and, for the
# 'classifier' guide, a noise-aware classifier.


rule clip_backbone:
    input:
        data=DATA_FILES,
    output:
        directory(CLIP),
    params:
        code=code_version("clip-backbone"),
        clip=as_json(config["clip"]),
        dataset_dir=dataset_dir,
    threads: 1
    resources:
        mem_mb=by_suite(4000, 16000),
        runtime=by_suite(60, 120),
        gpu=by_suite(0, 1),
    log:
        log_path("clip_backbone", "{dataset}"),
    benchmark:
        bench_path("clip_backbone", "{dataset}")
    conda:
        ENV
    shell:
        "dicap clip-backbone --dataset-dir {params.dataset_dir} --params {params.clip:q}"
        " --threads {threads} --out {output} > {log} 2>&1"


rule diffusion_backbone:
    input:
        data=DATA_FILES,
    output:
        directory(DIFFUSION),
    params:
        code=code_version("diffusion-backbone"),
        diffusion=as_json(config["diffusion"]),
        dataset_dir=dataset_dir,
    threads: 1
    resources:
        mem_mb=by_suite(4000, 16000),
        runtime=120,
    log:
        log_path("diffusion_backbone", "{dataset}"),
    benchmark:
        bench_path("diffusion_backbone", "{dataset}")
    conda:
        ENV
    shell:
        "dicap diffusion-backbone --dataset-dir {params.dataset_dir} --params {params.diffusion:q}"
        " --threads {threads} --out {output} > {log} 2>&1"


rule guide_classifier:
    input:
        data=DATA_FILES,
    output:
        directory(GUIDE_CLASSIFIER),
    params:
        code=code_version("guide-classifier"),
        train=as_json(config["guide_classifier"]["train"]),
        dataset_dir=dataset_dir,
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    log:
        log_path("guide_classifier", "{dataset}"),
    benchmark:
        bench_path("guide_classifier", "{dataset}")
    conda:
        ENV
    shell:
        "dicap guide-classifier --dataset-dir {params.dataset_dir} --params {params.train:q}"
        " --threads {threads} --out {output} > {log} 2>&1"
