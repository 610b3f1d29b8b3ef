"""Turn raw bandit rewards (negated or advantage-shaped DPO losses) into what the routers learn from.

The q20/q80 rescaling of both papers comes as each paper's released code applies it
(`quantile-laser`, `quantile-bayesian`) and as the per-call rule of earlier runs (`quantile`);
`ema-z` is a per-arm running z-score clipped to ±2. `scope="domain"` keeps one history per prompt domain.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from rmroute.routers.base import check_finite

NORMALISER_NAMES = ("quantile", "quantile-laser", "quantile-bayesian", "ema-z")
SCOPES = ("pooled", "domain")
TIE_RULES = ("half", "clip", "step")

# The rules of each named quantile normaliser (QuantileNormaliser's arguments).
QUANTILE_PRESETS = {
    # Earlier runs: a call's rewards join the history together; any tie of the quantiles maps to 0.5.
    "quantile": {"warmup": 0, "warmup_value": 0.5, "tie": "half", "per_reward": False},
    # LASeR (scripts/utils/linucb.py): one reward per update; the first is returned raw. Its code
    # divides 0 by 0 for a reward equal to both tied quantiles; that case maps to 0.5 here.
    "quantile-laser": {"warmup": 1, "warmup_value": None, "tie": "clip", "per_reward": True},
    # BayesianRouter (utils5.py): one reward per candidate pair, 0.5 until the history holds 20;
    # tied quantiles send a reward above them to 1, any other to 0.
    "quantile-bayesian": {"warmup": 19, "warmup_value": 0.5, "tie": "step", "per_reward": True},
}


def _check_raw(raw: Any) -> np.ndarray:
    values = np.asarray(raw, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"raw must be a 1-D array of rewards, got shape {values.shape}")
    check_finite("raw", values)
    return values


class QuantileNormaliser:
    """Maps a reward below the q_low quantile of the history to 0, above the q_high quantile to 1,
    linearly in between. The history is every reward seen so far, the current ones included.

    The history is pooled over arms and domains (`make_normaliser(..., scope="domain")` splits it
    by domain), so `arms` and `domains` are accepted for a common call signature and unused. The
    defaults are the `quantile` rules; `QUANTILE_PRESETS` holds each paper's.

    Args:
        q_low: lower quantile; 0.2 in both papers.
        q_high: upper quantile; 0.8 in both papers.
        warmup: the first `warmup` rewards ever seen are not rescaled.
        warmup_value: what a warm-up reward maps to; None returns it raw.
        tie: the rule when the two quantiles coincide: `half` = every reward maps to 0.5; `clip` =
            below 0, above 1, equal 0.5; `step` = above 1, otherwise 0.
        per_reward: True = the rewards of a call join the history one at a time, each rescaled
            before the next joins (reward i sees rewards 0..i of the call); False = all join,
            then each is rescaled against the same quantiles.
    """

    name = "quantile"

    def __init__(self, q_low: float = 0.2, q_high: float = 0.8, *, warmup: int = 0, warmup_value: float | None = 0.5,
                 tie: str = "half", per_reward: bool = False):
        if not 0 <= q_low < q_high <= 1:
            raise ValueError(f"need 0 <= q_low < q_high <= 1, got q_low={q_low!r}, q_high={q_high!r}")
        if not isinstance(warmup, (int, np.integer)) or isinstance(warmup, bool) or warmup < 0:
            raise ValueError(f"warmup must be an integer >= 0, got {warmup!r}")
        if warmup_value is not None and not np.isfinite(warmup_value):
            raise ValueError(f"warmup_value must be a finite number or None (raw), got {warmup_value!r}")
        if tie not in TIE_RULES:
            raise ValueError(f"tie must be one of {TIE_RULES}, got {tie!r}")
        self.q_low, self.q_high = float(q_low), float(q_high)
        self.warmup, self.tie, self.per_reward = int(warmup), tie, bool(per_reward)
        self.warmup_value = None if warmup_value is None else float(warmup_value)
        self.history: list[float] = []

    def __call__(self, raw: np.ndarray, arms: np.ndarray | None = None, domains: list | None = None) -> np.ndarray:
        values = _check_raw(raw)
        out = np.empty_like(values)
        if self.per_reward:
            for i, value in enumerate(values):
                self.history.append(float(value))
                out[i] = self._rescale(value, len(self.history) - 1, None)
            return out
        first = len(self.history)
        self.history.extend(values.tolist())
        rescaled = len(self.history) > self.warmup  # some reward of the call is past the warm-up
        quantiles = np.quantile(self.history, [self.q_low, self.q_high]) if rescaled else None
        for i, value in enumerate(values):
            out[i] = self._rescale(value, first + i, quantiles)
        return out

    def _rescale(self, value: float, position: int, quantiles: np.ndarray | None) -> float:
        """`value`, the reward at `position` of the history, rescaled against `quantiles` (taken
        from the history now when None)."""
        if position < self.warmup:
            return value if self.warmup_value is None else self.warmup_value
        low, high = np.quantile(self.history, [self.q_low, self.q_high]) if quantiles is None else quantiles
        if high > low:
            return float(np.clip((value - low) / (high - low), 0.0, 1.0))
        if self.tie == "half":
            return 0.5
        if self.tie == "step":
            return 1.0 if value > high else 0.0
        # clip: LASeR's code divides 0 by 0 for a reward equal to both quantiles; 0.5 is our guard.
        return 1.0 if value > high else 0.0 if value < low else 0.5

    def state_dict(self) -> dict:
        return {
            "normaliser": self.name, "q_low": self.q_low, "q_high": self.q_high, "warmup": self.warmup,
            "warmup_value": self.warmup_value, "tie": self.tie, "per_reward": self.per_reward,
            "history": np.array(self.history, dtype=np.float64),
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("normaliser") != self.name:
            raise ValueError(f"state['normaliser'] is {state.get('normaliser')!r}, this normaliser is {self.name!r}")
        # A state saved before the rules were options holds the `quantile` rules.
        rules = {**QUANTILE_PRESETS["quantile"], **{k: state[k] for k in QUANTILE_PRESETS["quantile"] if k in state}}
        self.q_low, self.q_high = float(state["q_low"]), float(state["q_high"])
        self.warmup, self.tie, self.per_reward = int(rules["warmup"]), rules["tie"], bool(rules["per_reward"])
        self.warmup_value = None if rules["warmup_value"] is None else float(rules["warmup_value"])
        self.history = np.asarray(state["history"], dtype=np.float64).tolist()


class EMAZScore:
    """Per-arm z-score against an exponential moving mean and variance, clipped to ±clip.

    Rows are taken in order: each is standardised against its arm's statistics before it, then
    folded into them, so the first reward an arm ever gets maps to 0. The statistics are pooled
    over domains, so `domains` is accepted for a common call signature and unused.

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

    def __call__(self, raw: np.ndarray, arms: np.ndarray, domains: list | None = None) -> np.ndarray:
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


