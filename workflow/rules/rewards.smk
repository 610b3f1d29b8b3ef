# The RM pool: gold-labelled pairs from SFT samples, one RM per sheet row (BT, BSR or generative,
# each on its own domain mix and from its own `init`), every RM's behaviour on held-out pairs, and
# the RewardBench-style table.


rule rm_pairs:
    # On the critical path (SFT -> RM pairs -> RMs -> every method's iterations): first when a core frees.
    priority: 10
    input:
        policy=rules.sft_policy.output.policy,
        splits=expand(f"{R}/data/{{split}}.jsonl", split=PAIR_SPLITS),
    output:
        pairs=expand(f"{R}/data/pairs/{{split}}.jsonl", split=PAIR_SPLITS),
    params:
        samples=RM_TRAINING.samples_per_prompt,
        temperature=RM_TRAINING.temperature,
        max_new_tokens=BUDGET.max_new_tokens,  # the samples are as long as the rollouts' the RMs will score
        seed=config["seed"],
        device=config["device"],
    threads: config["threads"]
    resources:
        gpu=config["resources"]["gpu_rollout"],
        mem_mb=config["resources"]["mem_mb"],
    log:
        f"{R}/logs/rm_pairs.log",
    benchmark:
        f"{R}/benchmarks/rules/rm_pairs.tsv"
    conda:
        "../../envs/rmroute.yaml"
    script:
        "../scripts/rm_pairs.py"


rule train_rm:
    # On the critical path (SFT -> RM pairs -> RMs -> every method's iterations): first when a core frees.
    priority: 10
    input:
        policy=rules.sft_policy.output.policy,
        init=get_rm_init,
        pairs=f"{R}/data/pairs/rm_train.jsonl",
    output:
        rm=directory(f"{R}/rms/{{rm}}"),
    params:
        rm=get_rm_job,  # its row's training columns and the rm_training keys of its kind (rmroute.settings.RMJob)
        seed=config["seed"],
        device=config["device"],
    threads: config["threads"]
    resources:
        gpu=config["resources"]["gpu_score"],
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime_min"],
    log:
        f"{R}/logs/train_rm/{{rm}}.log",
    benchmark:
        f"{R}/benchmarks/rules/train_rm/{{rm}}.tsv"
    conda:
        "../../envs/rmroute.yaml"
    script:
        "../scripts/train_rm.py"


rule rm_behaviour:
    input:
        rms=trained_rm_dirs(),
        pairs=expand(f"{R}/data/pairs/{{split}}.jsonl", split=BEHAVIOUR_SPLITS),
    output:
        behaviour=f"{R}/behaviour/behaviour.parquet",
    params:
        pool=rm_pool_records(static=True),
        splits=BEHAVIOUR_SPLITS,
        device=config["device"],
    threads: config["threads"]
    resources:
        gpu=config["resources"]["gpu_score"],
        mem_mb=config["resources"]["mem_mb"],
    log:
        f"{R}/logs/rm_behaviour.log",
    benchmark:
        f"{R}/benchmarks/rules/rm_behaviour.tsv"
    conda:
        "../../envs/rmroute.yaml"
    script:
        "../scripts/rm_behaviour.py"


rule rm_accuracy:
    input:
        behaviour=rules.rm_behaviour.output.behaviour,
    output:
        table=report(
            f"{R}/tables/rm_accuracy.tsv",
            caption="../report/rm_accuracy.rst",
            category="Reward models",
            subcategory="RM pool",
        ),
        complementarity=report(
            f"{R}/tables/rm_complementarity.tsv",
            caption="../report/rm_complementarity.rst",
            category="Reward models",
            subcategory="RM pool",
        ),
        png=report(
            f"{R}/figures/rm_accuracy.png",
            caption="../report/fig_rm_accuracy.rst",
            category="Reward models",
            subcategory="RM pool",
        ),
        pdf=f"{R}/figures/rm_accuracy.pdf",
    log:
        f"{R}/logs/rm_accuracy.log",
    conda:
        "../../envs/rmroute.yaml"
    script:
        "../scripts/rm_accuracy.py"
