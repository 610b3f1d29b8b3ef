# R2M (config block `r2m`): trained for one iteration beside its controls (policy feedback replaced
# by matched Gaussian noise; feedback path never trained) and the plain base RM, on the rollouts
# and policy of iteration 1 of a single-RM method, and measured on that method's iteration 2
# rollouts (sampled by the moved policy). Its base RM is that method's RM.


rule r2m_probe:
    input:
        rollouts=f"{R}/rollouts/sft/{{seed}}.jsonl",
        rollout_policy=rules.sft_policy.output.policy,
        policy=get_r2m_policy,
        fresh=get_r2m_fresh_rollouts,
        base=get_r2m_base,
    output:
        table=f"{R}/r2m/{{seed}}/accuracy.parquet",
        states=expand(f"{R}/r2m/{{{{seed}}}}/{{variant}}.safetensors", variant=R2M_VARIANT_NAMES),
    params:
        r2m=R2M_CONFIG,
        device=config["device"],
    threads: config["threads"]
    resources:
        gpu=config["resources"]["gpu_score"],
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime_min"],
    log:
        f"{R}/logs/r2m/{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/rules/r2m/{{seed}}.tsv"
    conda:
        "../../envs/rmroute.yaml"
    script:
        "../scripts/r2m_probe.py"


rule r2m_table:
    input:
        tables=[f"{R}/r2m/{s}/accuracy.parquet" for s in SEEDS],
    output:
        table=report(f"{R}/tables/r2m.tsv", caption="../report/r2m.rst", category="Reward models", subcategory="R2M"),
        summary=report(
            f"{R}/tables/r2m_summary.tsv",
            caption="../report/r2m_summary.rst",
            category="Reward models",
            subcategory="R2M",
        ),
    log:
        f"{R}/logs/r2m/table.log",
    benchmark:
        f"{R}/benchmarks/rules/r2m/table.tsv"
    conda:
        "../../envs/rmroute.yaml"
    script:
        "../scripts/r2m_table.py"
