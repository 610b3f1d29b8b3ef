"""Every router in the registry: range, seeding, exact resumption from saved state, input checks.
Also the state files, reward normalisers and ensemble combiners."""

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rmroute.routers import (
    ROUTER_NAMES,
    EMAZScore,
    OracleRouter,
    QuantileNormaliser,
    Router,
    combine_scores,
    load_state,
    make_normaliser,
    make_router,
    save_state,
    zscore_rows,
)

PROPERTY = settings(max_examples=40, deadline=None)


def router_kwargs(name: str, n_arms: int, dim: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    if name == "single":
        return {"arm": int(rng.integers(n_arms))}
    if name == "offline-only":
        return {"arm_embeddings": rng.normal(size=(n_arms, dim))}
    if name == "thompson":
        return {"prior_means": rng.normal(size=(n_arms, dim)), "lambda0": float(rng.choice([1.0, 50.0]))}
    if name == "linucb":
        return {"alpha": float(rng.choice([0.1, 1.0]))}
    return {}


def make_stream(n_arms: int, dim: int, seed: int, steps: int, batch: int) -> list:
    rng = np.random.default_rng(seed)
    # Repeated rows and an all-zero row make ties likely, so tie-breaking draws are exercised.
    return [
        (
            np.vstack([rng.normal(size=(batch, dim)), np.zeros((1, dim))]),
            rng.integers(0, 2, size=(batch + 1, n_arms)).astype(float),
            rng.random(batch + 1),
        )
        for _ in range(steps)
    ]


def run(router, stream) -> list[np.ndarray]:
    picks = []
    for contexts, gold, rewards in stream:
        chosen = router.select(contexts, gold) if isinstance(router, OracleRouter) else router.select(contexts)
        router.update(contexts, chosen, rewards)
        picks.append(chosen)
    return picks


router_case = st.fixed_dictionaries({
    "name": st.sampled_from(ROUTER_NAMES),
    "n_arms": st.integers(1, 4),
    "dim": st.integers(1, 4),
    "seed": st.integers(0, 2**32 - 1),
    "data_seed": st.integers(0, 10_000),
    "steps": st.integers(1, 6),
    "batch": st.integers(1, 5),
})


def build(case: dict, seed: int | None = None):
    kwargs = router_kwargs(case["name"], case["n_arms"], case["dim"], case["data_seed"])
    return make_router(case["name"], case["n_arms"], case["dim"], case["seed"] if seed is None else seed, **kwargs)


def stream_of(case: dict, offset: int = 0) -> list:
    return make_stream(case["n_arms"], case["dim"], case["data_seed"] + offset, case["steps"], case["batch"])


@PROPERTY
@given(router_case)
def test_selections_are_arm_indices(case):
    router = build(case)
    assert isinstance(router, Router)
    for picks, (contexts, _, _) in zip(run(router, stream_of(case)), stream_of(case)):
        assert picks.dtype == np.int64 and picks.shape == (len(contexts),)
        assert picks.min() >= 0 and picks.max() < case["n_arms"]


@PROPERTY
@given(router_case)
def test_same_seed_same_selections(case):
    first, second = run(build(case), stream_of(case)), run(build(case), stream_of(case))
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def assert_plain(value, where="state"):
    if isinstance(value, dict):
        for key, item in value.items():
            assert isinstance(key, str), where
            assert_plain(item, f"{where}[{key!r}]")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            assert_plain(item, f"{where}[{i}]")
    else:
        assert isinstance(value, (np.ndarray, bool, int, float, str)) or value is None, where


@PROPERTY
@given(router_case)
def test_restored_router_continues_identically(case):
    original = build(case)
    run(original, stream_of(case))
    state = original.state_dict()
    assert_plain(state)
    with tempfile.TemporaryDirectory() as folder:
        save_state(Path(folder) / "router", state)
        restored_state = load_state(Path(folder) / "router")
    # A different seed: only the saved generator state can make the choices agree.
    restored = build(case, seed=case["seed"] + 1)
    restored.load_state_dict(restored_state)
    later = stream_of(case, offset=1)
    for a, b in zip(run(original, later), run(restored, later)):
        np.testing.assert_array_equal(a, b)


def test_state_of_another_router_kind_or_size_is_refused():
    state = make_router("linucb", 3, 2, seed=0).state_dict()
    with pytest.raises(ValueError, match="router"):
        make_router("thompson", 3, 2, seed=0).load_state_dict(state)
    with pytest.raises(ValueError, match="n_arms"):
        make_router("linucb", 4, 2, seed=0).load_state_dict(state)


def test_save_state_round_trip_and_refusals(tmp_path):
    rng = np.random.default_rng(0)
    state = {
        "a": rng.normal(size=(2, 3)), "n": 3, "big": 2**100, "flag": True, "name": "x", "none": None,
        "nested": {"ints": np.arange(4), "list": [np.ones(2), 1.5, "s"]}, "rng": rng.bit_generator.state,
    }
    save_state(tmp_path / "s.safetensors", state)
    assert {p.name for p in tmp_path.iterdir()} == {"s.safetensors", "s.json"}
    loaded = load_state(tmp_path / "s")
    np.testing.assert_array_equal(loaded["a"], state["a"])
    np.testing.assert_array_equal(loaded["nested"]["ints"], np.arange(4))
    np.testing.assert_array_equal(loaded["nested"]["list"][0], np.ones(2))
    assert loaded["nested"]["list"][1:] == [1.5, "s"]
    assert (loaded["big"], loaded["flag"], loaded["name"], loaded["none"]) == (2**100, True, "x", None)
    assert loaded["rng"] == state["rng"]
    with pytest.raises(ValueError, match="obj"):
        save_state(tmp_path / "bad", {"obj": object()})
    with pytest.raises(ValueError, match="dtype"):
        save_state(tmp_path / "bad", {"strings": np.array(["a"])})


def test_unknown_router_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="linucb.*thompson"):
        make_router("ucb", 2, 2, 0)


