"""Turn raw bandit rewards (negated or advantage-shaped DPO losses) into what the routers learn from.

`quantile` is the rescaling of both papers (q20/q80 of all rewards so far, current included);
`ema-z` is BayesianRouter's variant, a per-arm running z-score clipped to ±2.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rmroute.routers.base import check_finite

NORMALISER_NAMES = ("quantile", "ema-z")


def _check_raw(raw: Any) -> np.ndarray:
    values = np.asarray(raw, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"raw must be a 1-D array of rewards, got shape {values.shape}")
    check_finite("raw", values)
    return values


class QuantileNormaliser:
    """Maps a reward below the q_low quantile of all rewards seen so far to 0, above the q_high
    quantile to 1, linearly in between; 0.5 when the two quantiles coincide.

    The current rewards join the history before the quantiles are taken, as in LASeR. The
    history is pooled over arms, so `arms` is accepted for a common call signature and unused.

    Args:
        q_low: lower quantile; 0.2 in both papers.
        q_high: upper quantile; 0.8 in both papers.
    """

    name = "quantile"

    def __init__(self, q_low: float = 0.2, q_high: float = 0.8):
        if not 0 <= q_low < q_high <= 1:
            raise ValueError(f"need 0 <= q_low < q_high <= 1, got q_low={q_low!r}, q_high={q_high!r}")
        self.q_low, self.q_high = float(q_low), float(q_high)
        self.history: list[float] = []

    def __call__(self, raw: np.ndarray, arms: np.ndarray | None = None) -> np.ndarray:
        values = _check_raw(raw)
        self.history.extend(values.tolist())
        if not values.size:
            return values
        low, high = np.quantile(self.history, [self.q_low, self.q_high])
        if high == low:
            return np.full_like(values, 0.5)
        return np.clip((values - low) / (high - low), 0.0, 1.0)

    def state_dict(self) -> dict:
        return {
            "normaliser": self.name, "q_low": self.q_low, "q_high": self.q_high,
            "history": np.array(self.history, dtype=np.float64),
        }

    def load_state_dict(self, state: dict) -> None:
        self.q_low, self.q_high = float(state["q_low"]), float(state["q_high"])
        self.history = np.asarray(state["history"], dtype=np.float64).tolist()


class EMAZScore:
    """Per-arm z-score against an exponential moving mean and variance, clipped to ±clip.

    Rows are taken in order: each is standardised against its arm's statistics before it, then
    folded into them, so the first reward an arm ever gets maps to 0.

    Args:
        n_arms: number of reward models in the pool.
        decay: weight kept by the old statistics at each step; 0.9 here.
        clip: bound on |z|; the paper's variant uses 2.
    """

    name = "ema-z"

    def __init__(self, n_arms: int, decay: float = 0.9, clip: float = 2.0):
        if not isinstance(n_arms, (int, np.integer)) or n_arms < 1:
            raise ValueError(f"n_arms must be a positive integer, got {n_arms!r}")
        if not 0 < decay < 1:
            raise ValueError(f"decay must lie in (0, 1), got {decay!r}")
        if not clip > 0:
            raise ValueError(f"clip must be > 0, got {clip!r}")
        self.n_arms, self.decay, self.clip = n_arms, float(decay), float(clip)
        self.mean = np.zeros(n_arms)
        self.var = np.zeros(n_arms)
        self.count = np.zeros(n_arms, dtype=np.int64)

    def __call__(self, raw: np.ndarray, arms: np.ndarray) -> np.ndarray:
        values = _check_raw(raw)
        arms = np.asarray(arms)
        if arms.shape != values.shape:
            raise ValueError(f"arms must have shape {values.shape} like raw, got {arms.shape}")
        if arms.size and (not np.issubdtype(arms.dtype, np.integer) or arms.min() < 0 or arms.max() >= self.n_arms):
            raise ValueError(f"arms must be integers in [0, {self.n_arms}), got {arms.tolist()}")
        z = np.zeros_like(values)
        for i, (value, arm) in enumerate(zip(values, arms)):
            if self.count[arm] == 0:
                self.mean[arm] = value
            else:
                delta = value - self.mean[arm]
                # A zero variance (all rewards so far equal) sends any different reward to ±clip.
                std = max(np.sqrt(self.var[arm]), 1e-12)
                z[i] = np.clip(delta / std, -self.clip, self.clip) if delta else 0.0
                self.mean[arm] += (1 - self.decay) * delta
                self.var[arm] = self.decay * (self.var[arm] + (1 - self.decay) * delta**2)
            self.count[arm] += 1
        return z

    def state_dict(self) -> dict:
        return {
            "normaliser": self.name, "n_arms": self.n_arms, "decay": self.decay, "clip": self.clip,
            "mean": self.mean.copy(), "var": self.var.copy(), "count": self.count.copy(),
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("n_arms") != self.n_arms:
            raise ValueError(f"state['n_arms'] is {state.get('n_arms')!r}, this normaliser has n_arms={self.n_arms}")
        self.decay, self.clip = float(state["decay"]), float(state["clip"])
        self.mean = np.array(state["mean"], dtype=np.float64)
        self.var = np.array(state["var"], dtype=np.float64)
        self.count = np.array(state["count"], dtype=np.int64)


def make_normaliser(name: str, **kwargs: Any) -> QuantileNormaliser | EMAZScore:
    """`quantile` (q_low, q_high) or `ema-z` (n_arms, decay, clip)."""
    if name == "quantile":
        return QuantileNormaliser(**kwargs)
    if name == "ema-z":
        return EMAZScore(**kwargs)
    raise ValueError(f"unknown normaliser {name!r}; valid names: {', '.join(NORMALISER_NAMES)}")
