# Figures that test the papers' claims beside the tables (rmroute.figures): RM selection share over
# iterations, pairwise RM agreement, reward margins, and accuracy against wall time and RM calls.

rule rm_selection_share:
    input:
        choices=rules.router_tables.output.choices,
    output:
        png=report(f"{R}/figures/rm_selection_share.png", caption="../report/rm_selection_share.rst", category="Routers",
                   subcategory="Router choices"),
        pdf=f"{R}/figures/rm_selection_share.pdf",
    params:
        # routers that pick among RMs decision by decision: a fixed RM or an ensemble has no share to show
        routed=[m for m, method in METHODS.items() if method.router_class.picks_per_decision],
    log:
        f"{R}/logs/rm_selection_share.log",
    conda:
        "../../envs/rmroute.yaml"
    script:
        "../scripts/rm_selection_share.py"


rule rm_agreement:
    input:
        behaviour=rules.rm_behaviour.output.behaviour,
    output:
        table=report(f"{R}/tables/rm_agreement.tsv", caption="../report/rm_agreement_table.rst", category="Reward models",
                     subcategory="RM pool"),
        png=report(f"{R}/figures/rm_agreement.png", caption="../report/rm_agreement.rst", category="Reward models",
                   subcategory="RM pool"),
        pdf=f"{R}/figures/rm_agreement.pdf",
    log:
        f"{R}/logs/rm_agreement.log",
    conda:
        "../../envs/rmroute.yaml"
    script:
        "../scripts/rm_agreement.py"


rule reward_margins:
    input:
        decisions=decision_files(),
        behaviour=rules.rm_behaviour.output.behaviour,
    output:
        png=report(f"{R}/figures/reward_margins.png", caption="../report/reward_margins.rst", category="Reward models",
                   subcategory="RM pool"),
        pdf=f"{R}/figures/reward_margins.pdf",
    log:
        f"{R}/logs/reward_margins.log",
    conda:
        "../../envs/rmroute.yaml"
    script:
        "../scripts/reward_margins.py"


rule efficiency:
    input:
        accuracy=rules.policy_tables.output.accuracy,
        cost=rules.router_tables.output.cost,
        benchmarks=[path for *_, path in efficiency_benchmarks()],
    output:
        table=report(f"{R}/tables/efficiency.tsv", caption="../report/efficiency_table.rst", category="Routers",
                     subcategory="Cost"),
        png=report(f"{R}/figures/efficiency.png", caption="../report/efficiency.rst", category="Routers", subcategory="Cost"),
        pdf=f"{R}/figures/efficiency.pdf",
    params:
        benchmarks=[(m, s, stage) for m, s, stage, _ in efficiency_benchmarks()],
    log:
        f"{R}/logs/efficiency.log",
    conda:
        "../../envs/rmroute.yaml"
    script:
        "../scripts/efficiency.py"