class PerDomain:
    """One normaliser per prompt domain: each reward is rescaled against its own domain's history
    only, so the rescaled value says how good the reward is for that domain rather than which
    domain it came from. A call's rewards keep their order within each domain.

    Args:
        make: builds the normaliser of a domain the first time one of its rewards arrives.
    """

    name = "per-domain"

    def __init__(self, make: Callable[[], QuantileNormaliser | EMAZScore]):
        self.make = make
        self.parts: dict[str, QuantileNormaliser | EMAZScore] = {}

    def __call__(self, raw: np.ndarray, arms: np.ndarray | None = None, domains: list | None = None) -> np.ndarray:
        values = _check_raw(raw)
        if domains is None or len(domains) != values.size:
            raise ValueError(f"domains must name the domain of each of the {values.size} rewards, got {domains!r}")
        for domain in domains:
            if not isinstance(domain, str) or not domain:
                raise ValueError(f"domains must be non-empty strings (each group's `domain`), got {domain!r}")
        arms = None if arms is None else np.asarray(arms)
        out = np.empty_like(values)
        for domain in dict.fromkeys(domains):
            rows = np.array([i for i, d in enumerate(domains) if d == domain])
            if domain not in self.parts:
                self.parts[domain] = self.make()
            out[rows] = self.parts[domain](values[rows], None if arms is None else arms[rows])
        return out

    def state_dict(self) -> dict:
        return {"normaliser": self.name, "domains": {d: part.state_dict() for d, part in self.parts.items()}}

    def load_state_dict(self, state: dict) -> None:
        if state.get("normaliser") != self.name:
            raise ValueError(f"state['normaliser'] is {state.get('normaliser')!r}: saved with a pooled history, "
                             f"not per domain ({self.name!r})")
        self.parts = {}
        for domain, part_state in state["domains"].items():
            self.parts[domain] = self.make()
            self.parts[domain].load_state_dict(part_state)


def make_normaliser(name: str, scope: str = "pooled", **kwargs: Any) -> QuantileNormaliser | EMAZScore | PerDomain:
    """`quantile`, `quantile-laser`, `quantile-bayesian` (the rules of `QUANTILE_PRESETS`; q_low,
    q_high and any rule may be given) or `ema-z` (n_arms, decay, clip). `scope` is `pooled` (one
    history) or `domain` (one per prompt domain: calls then pass `domains`)."""
    if name not in NORMALISER_NAMES:
        raise ValueError(f"unknown normaliser {name!r}; valid names: {', '.join(NORMALISER_NAMES)}")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    if scope == "domain":
        make_normaliser(name, **kwargs)  # bad arguments fail now, not at the first reward
        return PerDomain(lambda: make_normaliser(name, **kwargs))
    if name == "ema-z":
        return EMAZScore(**kwargs)
    return QuantileNormaliser(**{**QUANTILE_PRESETS[name], **kwargs})
