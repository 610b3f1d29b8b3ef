"""The bandit-reward rescalers as each paper's released code applies them, checked against values
worked out by hand (numpy.quantile's default linear interpolation, as both papers' code), the
per-domain reward history, state round trips, and LASeR's regime options: per-query LinUCB
(one decision per prompt) and a method trained on some domains only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from rmroute.io import load_router_state, save_router_state, write_jsonl
from rmroute.methods import ConfigError, Method, build_router, resolve_methods
from rmroute.online import RoutedLabeler
from rmroute.routers import PerDomain, QuantileNormaliser, make_normaliser
from tiny_artefacts import policy_and_classifier, tiny_splits

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def feed(normalise, rewards, domains=None) -> list[float]:
    """Each reward in its own call (one update per reward), as a per-batch router sees them."""
    return [float(normalise(np.array([r]), np.array([0]), domains=None if domains is None else [domains[i]])[0])
            for i, r in enumerate(rewards)]


# ---------------------------------------------------------------- LASeR's rules


def test_laser_first_reward_raw_then_rescaled():
    normalise = make_normaliser("quantile-laser")
    assert feed(normalise, [-0.7]) == [-0.7]  # one reward in the history: returned raw, unscaled
    # history [-0.7, -0.3]: q20 = -0.62, q80 = -0.38; -0.3 lies above q80
    assert feed(normalise, [-0.3]) == [1.0]
    # history [-0.7, -0.5, -0.3]: q20 = -0.7 + 0.4 * 0.2 = -0.62, q80 = -0.5 + 0.6 * 0.2 = -0.38
    np.testing.assert_allclose(feed(normalise, [-0.5]), [(-0.5 + 0.62) / 0.24])
    np.testing.assert_allclose(feed(normalise, [-0.9]), [0.0])


def test_laser_ties():
    # [2, 2]: q20 = q80 = 2 and the reward equals both: LASeR's code divides 0 by 0; our guard is 0.5
    assert feed(make_normaliser("quantile-laser"), [2.0, 2.0]) == [2.0, 0.5]
    # nine 1s then 5: q20 = q80 = 1, 5 lies above -> 1; then 0 below -> 0 (the old rule: 0.5 for both)
    laser, old = make_normaliser("quantile-laser"), make_normaliser("quantile")
    assert feed(laser, [1.0] * 9 + [5.0, 0.0])[-2:] == [1.0, 0.0]
    assert feed(old, [1.0] * 9 + [5.0, 0.0])[-2:] == [0.5, 0.5]


# ---------------------------------------------------------------- BayesianRouter's rules


def test_bayesian_warm_up_then_rescaled_against_twenty_values():
    normalise = make_normaliser("quantile-bayesian")
    first = [7.0, 3.0, 18.0, 0.0, 11.0, 5.0, 14.0, 1.0, 9.0, 16.0, 2.0, 12.0, 6.0, 17.0, 4.0, 10.0, 13.0, 8.0, 15.0]
    assert feed(normalise, first) == [0.5] * 19  # the first 19 rewards ever seen
    # history: 0..18 and 9.5, sorted 0..9, 9.5, 10..18 (20 values)
    # q20: position 0.2 * 19 = 3.8 -> 3 + 0.8 * (4 - 3) = 3.8
    # q80: position 0.8 * 19 = 15.2 -> 14 + 0.2 * (15 - 14) = 14.2
    np.testing.assert_allclose(feed(normalise, [9.5]), [(9.5 - 3.8) / (14.2 - 3.8)])
    assert np.quantile(normalise.history, [0.2, 0.8]).tolist() == pytest.approx([3.8, 14.2])


def test_bayesian_ties_are_a_step():
    # twenty 1s: the 20th is rescaled with q20 = q80 = 1; equal -> 0, above -> 1, below -> 0
    normalise = make_normaliser("quantile-bayesian")
    assert feed(normalise, [1.0] * 20)[-1] == 0.0
    assert feed(normalise, [2.0, 0.0]) == [1.0, 0.0]


def test_bayesian_is_per_pair_in_order_not_per_batch():
    def warm(per_reward: bool) -> QuantileNormaliser:
        normalise = make_normaliser("quantile-bayesian", per_reward=per_reward)
        normalise(np.arange(19.0))
        return normalise

    batch = np.array([9.5, 100.0])
    # per pair: 9.5 joins first and sees 20 values (as above); 100 then lies above q80
    np.testing.assert_allclose(warm(True)(batch), [5.7 / 10.4, 1.0])
    # per batch: both join first; 21 values 0..9, 9.5, 10..18, 100: q20 = position 4 = 4, q80 = position 16 = 15
    np.testing.assert_allclose(warm(False)(batch), [5.5 / 11.0, 1.0])
    # per pair, the other order: 100 first (q80 = 15.2, so 1), then 9.5 sees all 21 values
    np.testing.assert_allclose(warm(True)(batch[::-1]), [1.0, 5.5 / 11.0])


def test_the_earlier_quantile_rule_is_kept():
    normalise = make_normaliser("quantile")
    assert normalise(np.array([1.0])).tolist() == [0.5]  # the first reward: a tie
    np.testing.assert_allclose(normalise(np.array([0.0, 3.0, 1.5, 2.0])), [0.0, 1.0, 0.7 / 1.4, 1.2 / 1.4])
    with pytest.raises(ValueError, match="tie must be one of"):
        QuantileNormaliser(tie="zero")
    with pytest.raises(ValueError, match="warmup must be"):
        QuantileNormaliser(warmup=-1)
    with pytest.raises(ValueError, match="scope must be one of"):
        make_normaliser("quantile-laser", scope="arm")
    with pytest.raises(ValueError, match="unknown normaliser 'quantile-lasr'"):
        make_normaliser("quantile-lasr", scope="domain")


# ---------------------------------------------------------------- per-domain history


def test_per_domain_history_spans_each_domain():
    rng = np.random.default_rng(0)
    domains = ["arith", "instruct"] * 60
    rewards = [(-10.0 if d == "arith" else 5.0) + rng.normal() for d in domains]
    scoped, pooled = make_normaliser("quantile-laser", scope="domain"), make_normaliser("quantile-laser")
    per_domain, together = np.array(feed(scoped, rewards, domains)), np.array(feed(pooled, rewards, domains))
    assert isinstance(scoped, PerDomain) and sorted(scoped.parts) == ["arith", "instruct"]
    for domain in ("arith", "instruct"):
        mine = np.array([d == domain for d in domains])
        values = per_domain[mine][1:]  # each domain's first reward is returned raw
        assert per_domain[mine][0] == rewards[domains.index(domain)]
        assert values.min() == 0.0 and values.max() == 1.0 and 0.3 < values.mean() < 0.7
    # one pooled history: the rescaled reward mostly says which domain the reward came from
    assert together[2::2].mean() < 0.1 and together[3::2].mean() > 0.9
    with pytest.raises(ValueError, match="domains must name the domain"):
        scoped(np.array([1.0, 2.0]), domains=["arith"])
    with pytest.raises(ValueError, match="non-empty strings"):
        scoped(np.array([1.0]), domains=[None])


def test_labeler_passes_each_decisions_domain():
    class Const:
        rm_id = "c"

        def score(self, prompts, responses):
            return [float(len(r)) for r in responses]

    def groups(domains):
        return [{"id": f"q{i}", "domain": d, "prompt": f"p{i}", "responses": ["a", "bb", "ccc"]} for i, d in enumerate(domains)]

    per_query = Method(name="q", router="random", granularity="query", rms=("c",), batch_prompts=4, pairs_per_prompt=1)
    labeler = RoutedLabeler([Const()], per_query, build_router(per_query, 1, 1, 0), make_normaliser("quantile", "domain"))
    labeler.label(groups(["arith", "instruct", "arith"]))
    labeler.feedback(np.array([1.0, 2.0, 3.0]))
    assert sorted(labeler.normaliser.parts) == ["arith", "instruct"]
    assert labeler.normaliser.parts["arith"].history == [-1.0, -3.0]

    per_batch = Method(name="b", router="random", granularity="batch", rms=("c",), batch_prompts=4, pairs_per_prompt=1)
    labeler = RoutedLabeler([Const()], per_batch, build_router(per_batch, 1, 1, 0), make_normaliser("quantile", "domain"))
    for batch in (["arith", "arith"], ["arith", "instruct"]):
        labeler.label(groups(batch))
        labeler.feedback(np.array([1.0, 2.0]))
    assert sorted(labeler.normaliser.parts) == ["arith", "mixed"]  # a batch over two domains has a history of its own


# ---------------------------------------------------------------- state round trips


@pytest.mark.parametrize("name", ["quantile", "quantile-laser", "quantile-bayesian", "ema-z"])
@pytest.mark.parametrize("scope", ["pooled", "domain"])
def test_state_round_trip_continues_identically(name, scope, tmp_path):
    options = {"n_arms": 2} if name == "ema-z" else {}
    rng = np.random.default_rng(1)
    calls = [(rng.normal(size=3), rng.integers(0, 2, 3), list(rng.choice(["arith", "facts_mc"], 3))) for _ in range(16)]
    straight, saved = make_normaliser(name, scope, **options), make_normaliser(name, scope, **options)
    expected = [straight(raw, arms, domains=domains) for raw, arms, domains in calls]
    for raw, arms, domains in calls[:9]:  # one iteration's feedback ...
        saved(raw, arms, domains=domains)
    save_router_state({"normaliser": saved.state_dict()}, tmp_path / "state.json")
    resumed = make_normaliser(name, scope, **options)  # ... and the next iteration's, from the file
    resumed.load_state_dict(load_router_state(tmp_path / "state.json")["normaliser"])
    for (raw, arms, domains), want in zip(calls[9:], expected[9:]):
        np.testing.assert_array_equal(resumed(raw, arms, domains=domains), want)
    if name != "ema-z":  # a fresh normaliser's state (empty history) round-trips too
        save_router_state({"normaliser": make_normaliser(name, scope).state_dict()}, tmp_path / "empty.json")
        make_normaliser(name, scope).load_state_dict(load_router_state(tmp_path / "empty.json")["normaliser"])


def test_states_keep_their_rules_and_scope():
    old = {"normaliser": "quantile", "q_low": 0.2, "q_high": 0.8, "history": np.array([1.0, 2.0])}  # before the options
    restored = make_normaliser("quantile")
    restored.load_state_dict(old)
    assert restored.state_dict()["tie"] == "half" and not restored.per_reward
    with pytest.raises(ValueError, match="per domain"):
        make_normaliser("quantile-laser", "domain").load_state_dict(make_normaliser("quantile-laser").state_dict())
    with pytest.raises(ValueError, match="state\\['normaliser'\\] is 'per-domain'"):
        make_normaliser("quantile-laser").load_state_dict(make_normaliser("quantile-laser", "domain").state_dict())


# ---------------------------------------------------------------- methods: defaults, per-query LinUCB, domains


def _config(methods: dict) -> dict:
    config = yaml.safe_load(open("config/config.yaml"))
    config["methods"] = methods
    return config


def test_recipes_name_each_papers_rescaler():
    methods = resolve_methods(_config({"laser": {"router": "linucb"}, "bayesian": {"router": "thompson"},
                                       "scoped": {"router": "linucb", "normaliser_scope": "domain",
                                                  "join": {"b": 2}}}), ["a", "b"])
    assert methods["laser"].recipe.normaliser == "quantile-laser"
    assert methods["bayesian"].recipe.normaliser == "quantile-bayesian"
    assert methods["scoped"].recipe.normaliser_scope == "domain" and methods["laser"].recipe.normaliser_scope == "pooled"
    with pytest.raises(ConfigError, match="methods.j.join: needs normaliser 'quantile'"):
        resolve_methods(_config({"j": {"router": "linucb", "join": {"b": 2}, "normaliser": "ema-z"}}), ["a", "b"])


def test_domains_restrict_a_method_and_are_checked():
    methods = resolve_methods(_config({"arith": {"router": "linucb", "domains": ["arith"]},
                                       "all": {"router": "linucb"}}), ["a"])
    assert methods["arith"].domains == ("arith",) and methods["all"].domains == ()
    assert Method.from_dict(methods["arith"].to_dict()) == methods["arith"]
    for bad in (["algebra"], [], ["arith", "arith"]):
        with pytest.raises(ConfigError, match="methods.x.domains"):
            resolve_methods(_config({"x": {"router": "linucb", "domains": bad}}), ["a"])


def test_per_query_linucb_routes_each_prompt_on_its_own_context():
    """LASeR's per-query variant: one decision per prompt, on that prompt's context, rewarded
    with minus the mean loss of that prompt's pairs."""
    method = resolve_methods(_config({"q": {"router": "linucb", "granularity": "query"}}), ["a", "b"])["q"]
    assert method.granularity == "query" and method.recipe.normaliser == "quantile-laser"

    class Ranker:
        def __init__(self, rm_id):
            self.rm_id = rm_id

        def score(self, prompts, responses):
            return [float(len(r)) for r in responses]

    router = build_router(method, 2, 3, seed=0)
    seen = []
    update = router.update
    router.update = lambda contexts, arms, rewards: (seen.append((contexts, arms, rewards)), update(contexts, arms, rewards))
    contexts = {f"p{i}": np.eye(3)[i % 3] * (i + 1) for i in range(4)}
    labeler = RoutedLabeler([Ranker("a"), Ranker("b")], method, router, make_normaliser(method.recipe.normaliser),
                            prompt_context=lambda prompts: np.stack([contexts[p] for p in prompts]))
    groups = [{"id": f"q{i}", "domain": "arith", "prompt": f"p{i}", "responses": ["a", "bb", "ccc", "dddd"]}
              for i in range(4)]
    pairs = labeler.label(groups, step=0)
    assert len(pairs) == 8 and [r["decision_id"] for r in labeler.rows] == ["s0:q0", "s0:q1", "s0:q2", "s0:q3"]
    losses = np.arange(1.0, 9.0)
    labeler.feedback(losses)
    assert [r["bandit_reward_raw"] for r in labeler.rows] == [-1.5, -3.5, -5.5, -7.5]
    (got, arms, rewards), = seen
    np.testing.assert_array_equal(got, np.stack([contexts[f"p{i}"] for i in range(4)]))
    assert arms.tolist() == [r["arm"] for r in labeler.rows]
    # LASeR's rules, one reward at a time: the first raw, the others against the history so far
    np.testing.assert_allclose(rewards, [-1.5, 0.0, 0.0, 0.0])


