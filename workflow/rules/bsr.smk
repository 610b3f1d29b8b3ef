# The BSR paper's robustness measurements (config block `bsr_eval`): a BT and a BSR classifier RM
# trained on the same data, λ and init per seed; Kendall τ against the gold checker in domain,
# prompt-OOD, response-OOD (an earlier SFT checkpoint answers) and mutual-OOD; in-domain pair
# accuracy; and the norms of the last hidden state on train and eval data.


rule bsr_response_policy:
    input:
        sft=f"{R}/data/sft.jsonl",
    output:
        policy=directory(f"{R}/bsr/response_policy"),
    params:
        policy=config["policy"],
        sft=BSR_RESPONSE_SFT,
        seed=config["seed"],
        device=config["device"],
    threads: config["threads"]
    resources:
        gpu=config["resources"]["gpu_dpo"],
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime_min"],
    log:
        f"{R}/logs/bsr/response_policy.log",
    benchmark:
        f"{R}/benchmarks/rules/bsr/response_policy.tsv"
    conda:
        "../../envs/rmroute.yaml"
    script:
        "../scripts/bsr_response_policy.py"


rule bsr_groups:
    input:
        sft=rules.sft_policy.output.policy,
        response=rules.bsr_response_policy.output.policy,
        prompts=expand(f"{R}/data/{{split}}.jsonl", split=["test", OOD_SPLIT]),
    output:
        groups=f"{R}/bsr/groups.jsonl",
    params:
        samples=BSR_EVAL.get("samples_per_prompt"),
        temperature=BSR_EVAL.get("temperature"),
        max_new_tokens=BUDGET.max_new_tokens,
        seed=config["seed"],
        device=config["device"],
    threads: config["threads"]
    resources:
        gpu=config["resources"]["gpu_rollout"],
        mem_mb=config["resources"]["mem_mb"],
    log:
        f"{R}/logs/bsr/groups.log",
    benchmark:
        f"{R}/benchmarks/rules/bsr/groups.tsv"
    conda:
        "../../envs/rmroute.yaml"
    script:
        "../scripts/bsr_groups.py"


rule bsr_rm:
    input:
        tokenizer=rules.sft_policy.output.policy,
        init=get_bsr_init,
        pairs=f"{R}/data/pairs/rm_train.jsonl",
        test_pairs=f"{R}/data/pairs/test.jsonl",
        groups=rules.bsr_groups.output.groups,
    output:
        rm=directory(f"{R}/bsr/rms/{{loss}}/{{bsr_seed}}"),
        table=f"{R}/bsr/eval/{{loss}}/{{bsr_seed}}.parquet",
        norms=f"{R}/bsr/eval/{{loss}}/{{bsr_seed}}.norms.parquet",
    params:
        rm=get_bsr_rm_job,  # the row's training columns and the rm_training keys of the job's loss
        data_seed=config["seed"],
        seed=get_bsr_seed,
        device=config["device"],
    threads: config["threads"]
    resources:
        gpu=config["resources"]["gpu_score"],
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime_min"],
    log:
        f"{R}/logs/bsr/rm/{{loss}}/{{bsr_seed}}.log",
    benchmark:
        f"{R}/benchmarks/rules/bsr/rm/{{loss}}/{{bsr_seed}}.tsv"
    conda:
        "../../envs/rmroute.yaml"
    script:
        "../scripts/bsr_rm.py"


rule bsr_table:
    input:
        tables=[f"{R}/bsr/eval/{loss}/{s}.parquet" for loss in BSR_LOSSES for s in BSR_SEEDS],
        norms=[f"{R}/bsr/eval/{loss}/{s}.norms.parquet" for loss in BSR_LOSSES for s in BSR_SEEDS],
    output:
        table=report(f"{R}/tables/bsr.tsv", caption="../report/bsr.rst", category="Reward models", subcategory="BSR"),
        summary=report(
            f"{R}/tables/bsr_summary.tsv",
            caption="../report/bsr_summary.rst",
            category="Reward models",
            subcategory="BSR",
        ),
        png=report(
            f"{R}/figures/bsr_norms.png",
            caption="../report/fig_bsr_norms.rst",
            category="Reward models",
            subcategory="BSR",
        ),
        pdf=f"{R}/figures/bsr_norms.pdf",
    log:
        f"{R}/logs/bsr/table.log",
    benchmark:
        f"{R}/benchmarks/rules/bsr/table.tsv"
    conda:
        "../../envs/rmroute.yaml"
    script:
        "../scripts/bsr_table.py"
