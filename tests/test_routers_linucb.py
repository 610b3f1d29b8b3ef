"""LinUCB (LASeR's router) against hand-worked numbers and the direct formula; Exp3 by hand."""

import numpy as np
import pytest

from rmroute.routers import Exp3Router, LinUCBRouter


def test_linucb_hand_computed_two_arms_two_dims():
    router = LinUCBRouter(n_arms=2, dim=2, seed=0, alpha=0.5)
    router.update(np.array([[1.0, 0.0]]), np.array([0]), np.array([1.0]))
    router.update(np.array([[0.0, 1.0]]), np.array([1]), np.array([0.5]))
    router.update(np.array([[1.0, 1.0]]), np.array([0]), np.array([0.0]))

    # Arm 0: A = I + e1e1ᵀ + (1,1)(1,1)ᵀ = [[3,1],[1,2]], b = (1,0); det 5, A⁻¹ = [[2,-1],[-1,3]]/5,
    # θ = A⁻¹b = (0.4, -0.2).  Arm 1: A = diag(1,2), b = (0, 0.5), θ = (0, 0.25).
    np.testing.assert_allclose(router.A[0], [[3, 1], [1, 2]])
    np.testing.assert_allclose(router.b[0], [1, 0])
    np.testing.assert_allclose(router.A_inv[0], [[0.4, -0.2], [-0.2, 0.6]], atol=1e-12)
    np.testing.assert_allclose(router.theta[0], [0.4, -0.2], atol=1e-12)
    np.testing.assert_allclose(router.A[1], [[1, 0], [0, 2]])
    np.testing.assert_allclose(router.b[1], [0, 0.5])
    np.testing.assert_allclose(router.theta[1], [0, 0.25], atol=1e-12)

    contexts = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    expected = np.array([
        # x=(1,0): arm 0: 0.4 + 0.5·√0.4;  arm 1: 0 + 0.5·√1
        [0.4 + 0.5 * np.sqrt(0.4), 0.5],
        # x=(0,1): arm 0: -0.2 + 0.5·√0.6;  arm 1: 0.25 + 0.5·√0.5
        [-0.2 + 0.5 * np.sqrt(0.6), 0.25 + 0.5 * np.sqrt(0.5)],
        # x=(1,1): arm 0: 0.2 + 0.5·√((2-2+3)/5);  arm 1: 0.25 + 0.5·√1.5
        [0.2 + 0.5 * np.sqrt(0.6), 0.25 + 0.5 * np.sqrt(1.5)],
    ])
    np.testing.assert_allclose(expected, [[0.716228, 0.5], [0.187298, 0.603553], [0.587298, 0.862372]], atol=1e-6)
    np.testing.assert_allclose(router.scores(contexts), expected, atol=1e-12)
    np.testing.assert_array_equal(router.select(contexts), [0, 1, 1])


def test_linucb_scores_match_direct_inverse_formula():
    rng = np.random.default_rng(1)
    n_arms, dim, alpha = 3, 4, 0.1
    router = LinUCBRouter(n_arms, dim, seed=3, alpha=alpha)
    A = np.tile(np.eye(dim), (n_arms, 1, 1))
    b = np.zeros((n_arms, dim))
    for _ in range(60):
        contexts = rng.normal(size=(rng.integers(1, 5), dim))
        chosen = router.select(contexts)
        rewards = rng.random(len(contexts))
        router.update(contexts, chosen, rewards)
        for c, k, r in zip(contexts, chosen, rewards):
            A[k] += np.outer(c, c)
            b[k] += r * c
    queries = rng.normal(size=(20, dim))
    direct = np.empty((20, n_arms))
    for k in range(n_arms):
        inverse = np.linalg.inv(A[k])
        theta = inverse @ b[k]
        direct[:, k] = [theta @ x + alpha * np.sqrt(x @ inverse @ x) for x in queries]
    np.testing.assert_allclose(router.scores(queries), direct, atol=1e-8, rtol=0)


def test_linucb_initial_ties_are_broken_uniformly_and_reproducibly():
    contexts = np.ones((2000, 3))
    picks = LinUCBRouter(n_arms=4, dim=3, seed=7).select(contexts)
    counts = np.bincount(picks, minlength=4)
    assert counts.min() > 400 and counts.max() < 600
    np.testing.assert_array_equal(picks, LinUCBRouter(n_arms=4, dim=3, seed=7).select(contexts))
    assert not np.array_equal(picks, LinUCBRouter(n_arms=4, dim=3, seed=8).select(contexts))


def test_linucb_rejects_bad_alpha():
    with pytest.raises(ValueError, match="alpha"):
        LinUCBRouter(2, 2, alpha=-1.0)


def test_exp3_probabilities_and_update_by_hand():
    router = Exp3Router(n_arms=2, dim=3, seed=0, gamma=0.1)
    np.testing.assert_allclose(router.probabilities(), [0.5, 0.5])
    router.update(np.zeros((1, 3)), np.array([0]), np.array([1.0]))
    # w0 = exp(γ·(1/0.5)/2) = exp(0.1), w1 = 1; p0 = 0.9·e^0.1/(e^0.1+1) + 0.05
    p0 = 0.9 * np.exp(0.1) / (np.exp(0.1) + 1) + 0.05
    np.testing.assert_allclose(router.probabilities(), [p0, 1 - p0])


def test_exp3_learns_the_better_arm_and_needs_unit_rewards():
    rng = np.random.default_rng(0)
    router = Exp3Router(n_arms=3, dim=2, seed=0)
    for _ in range(300):
        contexts = rng.normal(size=(4, 2))
        chosen = router.select(contexts)
        router.update(contexts, chosen, (chosen == 2).astype(float))
    assert router.probabilities().argmax() == 2
    with pytest.raises(ValueError, match="rewards"):
        router.update(np.zeros((1, 2)), np.array([0]), np.array([1.5]))
