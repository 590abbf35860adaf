# One prompt-training job per dataset x variant x method x seed, on the cached features (rules/features.smk).


# A method's parameters are config's prompt block with its learner's recipe laid over it
# (training_params).  prompt.checkpoint_every is not one: it cannot change the result, and
# Snakemake reruns a job whose params change.  It reaches the job through resources:, which
# are no rerun trigger (and, unlike {config[...]} in the shell line, pass --lint).


rule train_prompt:
    input:
        unpack(pixel_inputs),
        data=DATA_FILES,
        clip=CLIP,
        features=features_of,
    output:
        context=PROMPT,
        history=PROMPT_HISTORY,
    params:
        code=code_version("train_prompt"),
        prompt=lambda wc: as_json(training_params(wc.method, wc.variant)),
        dataset_dir=dataset_dir,
        # the variant names the classes a learner trains on (all_classes: every class); a learner that
        # encodes the images itself (MaPLe) also reads the shots and counterfactuals as images
        images=lambda wc, input: f"--variant {wc.variant}" + ((f" --split {input.split}" + (
            f" --counterfactual-images {input.images} --counterfactual-table {input.table}" if "images" in input.keys() else ""))
            if "split" in input.keys() else ""),
    threads: 1
    resources:
        mem_mb=learner_size(2000, 16000),
        runtime=learner_runtime,
        gpu=learner_gpus,  # none for zeroshot, which learns nothing
        checkpoint_every=config["prompt"]["checkpoint_every"],
    log:
        log_path("train_prompt", "dataset", "variant", "method", "seed"),
    benchmark:
        bench_path("train_prompt", "dataset", "variant", "method", "seed")
    conda:
        ENV
    shell:
        "dicap train_prompt --dataset-dir {params.dataset_dir} --clip-dir {input.clip}"
        " --features {input.features} {params.images} --method {wildcards.method} --seed {wildcards.seed}"
        " --params {params.prompt:q} --checkpoint-every {resources.checkpoint_every}"
        " --threads {threads} --out {output.context} > {log} 2>&1"
