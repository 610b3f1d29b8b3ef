"""Reward-model routers for iterative DPO: which RM labels each batch, query or candidate pair.

LinUCB and Exp3 (LASeR), Thompson sampling with an offline prior (BayesianRouter), the offline
router itself, fixed/random/oracle baselines, reward normalisers and all-RM ensemble combiners.
"""

from rmroute.routers.base import (
    ROUTER_NAMES,
    Router,
    load_state,
    make_router,
    save_state,
)
from rmroute.routers.ensemble import (
    COMBINER_NAMES,
    combine_mean,
    combine_min,
    combine_scores,
    combine_uncertainty,
    combine_vote,
    zscore_rows,
)
from rmroute.routers.exp3 import Exp3Router
from rmroute.routers.linucb import LinUCBRouter
from rmroute.routers.normalisers import (
    NORMALISER_NAMES,
    EMAZScore,
    QuantileNormaliser,
    make_normaliser,
)
from rmroute.routers.offline import (
    OfflineOnlyRouter,
    OfflineRouter,
    OfflineTrainConfig,
    arm_embeddings,
    balanced_row_weights,
    pair_vector,
    router_accuracy,
    router_bt_loss,
    train_offline_router,
)
from rmroute.routers.simple import OracleRouter, RandomRouter, SingleRouter
from rmroute.routers.thompson import ThompsonRouter

__all__ = [
    "COMBINER_NAMES", "NORMALISER_NAMES", "ROUTER_NAMES",
    "EMAZScore", "Exp3Router", "LinUCBRouter", "OfflineOnlyRouter", "OfflineRouter", "OfflineTrainConfig",
    "OracleRouter", "QuantileNormaliser", "RandomRouter", "Router", "SingleRouter", "ThompsonRouter",
    "arm_embeddings", "balanced_row_weights", "combine_mean", "combine_min", "combine_scores",
    "combine_uncertainty", "combine_vote", "load_state", "make_normaliser", "make_router", "pair_vector",
    "router_accuracy", "router_bt_loss", "save_state", "train_offline_router", "zscore_rows",
]
