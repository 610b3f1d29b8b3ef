"""Reward-model routers for iterative DPO: which RM labels each batch, query or candidate pair.

LinUCB and Exp3 (LASeR), Thompson sampling with an offline prior (BayesianRouter), the offline
router itself, fixed/random/oracle baselines, reward normalisers and all-RM ensemble combiners.
"""

from typing import Any

from rmroute.routers.base import Router, load_state, save_state
from rmroute.routers.ensemble import (
    COMBINER_NAMES,
    EnsembleRouter,
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
from rmroute.routers.offline_only import OfflineOnlyRouter
from rmroute.routers.registry import Hyper, load_plugins, register_router, router_class, router_names, routers_where
from rmroute.routers.simple import OracleRouter, RandomRouter, SingleRouter
from rmroute.routers.thompson import ThompsonRouter

# The offline router's training needs torch: its names load on first use, so that the registry
# (and the config that consults it) stays light.
_OFFLINE = ("OfflineRouter", "OfflineTrainConfig", "arm_embeddings", "balanced_row_weights", "pair_vector",
            "router_accuracy", "router_bt_loss", "train_offline_router", "validation_split")


def __getattr__(name: str):
    if name in _OFFLINE:
        from rmroute.routers import offline

        return getattr(offline, name)
    raise AttributeError(f"module 'rmroute.routers' has no attribute {name!r}")


# The built-in routers that pick an RM (the registry also holds the ensemble, which picks none).
ROUTER_CLASSES = {name: router_class(name) for name in router_names() if callable(getattr(router_class(name), "select", None))}
ROUTER_NAMES = tuple(ROUTER_CLASSES)


def make_router(name: str, n_arms: int, dim: int, seed: int = 0, **kwargs: Any) -> Router:
    """Build a registered router by name: single (arm=), random, linucb (alpha=), exp3 (gamma=),
    thompson (prior_means=, lambda0=, noise_var=), offline-only (arm_embeddings=), oracle, or a
    plugin's. Extra keyword arguments are the router's hyper-parameters.
    `rmroute.methods.build_router` builds one from a configured method."""
    cls = router_class(name, "router")
    if not callable(getattr(cls, "select", None)):
        raise ValueError(f"router {name!r} picks no RM (it combines every RM's scores); it has nothing to build")
    return cls(n_arms, dim, seed, **kwargs)


__all__ = [
    "COMBINER_NAMES", "EnsembleRouter", "Hyper", "NORMALISER_NAMES", "QUANTILE_PRESETS", "ROUTER_CLASSES", "ROUTER_NAMES",
    "EMAZScore", "Exp3Router", "LinUCBRouter", "OfflineOnlyRouter", "OfflineRouter", "OfflineTrainConfig",
    "OracleRouter", "PerDomain", "QuantileNormaliser", "RandomRouter", "Router", "SingleRouter", "ThompsonRouter",
    "arm_embeddings", "balanced_row_weights", "combine_mean", "combine_min", "combine_scores",
    "combine_uncertainty", "combine_vote", "load_plugins", "load_state", "make_normaliser", "make_router", "pair_vector",
    "router_accuracy", "router_bt_loss", "register_router", "router_class", "router_names", "routers_where", "save_state", "train_offline_router", "validation_split", "zscore_rows",
]
