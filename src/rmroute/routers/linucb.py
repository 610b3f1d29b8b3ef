"""LinUCB over reward models, as LASeR uses it to pick one RM per batch (or per query).

The caller decides the granularity: one row (the batch's mean context) per batch, or one row
per query. Rewards arrive already rescaled (LASeR: q20/q80 quantiles of all rewards so far).
"""

from __future__ import annotations

import numpy as np

from rmroute.routers.base import (
    argmax_random_ties,
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
class LinUCBRouter:
    """Disjoint LinUCB: per arm k, `A_k = I`, `b_k = 0` at start, `θ_k = A_k⁻¹ b_k`, and the
    score `θ_kᵀc + α·sqrt(cᵀ A_k⁻¹ c)`; the arm with the highest score is picked.

    Args:
        n_arms: number of reward models in the pool.
        dim: context dimension.
        seed: seeds the generator that breaks ties (all arms tie at the start).
        alpha: weight of the confidence bonus; LASeR uses 0.1.
    """

    name = "linucb"
    context = "prompt"  # the current policy's prompt embedding (the batch's mean, per batch)
    granularity = "batch"
    granularities = ("batch", "query")
    learns = True
    extendable = True
    hyperparameters = {"alpha": Hyper(0.1, "weight of the confidence bonus (LASeR: 0.1)")}

    def __init__(self, n_arms: int, dim: int, seed: int = 0, alpha: float = 0.1):
        n_arms, dim = check_sizes(n_arms, dim)
        if not np.isfinite(alpha) or alpha < 0:
            raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
        self.n_arms, self.dim, self.alpha = n_arms, dim, float(alpha)
        self.rng = np.random.default_rng(seed)
        self.A = np.tile(np.eye(dim), (n_arms, 1, 1))
        self.b = np.zeros((n_arms, dim))
        self.A_inv = np.empty_like(self.A)
        self.theta = np.empty_like(self.b)
        self._refresh(range(n_arms))

    def _refresh(self, arms) -> None:
        # The inverse is recomputed from A itself after each update (never accumulated by rank-one
        # corrections), so it is exact, and a restored router derives bit-identical values.
        for k in arms:
            self.A_inv[k] = np.linalg.inv(self.A[k])
            self.theta[k] = self.A_inv[k] @ self.b[k]

    def scores(self, contexts: np.ndarray) -> np.ndarray:
        """Upper confidence bounds, (B, n_arms)."""
        contexts = check_contexts(contexts, self.dim)
        mean = contexts @ self.theta.T
        variance = ((contexts[None] @ self.A_inv) * contexts[None]).sum(axis=2).T  # cᵀ A_k⁻¹ c
        # Rounding can leave a tiny negative quadratic form for a tiny context.
        return mean + self.alpha * np.sqrt(np.maximum(variance, 0.0))

    def select(self, contexts: np.ndarray) -> np.ndarray:
        return argmax_random_ties(self.scores(contexts), self.rng)

    def update(self, contexts: np.ndarray, chosen: np.ndarray, rewards: np.ndarray) -> None:
        """`A_k += c cᵀ`, `b_k += r c` for every row, k its chosen arm."""
        contexts, chosen, rewards = check_update(contexts, chosen, rewards, self.n_arms, self.dim)
        touched = np.unique(chosen)
        for k in touched:
            rows = chosen == k
            self.A[k] += contexts[rows].T @ contexts[rows]
            self.b[k] += rewards[rows] @ contexts[rows]
        self._refresh(touched)

    def add_arms(self, n: int, prior_means: np.ndarray | None = None) -> None:
        """Extend the pool by `n` arms with LinUCB's initial state (A = I, b = 0); the learned
        arms keep theirs. Arms are disjoint, so this is the state the router would have had with
        the new arms present and never chosen."""
        self.A = np.concatenate([self.A, np.tile(np.eye(self.dim), (n, 1, 1))])
        self.b = np.concatenate([self.b, np.zeros((n, self.dim))])
        self.A_inv, self.theta = np.empty_like(self.A), np.empty_like(self.b)
        self.n_arms += n
        self._refresh(range(self.n_arms))

    def state_dict(self) -> dict:
        return {
            "router": self.name, "n_arms": self.n_arms, "dim": self.dim, "alpha": self.alpha,
            "A": self.A.copy(), "b": self.b.copy(), "rng": rng_state(self.rng),
        }

    def load_state_dict(self, state: dict) -> None:
        check_state_header(state, self.name, self.n_arms, self.dim)
        self.alpha = float(state["alpha"])
        self.A = state_array(state, "A", (self.n_arms, self.dim, self.dim))
        self.b = state_array(state, "b", (self.n_arms, self.dim))
        set_rng_state(self.rng, state["rng"])
        self._refresh(range(self.n_arms))
