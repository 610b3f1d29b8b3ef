# The policy: tokenizer + tiny Llama built and SFT-trained (or any HF causal LM), its evaluation,
# and the rollouts of each iteration.


rule sft_policy:
    input:
        sft=f"{R}/data/sft.jsonl",
        val=get_sft_validation,
    output:
        policy=directory(f"{R}/models/sft"),
        selection=report(
            f"{R}/tables/sft_selection.tsv",
            caption="../report/sft_selection.rst",
            category="Policy",
            subcategory="SFT start",
        ),
    params:
        policy=config["policy"],
        sft=SFT_SETTINGS.params(),  # without the selection keys under select: last
        max_new_tokens=EVALUATION.max_new_tokens if SFT_SETTINGS.select == "band" else None,
        seed=config["seed"],
        device=config["device"],
        torch_threads=config["threads"],
    # The band selection's checkpoints are evaluated by a worker on one more core while training
    # goes on (CPU; rmroute.stages.policy.SelectionWorker): the same checkpoint is kept, off the
    # critical path. Given fewer cores (--cores 1), the job evaluates them itself.
    threads: config["threads"] + (1 if SFT_SETTINGS.select == "band" and config["device"] == "cpu" else 0)
    resources:
        gpu=config["resources"]["gpu_dpo"],
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime_min"],
    log:
        f"{R}/logs/sft_policy.log",
    benchmark:
        f"{R}/benchmarks/rules/sft_policy.tsv"
    conda:
        "../../envs/rmroute.yaml"
    script:
        "../scripts/sft_policy.py"


rule evaluate_sft:
    input:
        policies=rules.sft_policy.output.policy,
        test=f"{R}/data/test.jsonl",
    output:
        tables=f"{R}/eval/sft.tsv",
        outputs=f"{R}/eval/sft_outputs.jsonl",
    params:
        max_new_tokens=config["evaluation"]["max_new_tokens"],
        device=config["device"],
    threads: config["threads"]
    resources:
        gpu=config["resources"]["gpu_rollout"],
        mem_mb=config["resources"]["mem_mb"],
    log:
        f"{R}/logs/evaluate_sft.log",
    benchmark:
        f"{R}/benchmarks/rules/evaluate_sft.tsv"
    conda:
        "../../envs/rmroute.yaml"
    script:
        "../scripts/evaluate.py"


rule rollout_sft:
    input:
        policy=rules.sft_policy.output.policy,
        prompts=f"{R}/data/rollout.jsonl",
    output:
        rollouts=[f"{R}/rollouts/sft/{s}.jsonl" for s in SEED_PARTS],
        seconds=[f"{R}/benchmarks/seeds/rollout_sft/{s}.tsv" for s in SEED_PARTS],  # each seed's own seconds
    params:
        seeds=job_seeds,
        budget=ROLLOUT_BUDGET,
        backend=config.get("rollout"),
        it=1,
        device=config["device"],
    threads: config["threads"]
    resources:
        gpu=config["resources"]["gpu_rollout"],
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime_min"],
    log:
        f"{R}/logs/rollout_sft/{SEED_DIR}rollout.log",
    benchmark:
        f"{R}/benchmarks/rules/rollout_sft/{SEED_DIR}rollout.tsv"
    conda:
        ROLLOUT_ENV
    script:
        "../scripts/rollout.py"


rule rollout:
    input:
        policy=get_previous_policy,
        prompts=f"{R}/data/rollout.jsonl",
    output:
        rollouts=[f"{R}/runs/{{method}}/{s}/it{{it}}/rollouts.jsonl" for s in SEED_PARTS],
        seconds=[f"{R}/benchmarks/seeds/rollout/{{method}}/{s}/it{{it}}.tsv" for s in SEED_PARTS],
    params:
        seeds=job_seeds,
        budget=ROLLOUT_BUDGET,
        backend=config.get("rollout"),
        it=iteration_number,
        domains=lambda wildcards: list(METHODS[wildcards.method].domains),  # only what the method trains on
        device=config["device"],
    threads: config["threads"]
    resources:
        gpu=config["resources"]["gpu_rollout"],
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime_min"],
    log:
        f"{R}/logs/rollout/{{method}}/{SEED_DIR}it{{it}}.log",
    benchmark:
        f"{R}/benchmarks/rules/rollout/{{method}}/{SEED_DIR}it{{it}}.tsv"
    conda:
        ROLLOUT_ENV
    script:
        "../scripts/rollout.py"
