# One routed DPO iteration per (method, seed, it): route + score -> DPO (+ bandit feedback) ->
# evaluate. The router state written by iteration it is an input of iteration it + 1.


rule route_and_score:
    input:
        rollouts=get_rollouts,
        previous_state=get_previous_router_state,
        rms=trained_rm_dirs(),
        offline_router=get_offline_router,
    output:
        pairs=f"{R}/runs/{{method}}/{{seed}}/it{{it}}/pairs.jsonl",
        routing=f"{R}/runs/{{method}}/{{seed}}/it{{it}}/routing.parquet",
        state=f"{R}/runs/{{method}}/{{seed}}/it{{it}}/router_selected.json",
        state_arrays=f"{R}/runs/{{method}}/{{seed}}/it{{it}}/router_selected.safetensors",
    params:
        method=get_method,
        pool=rm_pool_records(),
        device=config["device"],
    threads: config["threads"]
    resources:
        gpu=config["resources"]["gpu_score"],
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime_min"],
    log:
        f"{R}/logs/route_and_score/{{method}}/{{seed}}/it{{it}}.log",
    benchmark:
        f"{R}/benchmarks/rules/route_and_score/{{method}}/{{seed}}/it{{it}}.tsv"
    conda:
        "../../envs/rmroute.yaml"
    script:
        "../scripts/route_and_score.py"


rule dpo:
    input:
        policy=get_previous_policy,
        reference=get_reference_policy,
        pairs=rules.route_and_score.output.pairs,
        routing=rules.route_and_score.output.routing,
        state=rules.route_and_score.output.state,
        state_arrays=rules.route_and_score.output.state_arrays,
        offline_router=get_offline_router,
    output:
        policy=directory(f"{R}/runs/{{method}}/{{seed}}/it{{it}}/policy"),
        state=f"{R}/runs/{{method}}/{{seed}}/it{{it}}/router_state.json",
        state_arrays=f"{R}/runs/{{method}}/{{seed}}/it{{it}}/router_state.safetensors",
        decisions=f"{R}/runs/{{method}}/{{seed}}/it{{it}}/decisions.parquet",
    params:
        method=get_method,
        lora=config.get("lora"),
        device=config["device"],
    threads: config["threads"]
    resources:
        gpu=config["resources"]["gpu_dpo"],
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime_min"],
    log:
        f"{R}/logs/dpo/{{method}}/{{seed}}/it{{it}}.log",
    benchmark:
        f"{R}/benchmarks/rules/dpo/{{method}}/{{seed}}/it{{it}}.tsv"
    conda:
        "../../envs/rmroute.yaml"
    script:
        "../scripts/dpo.py"


rule evaluate:
    input:
        policy=rules.dpo.output.policy,
        test=f"{R}/data/test.jsonl",
        sft_outputs=rules.evaluate_sft.output.outputs,
    output:
        table=f"{R}/runs/{{method}}/{{seed}}/it{{it}}/eval.tsv",
    params:
        max_new_tokens=config["evaluation"]["max_new_tokens"],
        device=config["device"],
    threads: config["threads"]
    resources:
        gpu=config["resources"]["gpu_rollout"],
        mem_mb=config["resources"]["mem_mb"],
    log:
        f"{R}/logs/evaluate/{{method}}/{{seed}}/it{{it}}.log",
    benchmark:
        f"{R}/benchmarks/rules/evaluate/{{method}}/{{seed}}/it{{it}}.tsv"
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
