"""Reward-model routers for iterative DPO: which RM labels each batch, query or candidate pair.

LinUCB and Exp3 (LASeR), Thompson sampling with an offline prior (BayesianRouter), the offline
router itself, fixed/random/oracle baselines, reward normalisers and all-RM ensemble combiners.
"""

from typing import Any

from rmroute.routers.base import Router, load_state, save_state
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
    QUANTILE_PRESETS,
    EMAZScore,
    PerDomain,
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
    validation_split,
)
from rmroute.routers.simple import OracleRouter, RandomRouter, SingleRouter
from rmroute.routers.thompson import ThompsonRouter

ROUTER_CLASSES = {
    "single": SingleRouter,
    "random": RandomRouter,
    "linucb": LinUCBRouter,
    "exp3": Exp3Router,
    "thompson": ThompsonRouter,
    "offline-only": OfflineOnlyRouter,
    "oracle": OracleRouter,
}
ROUTER_NAMES = tuple(ROUTER_CLASSES)


def make_router(name: str, n_arms: int, dim: int, seed: int = 0, **kwargs: Any) -> Router:
    """Build a router by name: single (arm=), random, linucb (alpha=), exp3 (gamma=), thompson
    (prior_means=, lambda0=, noise_var=), offline-only (arm_embeddings=), oracle. Extra keyword
    arguments are the router's hyper-parameters. `rmroute.methods.build_router` builds one from a
    configured method."""
    if name not in ROUTER_CLASSES:
        raise ValueError(f"unknown router {name!r}; valid names: {', '.join(ROUTER_NAMES)}")
    return ROUTER_CLASSES[name](n_arms, dim, seed, **kwargs)


__all__ = [
    "COMBINER_NAMES", "NORMALISER_NAMES", "QUANTILE_PRESETS", "ROUTER_CLASSES", "ROUTER_NAMES",
    "EMAZScore", "Exp3Router", "LinUCBRouter", "OfflineOnlyRouter", "OfflineRouter", "OfflineTrainConfig",
    "OracleRouter", "PerDomain", "QuantileNormaliser", "RandomRouter", "Router", "SingleRouter", "ThompsonRouter",
    "arm_embeddings", "balanced_row_weights", "combine_mean", "combine_min", "combine_scores",
    "combine_uncertainty", "combine_vote", "load_state", "make_normaliser", "make_router", "pair_vector",
    "router_accuracy", "router_bt_loss", "save_state", "train_offline_router", "validation_split", "zscore_rows",
]
