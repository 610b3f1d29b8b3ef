"""BayesianRouter's online stage: Thompson sampling over RMs with linear-Gaussian posteriors.

The prior mean of each RM is its embedding from the offline router (the prior injection);
`prior_means=None` gives the zero-prior ablation. One row per candidate pair.
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
class ThompsonRouter:
    """Per RM n a posterior `w_n ~ N(μ_n, Λ_n⁻¹)` kept in information form (Λ_n, b_n).

    Prior `Λ_n = λ0·I`, `μ_n = prior_means[n]`, `b_n = λ0·μ_n`. Selection draws an independent
    `w̃_n` per row and per arm and picks `argmax_n w̃_nᵀx`. An update on arm n with context x and
    reward r does `Λ_n += x xᵀ/σ²`, `b_n += r·x/σ²`, `μ_n = Λ_n⁻¹ b_n`.

    Args:
        n_arms: number of reward models in the pool.
        dim: context dimension (the offline router's pair-vector size).
        seed: seeds the generator for posterior draws and ties.
        prior_means: (n_arms, dim) prior means, the offline RM embeddings; None = zeros (ablation).
        lambda0: prior precision λ0; the paper uses 1 (or 50).
        noise_var: observation noise σ²; the paper uses 1.
    """

    name = "thompson"
    context = "pair"  # the offline router's candidate-pair vectors
    granularity = "pair"
    learns = True
    extendable = True
    recipe = "bayesian"
    hyperparameters = {
        "lambda0": Hyper(1.0, "prior precision (BayesianRouter: 1)"),
        "sigma2": Hyper(1.0, "observation noise variance"),
        "prior": Hyper("offline", "prior means: the offline RM embeddings (offline) or zero (ablation)"),
    }

    @classmethod
    def from_method(cls, method, n_arms: int, dim: int, seed: int, prior=None) -> ThompsonRouter:
        return cls(n_arms, dim, seed, prior_means=prior if method.prior == "offline" else None,
                   lambda0=method.lambda0, noise_var=method.sigma2)

    def __init__(
        self,
        n_arms: int,
        dim: int,
        seed: int = 0,
        prior_means: np.ndarray | None = None,
        lambda0: float = 1.0,
        noise_var: float = 1.0,
    ):
        n_arms, dim = check_sizes(n_arms, dim)
        for field, value in (("lambda0", lambda0), ("noise_var", noise_var)):
            if not np.isfinite(value) or value <= 0:
                raise ValueError(f"{field} must be a finite number > 0, got {value!r}")
        if prior_means is None:
            prior_means = np.zeros((n_arms, dim))
        self.n_arms, self.dim = n_arms, dim
        self.lambda0, self.noise_var = float(lambda0), float(noise_var)
        self.prior_means = check_contexts(prior_means, dim, name="prior_means")
        if self.prior_means.shape[0] != n_arms:
            raise ValueError(f"prior_means must have shape ({n_arms}, {dim}), got {self.prior_means.shape}")
        self.rng = np.random.default_rng(seed)
        self.precision = np.tile(self.lambda0 * np.eye(dim), (n_arms, 1, 1))
        self.b = self.lambda0 * self.prior_means
        self.mean = np.empty_like(self.b)
        self.cov_root = np.empty_like(self.precision)
        self._refresh(range(n_arms))

    def _refresh(self, arms) -> None:
        for n in arms:
            # A square root of the covariance from the Cholesky factor of the precision,
            # Λ = U Uᵀ ⇒ Λ⁻¹ = U⁻ᵀ U⁻¹, so w = μ + U⁻ᵀ z ~ N(μ, Λ⁻¹). This never forms Λ⁻¹, whose
            # own Cholesky can fail in floating point once Λ grows large.
            lower = np.linalg.cholesky(self.precision[n])
            self.cov_root[n] = np.linalg.inv(lower).T
            self.mean[n] = np.linalg.solve(self.precision[n], self.b[n])

    def mean_scores(self, contexts: np.ndarray) -> np.ndarray:
        """Posterior-mean scores `μ_nᵀx`, (B, n_arms)."""
        return check_contexts(contexts, self.dim) @ self.mean.T

    def greedy_select(self, contexts: np.ndarray) -> np.ndarray:
        """Argmax of the posterior means (analysis only; uses the generator for ties)."""
        return argmax_random_ties(self.mean_scores(contexts), self.rng)

    def select(self, contexts: np.ndarray) -> np.ndarray:
        contexts = check_contexts(contexts, self.dim)
        noise = self.rng.standard_normal((len(contexts), self.n_arms, self.dim))
        # w̃_nᵀx = μ_nᵀx + (U⁻ᵀz)ᵀx, computed without materialising every draw w̃.
        spread = (contexts[None] @ self.cov_root).transpose(1, 0, 2)  # [b, n] holds xᵀU⁻ᵀ
        sampled = contexts @ self.mean.T + (spread * noise).sum(axis=2)
        return argmax_random_ties(sampled, self.rng)

    def update(self, contexts: np.ndarray, chosen: np.ndarray, rewards: np.ndarray) -> None:
        contexts, chosen, rewards = check_update(contexts, chosen, rewards, self.n_arms, self.dim)
        touched = np.unique(chosen)
        for n in touched:
            rows = chosen == n
            self.precision[n] += contexts[rows].T @ contexts[rows] / self.noise_var
            self.b[n] += rewards[rows] @ contexts[rows] / self.noise_var
        self._refresh(touched)

    def add_arms(self, n: int, prior_means: np.ndarray | None = None) -> None:
        """Extend the pool by `n` arms with priors N(μ, λ0⁻¹I), μ the rows of `prior_means`
        (None = zeros, the zero-prior ablation); the learned arms keep their posteriors."""
        prior_means = np.zeros((n, self.dim)) if prior_means is None else prior_means
        prior_means = check_contexts(prior_means, self.dim, name="prior_means")
        if len(prior_means) != n:
            raise ValueError(f"prior_means must have shape ({n}, {self.dim}), got {prior_means.shape}")
        self.prior_means = np.concatenate([self.prior_means, prior_means])
        self.precision = np.concatenate([self.precision, np.tile(self.lambda0 * np.eye(self.dim), (n, 1, 1))])
        self.b = np.concatenate([self.b, self.lambda0 * prior_means])
        self.mean, self.cov_root = np.empty_like(self.b), np.empty_like(self.precision)
        self.n_arms += n
        self._refresh(range(self.n_arms))

    def state_dict(self) -> dict:
        return {
            "router": self.name, "n_arms": self.n_arms, "dim": self.dim,
            "lambda0": self.lambda0, "noise_var": self.noise_var,
            "prior_means": self.prior_means.copy(), "precision": self.precision.copy(),
            "b": self.b.copy(), "rng": rng_state(self.rng),
        }

    def load_state_dict(self, state: dict) -> None:
        check_state_header(state, self.name, self.n_arms, self.dim)
        self.lambda0, self.noise_var = float(state["lambda0"]), float(state["noise_var"])
        self.prior_means = state_array(state, "prior_means", (self.n_arms, self.dim))
        self.precision = state_array(state, "precision", (self.n_arms, self.dim, self.dim))
        self.b = state_array(state, "b", (self.n_arms, self.dim))
        set_rng_state(self.rng, state["rng"])
        self._refresh(range(self.n_arms))
