# R2M (config block `r2m`). In the loop: sheet rows `r2m:<base>` (and the controls `r2m-noise:`,
# `r2m-untrained:`) are RMs of the pool that train_iteration updates as the policy moves;
# `r2m.compare` names the single-RM runs r2m.tsv compares (R2M, both controls, the base RM).
# The probe (`r2m.method`): trained for one iteration beside its controls on the rollouts and
# policy of iteration 1 of a single-RM method, measured on that method's iteration 2 rollouts.


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
        r2m={k: v for k, v in R2M_CONFIG.items() if k != "compare"},
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


rule r2m_probe_table:
    input:
        tables=[f"{R}/r2m/{s}/accuracy.parquet" for s in SEEDS],
    output:
        table=report(f"{R}/tables/r2m_probe.tsv", caption="../report/r2m_probe.rst", category="Reward models",
                     subcategory="R2M probe"),
        summary=report(f"{R}/tables/r2m_probe_summary.tsv", caption="../report/r2m_probe_summary.rst",
                       category="Reward models", subcategory="R2M probe"),
    log:
        f"{R}/logs/r2m/probe_table.log",
    benchmark:
        f"{R}/benchmarks/rules/r2m/probe_table.tsv"
    conda:
        "../../envs/rmroute.yaml"
    script:
        "../scripts/r2m_probe_table.py"


rule r2m_table:
    input:
        decisions=[f"{R}/decisions/{m}/{s}.parquet" for m in R2M_COMPARE.values() for s in SEEDS],
        evals=[f"{R}/runs/{m}/{s}/it{i}/eval.tsv" for m in R2M_COMPARE.values() for s in SEEDS for i in ITERATIONS],
    output:
        table=report(f"{R}/tables/r2m.tsv", caption="../report/r2m.rst", category="Reward models", subcategory="R2M"),
        summary=report(f"{R}/tables/r2m_summary.tsv", caption="../report/r2m_summary.rst", category="Reward models",
                       subcategory="R2M"),
    params:
        decisions={v: [f"{R}/decisions/{m}/{s}.parquet" for s in SEEDS] for v, m in R2M_COMPARE.items()},
        evals={v: [f"{R}/runs/{m}/{s}/it{i}/eval.tsv" for s in SEEDS for i in ITERATIONS] for v, m in R2M_COMPARE.items()},
    log:
        f"{R}/logs/r2m/table.log",
    benchmark:
        f"{R}/benchmarks/rules/r2m/table.tsv"
    conda:
        "../../envs/rmroute.yaml"
    script:
        "../scripts/r2m_table.py"