def test_train_iteration_and_rollouts_keep_the_methods_domains(tmp_path):
    """Per-query LinUCB on two of three domains with a per-domain history, through train_iteration;
    the method's own rollouts of a later iteration sample only its domains."""
    from rmroute.stages import rollout, train_iteration

    tok, _, _ = policy_and_classifier(tmp_path)
    records = tiny_splits()["rollout"]
    groups = [{**r, "responses": [r["answer"], " 7", " yes", " blue red"]}
              for d in ("arith", "facts_mc", "instruct") for r in [x for x in records if x["domain"] == d][:3]]
    write_jsonl(groups, tmp_path / "rollouts.jsonl")
    row = {"path": str(tmp_path / "rm"), "dtype": "float32", "batch_size": 64, "max_length": 64,
           "trust_remote_code": False, "source": "train"}
    config = _config({"q": {"router": "linucb", "granularity": "query", "domains": ["arith", "instruct"],
                            "normaliser_scope": "domain", "epochs": 1}})
    config["budget"].update(batch_prompts=2, pairs_per_prompt=1)
    method = resolve_methods(config, ["a", "b"])["q"]
    out = tmp_path / "it1"
    train_iteration(policy_dir=str(tmp_path / "policy"), reference_dir=str(tmp_path / "policy"),
                    rollouts_path=str(tmp_path / "rollouts.jsonl"), method=method.to_dict(),
                    pool_rows=[{**row, "rm_id": "a"}, {**row, "rm_id": "b"}], previous_state=None, offline_dir=None,
                    batch_order="interleaved", max_length=64, seed=0, it=1, threads=1, device="cpu",
                    out_policy=str(out / "policy"), out_state=str(out / "state.json"),
                    out_decisions=str(out / "decisions.tsv"), out_pairs=str(out / "pairs.jsonl"))
    decisions = pd.read_csv(out / "decisions.tsv", sep="\t")
    assert sorted(decisions["domain"]) == ["arith"] * 3 + ["instruct"] * 3  # one decision per prompt, two domains
    assert decisions["decision_id"].is_unique
    np.testing.assert_allclose(decisions["bandit_reward_raw"], -decisions["loss"])
    state = load_router_state(out / "state.json")["normaliser"]
    assert state["normaliser"] == "per-domain" and sorted(state["domains"]) == ["arith", "instruct"]
    assert all(len(part["history"]) == 3 for part in state["domains"].values())

    write_jsonl(records, tmp_path / "prompts.jsonl")
    budget = {"prompts_per_iteration": 8, "samples_per_prompt": 2, "temperature": 1.0, "max_new_tokens": 3}
    rollout(str(out / "policy"), str(tmp_path / "prompts.jsonl"), budget, 0, 2, 1, "cpu", str(tmp_path / "it2.jsonl"),
            None, list(method.domains))
    sampled = pd.read_json(tmp_path / "it2.jsonl", lines=True)
    assert sorted(sampled["domain"]) == ["arith"] * 2 + ["instruct"] * 2  # 2 per domain, only the method's
