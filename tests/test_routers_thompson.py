"""Thompson router (BayesianRouter's online stage): posterior algebra and the offline prior."""

import math

import numpy as np
import pytest

from rmroute.routers import ThompsonRouter


def test_sequential_updates_equal_batch_posterior():
    rng = np.random.default_rng(0)
    n_arms, dim, lambda0, noise_var = 3, 5, 2.0, 0.5
    prior = rng.normal(size=(n_arms, dim))
    router = ThompsonRouter(n_arms, dim, seed=1, prior_means=prior, lambda0=lambda0, noise_var=noise_var)
    seen = {k: ([], []) for k in range(n_arms)}
    for _ in range(80):
        x = rng.normal(size=(rng.integers(1, 6), dim))
        chosen = router.select(x)
        r = rng.random(len(x))
        router.update(x, chosen, r)
        for row, k, reward in zip(x, chosen, r):
            seen[k][0].append(row)
            seen[k][1].append(reward)
    prior_cov_inv = lambda0 * np.eye(dim)
    for k in range(n_arms):
        X, y = np.array(seen[k][0]).reshape(-1, dim), np.array(seen[k][1])
        cov = np.linalg.inv(prior_cov_inv + X.T @ X / noise_var)
        mean = cov @ (prior_cov_inv @ prior[k] + X.T @ y / noise_var)
        np.testing.assert_allclose(np.linalg.inv(router.precision[k]), cov, atol=1e-10)
        np.testing.assert_allclose(router.mean[k], mean, atol=1e-10)
        # The draw's square root really is one of the covariance.
        np.testing.assert_allclose(router.cov_root[k] @ router.cov_root[k].T, cov, atol=1e-10)


def test_strong_prior_follows_offline_argmax_and_no_prior_does_not():
    rng = np.random.default_rng(0)
    n_arms, dim = 4, 8
    prior = rng.normal(size=(n_arms, dim))
    prior /= np.linalg.norm(prior, axis=1, keepdims=True)
    x = rng.normal(size=(1000, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    offline_choice = (x @ prior.T).argmax(axis=1)

    strong = ThompsonRouter(n_arms, dim, seed=0, prior_means=prior, lambda0=1e6)
    assert (strong.select(x) == offline_choice).mean() >= 0.95
    np.testing.assert_array_equal(strong.greedy_select(x), offline_choice)
    np.testing.assert_allclose(strong.mean_scores(x), x @ prior.T, atol=1e-12)

    no_prior = ThompsonRouter(n_arms, dim, seed=0, prior_means=None, lambda0=1.0)
    agreement = (no_prior.select(x) == offline_choice).mean()
    assert abs(agreement - 1 / n_arms) < 0.1


def test_thompson_learns_which_arm_pays():
    rng = np.random.default_rng(2)
    router = ThompsonRouter(n_arms=2, dim=2, seed=0)
    for _ in range(200):
        x = np.column_stack([np.ones(8), rng.normal(size=8)])
        chosen = router.select(x)
        # Arm 1 pays 1 when the second feature is positive, arm 0 otherwise.
        router.update(x, chosen, ((x[:, 1] > 0) == (chosen == 1)).astype(float))
    x = np.column_stack([np.ones(200), rng.normal(size=200)])
    assert (router.greedy_select(x) == (x[:, 1] > 0)).mean() > 0.9


def test_thompson_rejects_bad_settings():
    with pytest.raises(ValueError, match="prior_means"):
        ThompsonRouter(3, 2, prior_means=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="prior_means"):
        ThompsonRouter(2, 2, prior_means=np.array([[0.0, np.nan], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="lambda0"):
        ThompsonRouter(2, 2, lambda0=0.0)
    with pytest.raises(ValueError, match="noise_var"):
        ThompsonRouter(2, 2, noise_var=-1.0)


def test_draws_have_the_posterior_spread():
    # For two arms, P(pick arm 0) = Φ((μ0−μ1)ᵀx / sqrt(xᵀΣ0x + xᵀΣ1x)). Arm 0's posterior is long
    # along x = (1, −1) after one update along (1, 1): a transposed square root of its covariance
    # would give variance 1.29 there instead of 2 and P = 0.865 instead of 0.841.
    router = ThompsonRouter(n_arms=2, dim=2, seed=0, prior_means=np.array([[0.0, 0.0], [-1.0, 1.0]]))
    router.update(np.array([[5.0, 5.0]]), np.array([0]), np.array([1.0]))
    x = np.array([1.0, -1.0])
    cov = [np.linalg.inv(router.precision[k]) for k in (0, 1)]
    np.testing.assert_allclose([x @ cov[0] @ x, x @ cov[1] @ x], [2.0, 2.0])
    z = (router.mean[0] - router.mean[1]) @ x / np.sqrt(x @ cov[0] @ x + x @ cov[1] @ x)
    expected = 0.5 * (1 + math.erf(z / np.sqrt(2)))
    observed = (router.select(np.tile(x, (40000, 1))) == 0).mean()
    assert abs(observed - expected) < 4 * np.sqrt(expected * (1 - expected) / 40000)
