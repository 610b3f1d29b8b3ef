# Tables (tidy TSV + Markdown twin) and figures (PNG + PDF) from every run.


rule sft_table:
    input:
        table=rules.evaluate_sft.output.tables,
    output:
        table=report(
            f"{R}/tables/sft_accuracy.tsv",
            caption="../report/sft_accuracy.rst",
            category="Policy",
            subcategory="SFT start",
        ),
    log:
        f"{R}/logs/sft_table.log",
    conda:
        "../../envs/rmroute.yaml"
    script:
        "../scripts/sft_table.py"


rule policy_tables:
    input:
        sft=rules.evaluate_sft.output.tables,
        evals=[f"{R}/runs/{m}/{s}/it{i}/eval.tsv" for m, s, i in RUNS],
        validation=[f"{R}/runs/{m}/{s}/it{i}/eval_validation.tsv" for m, s, i in RUNS],
    output:
        accuracy=report(
            f"{R}/tables/policy_accuracy.tsv",
            caption="../report/policy_accuracy.rst",
            category="Policy",
            subcategory="Routed DPO",
        ),
        validation=report(
            f"{R}/tables/validation_accuracy.tsv",
            caption="../report/validation_accuracy.rst",
            category="Policy",
            subcategory="Routed DPO",
        ),
        win_rate=report(
            f"{R}/tables/win_rate_vs_sft.tsv",
            caption="../report/win_rate_vs_sft.rst",
            category="Policy",
            subcategory="Routed DPO",
        ),
        laser=report(
            f"{R}/tables/laser_table1.tsv",
            caption="../report/laser_table1.rst",
            category="Policy",
            subcategory="Paper tables",
        ),
        bayesian=report(
            f"{R}/tables/bayesian_table1.tsv",
            caption="../report/bayesian_table1.rst",
            category="Policy",
            subcategory="Paper tables",
        ),
        png=report(
            f"{R}/figures/accuracy_vs_iteration.png",
            caption="../report/fig_accuracy_vs_iteration.rst",
            category="Policy",
            subcategory="Routed DPO",
        ),
        pdf=f"{R}/figures/accuracy_vs_iteration.pdf",
    params:
        runs=RUNS,
        methods=list(METHODS),
        seeds=SEEDS,
        final_iteration=ITERATIONS[-1],
        run_name=config["run_name"],
        validation_split=VALIDATION_SPLIT,
        # each paper table's best single RM is chosen among the single-RM methods of its recipe
        best_single_candidates={recipe: best_single_candidates(recipe) for recipe in config["recipes"]},
        # each paper table shows the methods of its recipe only: a comparison within one recipe
        recipe_methods={recipe: [m for m in METHODS if METHODS[m].recipe_name == recipe] for recipe in config["recipes"]},
    log:
        f"{R}/logs/policy_tables.log",
    conda:
        "../../envs/rmroute.yaml"
    script:
        "../scripts/policy_tables.py"


rule router_tables:
    input:
        decisions=decision_files(),
        benchmarks=[f"{R}/benchmarks/seeds/train_iteration/{m}/{s}/it{i}.tsv" for m, s, i in RUNS],
        rm_accuracy=rules.rm_accuracy.output.table,
    output:
        best_rm_share=report(
            f"{R}/tables/best_rm_share.tsv",
            caption="../report/best_rm_share.rst",
            category="Routers",
            subcategory="Router choices",
        ),
        choices=report(
            f"{R}/tables/router_choices.tsv",
            caption="../report/router_choices.rst",
            category="Routers",
            subcategory="Router choices",
        ),
        cost=report(f"{R}/tables/cost.tsv", caption="../report/cost.rst", category="Routers", subcategory="Cost"),
        png=report(
            f"{R}/figures/router_choices.png",
            caption="../report/fig_router_choices.rst",
            category="Routers",
            subcategory="Router choices",
        ),
        pdf=f"{R}/figures/router_choices.pdf",
    params:
        runs=[("train_iteration", *run) for run in RUNS],
    log:
        f"{R}/logs/router_tables.log",
    conda:
        "../../envs/rmroute.yaml"
    script:
        "../scripts/router_tables.py"


rule pair_quality:
    input:
        pairs=[f"{R}/runs/{m}/{s}/it{i}/pairs.jsonl" for m, s, i in DPO_RUNS],
    output:
        table=report(
            f"{R}/tables/pair_quality.tsv",
            caption="../report/pair_quality.rst",
            category="Routers",
            subcategory="Pair quality",
        ),
        png=report(
            f"{R}/figures/pair_quality.png",
            caption="../report/fig_pair_quality.rst",
            category="Routers",
            subcategory="Pair quality",
        ),
        pdf=f"{R}/figures/pair_quality.pdf",
    params:
        runs=DPO_RUNS,
    log:
        f"{R}/logs/pair_quality.log",
    conda:
        "../../envs/rmroute.yaml"
    script:
        "../scripts/pair_quality.py"


rule reward_validity:
    input:
        decisions=decision_files(),
    output:
        table=report(
            f"{R}/tables/reward_validity.tsv",
            caption="../report/reward_validity.rst",
            category="Routers",
            subcategory="Reward validity",
        ),
        png=report(
            f"{R}/figures/reward_validity.png",
            caption="../report/fig_reward_validity.rst",
            category="Routers",
            subcategory="Reward validity",
        ),
        pdf=f"{R}/figures/reward_validity.pdf",
    log:
        f"{R}/logs/reward_validity.log",
    conda:
        "../../envs/rmroute.yaml"
    script:
        "../scripts/reward_validity.py"


rule online_reward_validity:
    # Online methods (trainer grpo | rloo): each bandit signal's raw reward against the routed RM's
    # gold ranking agreement per decision, by method, signal, domain and RM (analysis only).
    input:
        decisions=[f"{R}/decisions/{m}/{s}.parquet" for m in sorted(ONLINE) for s in SEEDS],
    output:
        table=report(
            f"{R}/tables/online_reward_validity.tsv",
            caption="../report/online_reward_validity.rst",
            category="Routers",
            subcategory="Reward validity",
        ),
    log:
        f"{R}/logs/online_reward_validity.log",
    conda:
        "../../envs/rmroute.yaml"
    script:
        "../scripts/online_reward_validity.py"
