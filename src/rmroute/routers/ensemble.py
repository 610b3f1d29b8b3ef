"""Score combiners for the ensemble baselines, which call every RM on every response.

Input: one prompt's group, `scores[k, j]` = RM k's score of response j, shape (K, N). Output: one
combined score per response, (N,). RMs are put on a common scale by z-scoring each RM's row.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rmroute.routers.base import check_finite, check_state_header
from rmroute.routers.registry import Hyper, register_router

COMBINER_NAMES = ("mean", "min", "uncertainty", "vote", "normalize_then_sum")


def _check_scores(scores: Any) -> np.ndarray:
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] < 1 or values.shape[1] < 2:
        raise ValueError(f"scores must have shape (K RMs >= 1, N responses >= 2), got {values.shape}")
    check_finite("scores", values)
    return values


def zscore_rows(scores: np.ndarray) -> np.ndarray:
    """Each RM's scores standardised over the group's responses; a constant row becomes zeros."""
    scores = _check_scores(scores)
    centred = scores - scores.mean(axis=1, keepdims=True)
    std = scores.std(axis=1, keepdims=True)
    return np.divide(centred, std, out=np.zeros_like(centred), where=std > 0)


def combine_mean(scores: np.ndarray) -> np.ndarray:
    """Mean over RMs of the z-scores: LASeR's RM-score ensemble."""
    return zscore_rows(scores).mean(axis=0)


def combine_min(scores: np.ndarray) -> np.ndarray:
    """Worst case over RMs of the z-scores."""
    return zscore_rows(scores).min(axis=0)


def combine_uncertainty(scores: np.ndarray, k: float = 1.0) -> np.ndarray:
    """Uncertainty-weighted ensemble: mean minus k standard deviations over RMs of the z-scores."""
    z = zscore_rows(scores)
    return z.mean(axis=0) - k * z.std(axis=0)


def combine_vote(scores: np.ndarray) -> np.ndarray:
    """Borda count: per RM, the share of the other responses it scores strictly lower (ties 0.5),
    averaged over RMs. With two responses this is the share of RMs preferring each: majority vote."""
    scores = _check_scores(scores)
    n = scores.shape[1]
    beats = (scores[:, :, None] > scores[:, None, :]).sum(axis=2)
    ties = (scores[:, :, None] == scores[:, None, :]).sum(axis=2) - 1  # a response ties itself
    return ((beats + 0.5 * ties) / (n - 1)).mean(axis=0)


def combine_normalize_then_sum(scores: np.ndarray) -> np.ndarray:
    """Sum over RMs of the z-scores: TRL's `normalize_then_sum` multi-reward aggregation within a
    prompt's group (GDPO); it ranks a group's responses as `mean` does. Under an online recipe
    (`trainer: grpo`) the ensemble of this name runs as TRL's own aggregation."""
    return zscore_rows(scores).sum(axis=0)


_COMBINERS = {"mean": combine_mean, "min": combine_min, "uncertainty": combine_uncertainty, "vote": combine_vote,
              "normalize_then_sum": combine_normalize_then_sum}


def combine_scores(name: str, scores: np.ndarray, **kwargs: Any) -> np.ndarray:
    """Dispatch by name: mean, min, uncertainty (k=), vote."""
    if name not in _COMBINERS:
        raise ValueError(f"unknown combiner {name!r}; valid names: {', '.join(COMBINER_NAMES)}")
    return _COMBINERS[name](scores, **kwargs)


@register_router
class EnsembleRouter:
    """The RM-score ensembles: every RM scores every response, and `combine` merges the scores
    (`combine_scores`). It picks no RM, so it has no state and never learns; the labeler asks it
    for the combined scores of each prompt's group."""

    name = "ensemble"
    granularity = "query"
    granularities = ("query", "batch")
    scores_every_rm = True
    picks_per_decision = False  # it combines every RM's scores
    extendable = True  # a new RM simply joins the combination
    hyperparameters = {
        "combine": Hyper("mean", f"how the z-scored RM scores combine: {' | '.join(COMBINER_NAMES)}"),
        "uncertainty_k": Hyper(1.0, "k of the uncertainty combination (mean - k std)"),
    }

    def __init__(self, n_arms: int, dim: int, seed: int = 0, combine: str = "mean", uncertainty_k: float = 1.0):
        if combine not in COMBINER_NAMES:
            raise ValueError(f"combine must be one of {COMBINER_NAMES}, got {combine!r}")
        self.n_arms, self.dim, self.combine, self.uncertainty_k = int(n_arms), int(dim), combine, float(uncertainty_k)

    def scores(self, matrix: np.ndarray) -> np.ndarray:
        """(K RMs, N responses) scores -> (N,) combined scores."""
        return combine_scores(self.combine, matrix, **({"k": self.uncertainty_k} if self.combine == "uncertainty" else {}))

    def add_arms(self, n: int, prior_means: np.ndarray | None = None) -> None:
        self.n_arms += int(n)

    def state_dict(self) -> dict:
        return {"router": self.name, "n_arms": self.n_arms, "dim": self.dim, "combine": self.combine}

    def load_state_dict(self, state: dict) -> None:
        check_state_header(state, self.name, self.n_arms, self.dim)
