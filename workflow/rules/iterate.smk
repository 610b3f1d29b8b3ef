# One routed DPO iteration per (method, seed, it): train_iteration (router in the training loop:
# route -> score -> pairs -> one DPO step -> bandit update, batch by batch); evaluate per run. The router
# state written by iteration it is an input of iteration it + 1.


rule train_iteration:
    input:
        policy=get_previous_policy,
        reference=get_reference_policy,
        rollouts=get_rollouts,
        previous_state=get_previous_router_state,
        previous_r2m=get_previous_r2m,
        rms=get_method_rm_dirs,
        offline_router=get_offline_router,
    output:
        policy=directory(f"{R}/runs/{{method}}/{{seed}}/it{{it}}/policy"),
        state=f"{R}/runs/{{method}}/{{seed}}/it{{it}}/router_state.json",
        state_arrays=f"{R}/runs/{{method}}/{{seed}}/it{{it}}/router_state.safetensors",
        decisions=f"{R}/runs/{{method}}/{{seed}}/it{{it}}/decisions.parquet",
        pairs=f"{R}/runs/{{method}}/{{seed}}/it{{it}}/pairs.jsonl",
        r2m=directory(f"{R}/runs/{{method}}/{{seed}}/it{{it}}/r2m"),
    params:
        method=get_method,
        pool=get_method_pool,
        r2m=get_r2m_settings,
        batch_order=config["budget"]["batch_order"],
        max_length=config["policy"]["max_length"],
        log_both_timings=config["evaluation"]["log_both_reward_timings"],
        lora=config.get("lora"),
        device=config["device"],
    threads: config["threads"]
    resources:
        gpu=config["resources"]["gpu_dpo"],
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime_min"],
    log:
        f"{R}/logs/train_iteration/{{method}}/{{seed}}/it{{it}}.log",
    benchmark:
        f"{R}/benchmarks/rules/train_iteration/{{method}}/{{seed}}/it{{it}}.tsv"
    conda:
        "../../envs/rmroute.yaml"
    script:
        "../scripts/train_iteration.py"


rule evaluate:
    # One job per run evaluates all its iterations, on test and on the validation split: an
    # evaluation is mostly process and library start-up, which one job per iteration (or split)
    # would pay again for every policy.
    input:
        policies=get_run_policies,
        test=f"{R}/data/test.jsonl",
        validation=f"{R}/data/{VALIDATION_SPLIT}.jsonl",
        sft_outputs=rules.evaluate_sft.output.outputs,
    output:
        tables=[f"{R}/runs/{{method}}/{{seed}}/it{i}/eval.tsv" for i in ITERATIONS],
        validation=[f"{R}/runs/{{method}}/{{seed}}/it{i}/eval_validation.tsv" for i in ITERATIONS],
    params:
        max_new_tokens=config["evaluation"]["max_new_tokens"],
        device=config["device"],
    threads: config["threads"]
    resources:
        gpu=config["resources"]["gpu_rollout"],
        mem_mb=config["resources"]["mem_mb"],
    log:
        f"{R}/logs/evaluate/{{method}}/{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/rules/evaluate/{{method}}/{{seed}}.tsv"
    conda:
        "../../envs/rmroute.yaml"
    script:
        "../scripts/evaluate.py"


rule collect_decisions:
    input:
        decisions=get_decision_logs,
    output:
        decisions=f"{R}/decisions/{{method}}/{{seed}}.parquet",
    log:
        f"{R}/logs/collect_decisions/{{method}}/{{seed}}.log",
    conda:
        "../../envs/rmroute.yaml"
    script:
        "../scripts/collect_decisions.py"