@pytest.mark.parametrize("name", ROUTER_NAMES)
def test_bad_inputs_name_the_argument(name):
    router = make_router(name, 3, 2, 0, **router_kwargs(name, 3, 2, 0))
    gold = np.ones((1, 3))
    select = (lambda x: router.select(x, gold)) if name == "oracle" else router.select
    with pytest.raises(ValueError, match=r"contexts.*\(B, 2\).*\(1, 3\)"):
        select(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="contexts"):
        select(np.zeros(2))
    with pytest.raises(ValueError, match="contexts.*nan"):
        select(np.array([[0.0, np.nan]]))
    with pytest.raises(ValueError, match="contexts.*inf"):
        router.update(np.array([[np.inf, 0.0]]), np.array([0]), np.array([0.5]))
    with pytest.raises(ValueError, match="rewards.*nan"):
        router.update(np.zeros((1, 2)), np.array([0]), np.array([np.nan]))
    with pytest.raises(ValueError, match="rewards.*shape"):
        router.update(np.zeros((2, 2)), np.array([0, 1]), np.array([0.5]))
    with pytest.raises(ValueError, match="chosen.*3"):
        router.update(np.zeros((1, 2)), np.array([3]), np.array([0.5]))
    with pytest.raises(ValueError, match="n_arms"):
        make_router(name, 0, 2, 0, **router_kwargs(name, 1, 2, 0))


def test_oracle_picks_a_right_rm_breaking_ties_at_random():
    oracle = OracleRouter(3, 1, seed=0)
    gold = np.tile([[1.0, 0.0, 1.0]], (1000, 1))
    picks = oracle.select(np.zeros((1000, 1)), gold)
    assert set(picks.tolist()) == {0, 2} and 400 < (picks == 0).sum() < 600
    with pytest.raises(ValueError, match="correct"):
        oracle.select(np.zeros((2, 1)))
    with pytest.raises(ValueError, match="correct"):
        oracle.select(np.zeros((2, 1)), np.ones((3, 3)))


def test_single_router_needs_a_valid_arm():
    assert make_router("single", 3, 2, 0, arm=2).select(np.zeros((4, 2))).tolist() == [2, 2, 2, 2]
    with pytest.raises(ValueError, match="arm"):
        make_router("single", 3, 2, 0, arm=3)


# ---------------------------------------------------------------- normalisers


