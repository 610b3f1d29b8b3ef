# One routed DPO iteration per (method, seed, it): train_iteration (router in the training loop:
# route -> score -> pairs -> one DPO step -> bandit update, batch by batch); evaluate per run. The router
# state written by iteration it is an input of iteration it + 1. Under `seed_jobs: together` (the
# default) one job runs every seed of a method in turn (common.smk, SEED_PARTS).


rule train_iteration:
    # One job per (method, iteration, seed), or per (method, iteration) running every seed in turn
    # (`seed_jobs`); each named input and output then lists one path per seed, in `params.seeds` order.
    input:
        policy=get_previous_policy,
        reference=get_reference_policy,
        rollouts=get_rollouts,
        previous_state=get_previous_router_state,
        previous_arrays=get_previous_router_arrays,
        previous_r2m=get_previous_r2m,
        rms=get_method_rm_dirs,
        offline_router=get_offline_router,
    output:
        policy=[directory(f"{R}/runs/{{method}}/{s}/it{{it}}/policy") for s in SEED_PARTS],
        state=[f"{R}/runs/{{method}}/{s}/it{{it}}/router_state.json" for s in SEED_PARTS],
        state_arrays=[f"{R}/runs/{{method}}/{s}/it{{it}}/router_state.safetensors" for s in SEED_PARTS],
        decisions=[f"{R}/runs/{{method}}/{s}/it{{it}}/decisions.parquet" for s in SEED_PARTS],
        pairs=[f"{R}/runs/{{method}}/{s}/it{{it}}/pairs.jsonl" for s in SEED_PARTS],
        r2m=[directory(f"{R}/runs/{{method}}/{s}/it{{it}}/r2m") for s in SEED_PARTS],
        # Each seed's own seconds in the job (what efficiency and claim 2's wall-time ratio read).
        seconds=[f"{R}/benchmarks/seeds/train_iteration/{{method}}/{s}/it{{it}}.tsv" for s in SEED_PARTS],
    params:
        seeds=job_seeds,
        method=get_method,
        pool=get_method_pool,
        r2m=get_r2m_settings,
        batch_order=config["budget"]["batch_order"],
        max_length=config["policy"]["max_length"],
        log_both_timings=config["evaluation"]["log_both_reward_timings"],
        online_budget=get_online_budget,
        lora=config.get("lora"),
        device=config["device"],
    threads: config["threads"]
    resources:
        gpu=config["resources"]["gpu_dpo"],
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime_min"],
    log:
        f"{R}/logs/train_iteration/{{method}}/{SEED_DIR}it{{it}}.log",
    benchmark:
        f"{R}/benchmarks/rules/train_iteration/{{method}}/{SEED_DIR}it{{it}}.tsv"
    conda:
        "../../envs/rmroute.yaml"
    script:
        "../scripts/train_iteration.py"


rule evaluate:
    # One job per run (per method under `seed_jobs: together`) evaluates all its iterations, on
    # test and on the validation split: an evaluation is mostly process and library start-up, which
    # one job per iteration (or split) would pay again for every policy.
    input:
        policies=get_run_policies,
        test=f"{R}/data/test.jsonl",
        validation=f"{R}/data/{VALIDATION_SPLIT}.jsonl",
        sft_outputs=rules.evaluate_sft.output.outputs,
    output:
        tables=[f"{R}/runs/{{method}}/{s}/it{i}/eval.tsv" for s in SEED_PARTS for i in ITERATIONS],
        validation=[f"{R}/runs/{{method}}/{s}/it{i}/eval_validation.tsv" for s in SEED_PARTS for i in ITERATIONS],
    params:
        max_new_tokens=config["evaluation"]["max_new_tokens"],
        device=config["device"],
    threads: config["threads"]
    resources:
        gpu=config["resources"]["gpu_rollout"],
        mem_mb=config["resources"]["mem_mb"],
    log:
        f"{R}/logs/evaluate/{{method}}/{SEED_DIR}evaluate.log",
    benchmark:
        f"{R}/benchmarks/rules/evaluate/{{method}}/{SEED_DIR}evaluate.tsv"
    conda:
        "../../envs/rmroute.yaml"
    script:
        "../scripts/evaluate.py"


rule collect_decisions:
    input:
        decisions=get_decision_logs,
    output:
        decisions=[f"{R}/decisions/{{method}}/{s}.parquet" for s in SEED_PARTS],
    params:
        iterations=len(ITERATIONS),
    log:
        f"{R}/logs/collect_decisions/{{method}}/{SEED_DIR}collect.log",
    conda:
        "../../envs/rmroute.yaml"
    script:
        "../scripts/collect_decisions.py"
