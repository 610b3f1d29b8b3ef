"""Exp3 over reward models: LASeR's context-free variant of its LinUCB router.

Contexts are checked and then ignored; rewards must already lie in [0, 1] (quantile-rescaled).
"""

from __future__ import annotations

import numpy as np

from rmroute.routers.base import (
    check_contexts,
    check_sizes,
    check_state_header,
    check_update,
    rng_state,
    set_rng_state,
    state_array,
)
from rmroute.routers.registry import Hyper, register_router


@register_router
class Exp3Router:
    """Exp3 (Auer et al. 2002): `p_k = (1−γ)·w_k/Σw + γ/K`; after reward r on arm k,
    `w_k ← w_k·exp(γ·(r/p_k)/K)`.

    Args:
        n_arms: number of reward models in the pool.
        dim: context dimension (checked, not used).
        seed: seeds the generator that draws arms.
        gamma: share of uniform exploration, in (0, 1]; 0.1 here.
    """

    name = "exp3"
    context = "none"
    granularity = "batch"
    granularities = ("batch", "query")
    learns = True
    hyperparameters = {"gamma": Hyper(0.1, "share of uniform exploration, in (0, 1]")}

    def __init__(self, n_arms: int, dim: int, seed: int = 0, gamma: float = 0.1):
        n_arms, dim = check_sizes(n_arms, dim)
        if not 0 < gamma <= 1:
            raise ValueError(f"gamma must lie in (0, 1], got {gamma!r}")
        self.n_arms, self.dim, self.gamma = n_arms, dim, float(gamma)
        self.rng = np.random.default_rng(seed)
        # Log-weights, shifted so the largest is 0: the weights themselves overflow on long runs.
        self.log_weights = np.zeros(n_arms)

    def probabilities(self) -> np.ndarray:
        weights = np.exp(self.log_weights - self.log_weights.max())
        return (1 - self.gamma) * weights / weights.sum() + self.gamma / self.n_arms

    def select(self, contexts: np.ndarray) -> np.ndarray:
        contexts = check_contexts(contexts, self.dim)
        return self.rng.choice(self.n_arms, size=len(contexts), p=self.probabilities()).astype(np.int64)

    def update(self, contexts: np.ndarray, chosen: np.ndarray, rewards: np.ndarray) -> None:
        contexts, chosen, rewards = check_update(contexts, chosen, rewards, self.n_arms, self.dim)
        if rewards.size and (rewards.min() < 0 or rewards.max() > 1):
            bad = rewards[(rewards < 0) | (rewards > 1)][0]
            raise ValueError(f"rewards must lie in [0, 1] for Exp3, found {bad!r}; use the quantile normaliser")
        # All rows share the probabilities of the select call that chose them, i.e. those before
        # this update; importance weights must use the probability the arm was drawn with.
        p = self.probabilities()
        np.add.at(self.log_weights, chosen, self.gamma * rewards / p[chosen] / self.n_arms)
        self.log_weights -= self.log_weights.max()

    def state_dict(self) -> dict:
        return {
            "router": self.name, "n_arms": self.n_arms, "dim": self.dim, "gamma": self.gamma,
            "log_weights": self.log_weights.copy(), "rng": rng_state(self.rng),
        }

    def load_state_dict(self, state: dict) -> None:
        check_state_header(state, self.name, self.n_arms, self.dim)
        self.gamma = float(state["gamma"])
        self.log_weights = state_array(state, "log_weights", (self.n_arms,))
        set_rng_state(self.rng, state["rng"])