def test_quantile_normaliser_by_hand():
    normalise = QuantileNormaliser()
    assert normalise(np.array([1.0])).tolist() == [0.5]  # one value: both quantiles equal
    # history [1, 2]: q20 = 1.2, q80 = 1.8, so 2 maps above 1 and is clipped
    assert normalise(np.array([2.0])).tolist() == [1.0]
    # history [1, 1.5, 2]: q20 = 1.2, q80 = 1.8
    np.testing.assert_allclose(normalise(np.array([1.5])), [0.5])
    # history [0, 1, 1.5, 2, 3]: q20 = 0.8, q80 = 2.2; the current rewards count
    np.testing.assert_allclose(normalise(np.array([0.0, 3.0, 1.5])), [0.0, 1.0, 0.7 / 1.4])
    restored = make_normaliser("quantile")
    restored.load_state_dict(normalise.state_dict())
    np.testing.assert_array_equal(restored(np.array([1.1, 2.0])), normalise(np.array([1.1, 2.0])))
    with pytest.raises(ValueError, match="raw.*nan"):
        normalise(np.array([np.nan]))
    with pytest.raises(ValueError, match="q_low"):
        QuantileNormaliser(q_low=0.8, q_high=0.2)


def test_ema_z_by_hand_and_clip():
    normalise = EMAZScore(n_arms=2, decay=0.5, clip=2.0)
    # arm 0: 1 (first: 0; mean 1, var 0); 3 (var 0 -> clipped +2; mean 2, var 1);
    # 1 (z = -1/1; mean 1.5, var 0.75); 10 (z = 8.5/0.866 -> clipped 2); arm 1's first -> 0
    z = normalise(np.array([1.0, 3.0, 1.0, 10.0, 5.0]), np.array([0, 0, 0, 0, 1]))
    np.testing.assert_allclose(z, [0.0, 2.0, -1.0, 2.0, 0.0])
    np.testing.assert_allclose(normalise.mean, [1.5 + 0.5 * 8.5, 5.0])
    restored = make_normaliser("ema-z", n_arms=2, decay=0.5, clip=2.0)
    restored.load_state_dict(normalise.state_dict())
    raw, arms = np.array([-3.0, 4.0]), np.array([0, 1])
    np.testing.assert_array_equal(restored(raw, arms), normalise(raw, arms))
    assert np.all(np.abs(normalise(np.random.default_rng(0).normal(size=200) * 50, np.zeros(200, int))) <= 2.0)
    with pytest.raises(ValueError, match="arms"):
        normalise(np.array([1.0]), np.array([2]))
    with pytest.raises(ValueError, match="unknown normaliser"):
        make_normaliser("rank")


# ---------------------------------------------------------------- ensemble combiners


def test_combiners_on_a_hand_made_group():
    scores = np.array([[1.0, 2.0, 3.0], [3.0, 3.0, 3.0]])
    z = np.sqrt(1.5)  # (3 - 2) / std([1, 2, 3])
    np.testing.assert_allclose(zscore_rows(scores), [[-z, 0, z], [0, 0, 0]])
    np.testing.assert_allclose(combine_scores("mean", scores), [-z / 2, 0, z / 2])
    np.testing.assert_allclose(combine_scores("min", scores), [-z, 0, 0])
    np.testing.assert_allclose(combine_scores("uncertainty", scores), [-z, 0, 0])
    np.testing.assert_allclose(combine_scores("uncertainty", scores, k=0.0), [-z / 2, 0, z / 2])
    np.testing.assert_allclose(combine_scores("vote", scores), [0.25, 0.5, 0.75])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(-3, 3), st.integers(-3, 3)), min_size=1, max_size=7))
def test_vote_with_two_responses_is_majority_vote(rows):
    scores = np.array(rows, dtype=float)
    share_for_first = combine_scores("vote", scores)[0]
    prefer_first = (scores[:, 0] > scores[:, 1]).sum()
    prefer_second = (scores[:, 0] < scores[:, 1]).sum()
    assert (share_for_first > 0.5) == (prefer_first > prefer_second)
    assert (share_for_first == 0.5) == (prefer_first == prefer_second)


def test_combiner_bad_inputs():
    with pytest.raises(ValueError, match="unknown combiner"):
        combine_scores("median", np.zeros((2, 2)))
    with pytest.raises(ValueError, match="scores"):
        combine_scores("mean", np.zeros((2, 1)))
    with pytest.raises(ValueError, match="scores.*nan"):
        combine_scores("vote", np.array([[0.0, np.nan]]))
