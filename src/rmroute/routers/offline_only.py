"""The offline router alone, as a router: BayesianRouter's "without online stage" ablation.

Kept apart from rmroute.routers.offline (which trains the offline router with torch) so that
the router registry loads without torch.
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
from rmroute.routers.registry import register_router


@register_router
class OfflineOnlyRouter:
    """The offline router alone (the "without online stage" ablation): `argmax_n ⟨x, E[n]⟩`.

    `x` is the pair vector h; ties are broken at random by the seeded generator; no learning.
    """

    name = "offline-only"
    context = "pair"
    granularity = "pair"
    recipe = "bayesian"

    @classmethod
    def from_method(cls, method, n_arms: int, dim: int, seed: int, prior=None) -> OfflineOnlyRouter:
        return cls(n_arms, dim, seed, arm_embeddings=prior)

    def __init__(self, n_arms: int, dim: int, seed: int = 0, *, arm_embeddings: np.ndarray):
        n_arms, dim = check_sizes(n_arms, dim)
        self.n_arms, self.dim = n_arms, dim
        self.arm_embeddings = check_contexts(arm_embeddings, dim, name="arm_embeddings")
        if self.arm_embeddings.shape[0] != n_arms:
            raise ValueError(f"arm_embeddings must have shape ({n_arms}, {dim}), got {self.arm_embeddings.shape}")
        self.rng = np.random.default_rng(seed)

    def select(self, contexts: np.ndarray) -> np.ndarray:
        return argmax_random_ties(check_contexts(contexts, self.dim) @ self.arm_embeddings.T, self.rng)

    def update(self, contexts: np.ndarray, chosen: np.ndarray, rewards: np.ndarray) -> None:
        check_update(contexts, chosen, rewards, self.n_arms, self.dim)

    def state_dict(self) -> dict:
        return {
            "router": self.name, "n_arms": self.n_arms, "dim": self.dim,
            "arm_embeddings": self.arm_embeddings.copy(), "rng": rng_state(self.rng),
        }

    def load_state_dict(self, state: dict) -> None:
        check_state_header(state, self.name, self.n_arms, self.dim)
        self.arm_embeddings = state_array(state, "arm_embeddings", (self.n_arms, self.dim))
        set_rng_state(self.rng, state["rng"])
