"""Baseline routers that do not learn: one fixed RM, a uniformly random RM, and the gold oracle.

They follow the `Router` protocol so the training loop treats them like the bandits.
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
)
from rmroute.routers.registry import register_router


@register_router
class SingleRouter:
    """Always picks `arm`: the single-RM baselines ("best single RM" is this with the best arm)."""

    name = "single"
    context = "none"
    picks_per_decision = False  # always the same RM
    granularity = "batch"
    granularities = ("batch", "query", "pair")

    @classmethod
    def from_method(cls, method, n_arms: int, dim: int, seed: int, prior=None) -> SingleRouter:
        return cls(n_arms, dim, seed, arm=method.arm)  # the pool index of the method's `rm`

    def __init__(self, n_arms: int, dim: int, seed: int = 0, *, arm: int):
        n_arms, dim = check_sizes(n_arms, dim)
        if not isinstance(arm, (int, np.integer)) or not 0 <= arm < n_arms:
            raise ValueError(f"arm must be an integer in [0, {n_arms}), got {arm!r}")
        self.n_arms, self.dim, self.arm = n_arms, dim, int(arm)

    def select(self, contexts: np.ndarray) -> np.ndarray:
        contexts = check_contexts(contexts, self.dim)
        return np.full(len(contexts), self.arm, dtype=np.int64)

    def update(self, contexts: np.ndarray, chosen: np.ndarray, rewards: np.ndarray) -> None:
        check_update(contexts, chosen, rewards, self.n_arms, self.dim)

    def state_dict(self) -> dict:
        return {"router": self.name, "n_arms": self.n_arms, "dim": self.dim, "arm": self.arm}

    def load_state_dict(self, state: dict) -> None:
        check_state_header(state, self.name, self.n_arms, self.dim)
        self.arm = int(state["arm"])


@register_router
class RandomRouter:
    """Picks an RM uniformly at random per row from its own seeded generator."""

    name = "random"
    context = "none"
    granularity = "batch"
    granularities = ("batch", "query", "pair")
    extendable = True

    def __init__(self, n_arms: int, dim: int, seed: int = 0):
        n_arms, dim = check_sizes(n_arms, dim)
        self.n_arms, self.dim = n_arms, dim
        self.rng = np.random.default_rng(seed)

    def select(self, contexts: np.ndarray) -> np.ndarray:
        contexts = check_contexts(contexts, self.dim)
        return self.rng.integers(0, self.n_arms, size=len(contexts)).astype(np.int64)

    def update(self, contexts: np.ndarray, chosen: np.ndarray, rewards: np.ndarray) -> None:
        check_update(contexts, chosen, rewards, self.n_arms, self.dim)

    def add_arms(self, n: int, prior_means: np.ndarray | None = None) -> None:
        """Extend the pool by `n` arms, drawn uniformly from the next decision on."""
        self.n_arms += int(n)

    def state_dict(self) -> dict:
        return {"router": self.name, "n_arms": self.n_arms, "dim": self.dim, "rng": rng_state(self.rng)}

    def load_state_dict(self, state: dict) -> None:
        check_state_header(state, self.name, self.n_arms, self.dim)
        set_rng_state(self.rng, state["rng"])


@register_router
class OracleRouter(RandomRouter):
    """Picks an RM that is right on each row, from gold labels: an upper bound for analysis only.

    `correct` (B, n_arms) holds each RM's gold quality on each row (0/1 or a score). Gold is used
    by this router alone and only in the controlled simulation; it never reaches the learning
    routers, their rewards or their updates.
    """

    name = "oracle"  # construction, update and state as RandomRouter: a seeded generator, no learning
    granularity = "query"
    granularities = ("query", "batch")
    scores_every_rm = True  # it sees every RM's scores and gold: the pipeline's oracle is this class
    needs_gold = True

    def select(self, contexts: np.ndarray, correct: np.ndarray | None = None) -> np.ndarray:
        contexts = check_contexts(contexts, self.dim)
        if correct is None:
            raise ValueError("correct is required: the oracle picks from gold per-RM quality")
        gold = check_contexts(correct, self.n_arms, name="correct")
        if len(gold) != len(contexts):
            raise ValueError(f"correct must have {len(contexts)} rows like contexts, got {len(gold)}")
        # Random tie-breaking: when several RMs are right, no one RM is favoured.
        return argmax_random_ties(gold, self.rng)

