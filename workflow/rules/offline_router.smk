# BayesianRouter's offline stage: the multi-task router trained on every RM's behaviour on the
# offline split, its accuracy in and out of domain, and the controlled routing simulation.


rule train_offline_router:
    input:
        pairs=f"{R}/data/pairs/router_offline.jsonl",
        behaviour=rules.rm_behaviour.output.behaviour,
    output:
        model=directory(f"{R}/offline_router/model"),
        history=f"{R}/offline_router/history.tsv",
    params:
        encoder=config["offline_router"]["encoder"],
        train=config["offline_router"],
        seed=config["seed"],
    threads: config["threads"]
    resources:
        mem_mb=config["resources"]["mem_mb"],
    log:
        f"{R}/logs/train_offline_router.log",
    benchmark:
        f"{R}/benchmarks/rules/train_offline_router.tsv"
    conda:
        "../../envs/rmroute.yaml"
    script:
        "../scripts/train_offline_router.py"


rule offline_router_table:
    input:
        model=rules.train_offline_router.output.model,
        pairs=expand(f"{R}/data/pairs/{{split}}.jsonl", split=BEHAVIOUR_SPLITS),
        behaviour=rules.rm_behaviour.output.behaviour,
    output:
        table=report(
            f"{R}/tables/offline_router.tsv",
            caption="../report/offline_router.rst",
            category="Routers",
            subcategory="Offline router",
        ),
    threads: config["threads"]
    log:
        f"{R}/logs/offline_router_table.log",
    conda:
        "../../envs/rmroute.yaml"
    script:
        "../scripts/offline_router_table.py"


rule routing_sim:
    input:
        model=rules.train_offline_router.output.model,
        policy=rules.sft_policy.output.policy,
        pairs=expand(f"{R}/data/pairs/{{split}}.jsonl", split=BEHAVIOUR_SPLITS),
        behaviour=rules.rm_behaviour.output.behaviour,
    output:
        table=report(
            f"{R}/tables/routing_sim.tsv",
            caption="../report/routing_sim.rst",
            category="Routers",
            subcategory="Routing simulation",
        ),
        summary=report(
            f"{R}/tables/routing_sim_summary.tsv",
            caption="../report/routing_sim_summary.rst",
            category="Routers",
            subcategory="Routing simulation",
        ),
        curve=f"{R}/routing_sim/regret_curve.tsv",
        png=report(
            f"{R}/figures/routing_regret.png",
            caption="../report/fig_routing_regret.rst",
            category="Routers",
            subcategory="Routing simulation",
        ),
        pdf=f"{R}/figures/routing_regret.pdf",
    params:
        routers=config["routing_sim"]["routers"],
        seeds=config["routing_sim"]["seeds"],
        batch_size=config["budget"]["batch_prompts"],
        batch_order=config["budget"]["batch_order"],
        lambda0s=config["routing_sim"]["lambda0s"],
        device=config["device"],
    threads: config["threads"]
    log:
        f"{R}/logs/routing_sim.log",
    benchmark:
        f"{R}/benchmarks/rules/routing_sim.tsv"
    conda:
        "../../envs/rmroute.yaml"
    script:
        "../scripts/routing_sim.py"
