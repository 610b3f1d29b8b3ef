# RMRoute: reward-model routing for iterative DPO.
#   snakemake --cores all                     embedded testbed default (config/config.yaml)
#   snakemake --cores all --configfile config/paper.yaml --profile profiles/slurm
from snakemake.utils import min_version

min_version("9.0")


# A --configfile replaces the default instead of being merged into it: a config names its own
# methods and RMs, and merging would silently add the default's.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


# `snakemake --report results/report.html`: this front page, then every table and figure with its
# caption (workflow/report/).
report: "workflow/report/workflow.rst"



include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/policy.smk"
include: "workflow/rules/rewards.smk"
include: "workflow/rules/bsr.smk"
include: "workflow/rules/offline_router.smk"
include: "workflow/rules/iterate.smk"
include: "workflow/rules/r2m.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/claims.smk"
include: "workflow/rules/figures.smk"


# Tables, figures and the decision-log merge take seconds and no model: under a cluster executor
# they run where Snakemake runs instead of waiting in the scheduler's queue.
localrules:
    all,
    sft_table,
    rm_accuracy,
    collect_decisions,
    policy_tables,
    router_tables,
    pair_quality,
    reward_validity,
    claims,
    rm_selection_share,
    rm_agreement,
    reward_margins,
    efficiency,


rule all:
    input:
        all_targets(),
    default_target: True
