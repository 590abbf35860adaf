# Image-text retrieval (Table 2) and VQA (Table 3).  The embedded suite reuses classification's
# few-shot images, features and counterfactuals (main variant) with the images' captions or
# questions as the texts (src/dicap/data/text_tasks.py); the paper suite runs the same rules on
# Flickr30k, MSCOCO and VQAv2 (src/dicap/data/text_store.py), whose counterfactual shards
# regenerate each image with its caption's object noun swapped.  One context per task x dataset
# x method x seed, one evaluation per task x dataset x seed over the test split.


rule train_task_prompt:
    input:
        data=DATA_FILES,
        clip=CLIP,
        features=lambda wc: TRAIN_FEATURES.format(dataset=wc.dataset, variant=layout.MAIN, seed=wc.seed),
        split=split_of,
    output:
        TASK_PROMPT,
    params:
        code=code_version("train_task_prompt"),
        prompt=lambda wc: as_json(training_params(wc.method, layout.MAIN)),
        vqa_answers=config["tasks"]["vqa_answers"],
        dataset_dir=dataset_dir,
    threads: 1
    resources:
        mem_mb=by_suite(2000, 16000),
        runtime=learner_runtime,  # a text dataset has no budgeted size: the learner's ceiling; zeroshot's short one
        gpu=lambda wc: by_suite(0, learner_gpus(wc)),  # zeroshot learns nothing: no GPU
    log:
        log_path("train_task_prompt", "task", "dataset", "method", "seed"),
    benchmark:
        bench_path("train_task_prompt", "task", "dataset", "method", "seed")
    conda:
        ENV
    shell:
        "dicap train_task_prompt --dataset-dir {params.dataset_dir} --clip-dir {input.clip}"
        " --features {input.features} --split {input.split} --task {wildcards.task} --method {wildcards.method}"
        " --seed {wildcards.seed} --params {params.prompt:q} --vqa-answers {params.vqa_answers} --threads {threads}"
        " --out {output} > {log} 2>&1"


rule evaluate_task:
    input:
        data=DATA_FILES,
        clip=CLIP,
        features=EVAL_FEATURES,
        prompts=expand(TASK_PROMPT, method=TASK_METHODS, allow_missing=True),
    output:
        TASK_METRICS,
    params:
        code=code_version("evaluate_task"),
        prompt=as_json({m: PLAN.learner_params(m, layout.MAIN) for m in TASK_METHODS}),  # no trainer keys
        methods=TASK_METHODS,
        recall_at=config["tasks"]["recall_at"],
        vqa_answers=config["tasks"]["vqa_answers"],
        dataset_dir=dataset_dir,
    threads: 1
    resources:
        mem_mb=by_suite(2000, 16000),
        runtime=by_suite(30, 240),
        gpu=by_suite(0, 1),
    log:
        log_path("evaluate_task", "task", "dataset", "seed"),
    benchmark:
        bench_path("evaluate_task", "task", "dataset", "seed")
    conda:
        ENV
    shell:
        "dicap evaluate_task --dataset-dir {params.dataset_dir} --clip-dir {input.clip} --features {input.features}"
        " --task {wildcards.task} --prompts {input.prompts} --methods {params.methods} --seed {wildcards.seed}"
        " --params {params.prompt:q} --recall-at {params.recall_at} --vqa-answers {params.vqa_answers}"
        " --threads {threads} --out {output} > {log} 2>&1"



rule task_table:
    input:
        lambda wc: expand(TASK_METRICS, task=TABLE_TASK[wc.table], dataset=task_datasets(wc.table), seed=SEEDS),
    output:
        csv=report("results/{table}.csv", caption="captions/task_tables.rst", category="Tables 2 and 3"),
        md="results/{table}.md",
        provenance="results/{table}.provenance.json",
    wildcard_constraints:
        table="|".join(TABLE_TASK),
    params:
        code=code_version("task_table"),
        task=lambda wc: TABLE_TASK[wc.table],
        suite=config["suite"],
        datasets=lambda wc: task_datasets(wc.table),
        config=as_json(config),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        log_path("task_table", "table"),
    benchmark:
        bench_path("task_table", "table")
    conda:
        ENV
    shell:
        "dicap task_table --task {params.task} --suite {params.suite} --datasets {params.datasets} --metrics {input}"
        " --config-json {params.config:q} --out-csv {output.csv} --out-md {output.md} > {log} 2>&1"
