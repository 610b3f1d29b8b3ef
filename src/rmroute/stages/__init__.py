"""One function per workflow stage: read the stage's input files, call the library, write its
outputs atomically. The Snakemake scripts only unpack `snakemake.*` and call these, so every
stage can be run and tested without Snakemake.

One module per stage family: `policy` (data, SFT, rollouts, evaluation), `rewards` (RM pairs,
training, the pool, offline behaviour), `bsr` and `r2m` (the RM papers' measurements),
`offline` (BayesianRouter's offline router), `iterate` (one routed DPO iteration) and `seeds`
(several seeds' calls in one job). Their stages are importable from here as well.
"""

from rmroute.stages.bsr import bsr_groups, bsr_rm, bsr_tables
from rmroute.stages.iterate import build_labeler, run_iteration, train_iteration
from rmroute.stages.offline import HELD_OUT_SPLITS, offline_router_table, train_offline_router_stage
from rmroute.stages.policy import (
    band_margin,
    evaluate_policies,
    evaluate_policy,
    iteration_prompts,
    of_domains,
    prepare_data,
    rollout,
    train_sft_policy,
)
from rmroute.stages.r2m import R2M_TRAINED, R2M_VARIANTS, gold_pair_accuracy, r2m_loop_tables, r2m_probe, r2m_tables
from rmroute.stages.rewards import build_rm_pairs, fit_rm, load_pool, rm_behaviour, static_pool_rows, train_rm
from rmroute.stages.seeds import as_list, each_seed

__all__ = [
    "HELD_OUT_SPLITS", "R2M_TRAINED", "R2M_VARIANTS", "as_list", "band_margin", "bsr_groups", "bsr_rm", "bsr_tables", "build_labeler",
    "build_rm_pairs", "each_seed", "evaluate_policies", "evaluate_policy", "fit_rm", "gold_pair_accuracy", "iteration_prompts",
    "load_pool", "of_domains", "offline_router_table", "prepare_data", "r2m_loop_tables", "r2m_probe", "r2m_tables",
    "rm_behaviour", "rollout", "run_iteration", "static_pool_rows", "train_iteration", "train_offline_router_stage",
    "train_rm", "train_sft_policy",
]
