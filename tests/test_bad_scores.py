"""Bad RM output and degenerate generations, without Snakemake:

* an RM that returns NaN or ±inf is refused with an error that names it, also in the middle of
  routed scoring (no pair is ever built from a non-finite score);
* empty generations stay in the rollout as real (bad) answers, score 0 with every gold checker,
  and pairs of identical texts are dropped by every pair rule;
* routed scoring with a fake pool: a single router scores with its RM only, an ensemble pays K
  calls per response, and per-pair Thompson routing keeps only pairs whose routed score gap
  exceeds the tie threshold, at most pairs_per_prompt per prompt (through rmroute.online's
  RoutedLabeler, batch by batch as in training).
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from rmroute import models, stages
from rmroute.io import read_jsonl, write_jsonl
from rmroute.methods import Method, Recipe
from rmroute.online import route_batches
from rmroute.pairs import (
    best_vs_worst,
    build_pairs,
    candidate_pairs,
    random_routed,
    top_vs_next,
)
from rmroute.rewards.pool import RewardModel
from rmroute.routers import make_router
from rmroute.testbed import DOMAINS, TestbedConfig, generate_splits, score_record

DIM = 4


class FakeRM:
    """An RM of the pool: a fixed score per response text, and a count of the rows it scored."""

    def __init__(self, rm_id: str, table: dict[str, float], default: float = 0.0):
        self.rm_id, self.table, self.default = rm_id, table, default
        self.calls = 0

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        assert len(prompts) == len(responses)
        self.calls += len(responses)
        return [float(self.table.get(r, self.default)) for r in responses]


def group(gid: str, responses: list[str], domain: str = "arith", seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"id": gid, "domain": domain, "prompt": f"Q: {gid}?\nA:", "responses": responses,
            "gold": [1.0 if r == " 4" else 0.0 for r in responses], "context": rng.normal(size=DIM).tolist()}


def method(router: str, granularity: str, pair_rule: str, *, tie_threshold: float = 0.0, **extra) -> Method:
    """A resolved method (as rmroute.methods.resolve_methods builds it), two prompts per batch."""
    return Method(name=router, router=router, granularity=granularity,
                  recipe=Recipe(pair_rule=pair_rule, tie_threshold=tie_threshold),
                  **{"pairs_per_prompt": 2, "batch_prompts": 2, **extra})


def route_and_score(groups, m: Method, pool, router=None, *, pair_contexts=None, seed=0):
    """Label `groups` batch by batch as the training loop does (no reward); (pairs, decision rows)."""
    return route_batches(groups, m, pool, router, pair_context=pair_contexts,
                         prompt_context=lambda prompts: np.zeros((len(prompts), DIM)), seed=seed)


@pytest.fixture(scope="module")
def records() -> list[dict]:
    """One small testbed: a few prompts of every domain."""
    cfg = TestbedConfig(seed=0, n_entities=20,
                        split_sizes={"sft": 2, "rm_train": 2, "router_offline": 2, "rollout": 2, "test": 3}, ood_size=2)
    return generate_splits(cfg)["test"]


# ---------------------------------------------------------------- non-finite RM scores


class _Tokenizer:
    eos_token = "</s>"


def loaded_rm(rm_id: str) -> RewardModel:
    """A RewardModel whose weights count as loaded, so only models.rm_scores runs."""
    return RewardModel(rm_id=rm_id, source="unused", device="cpu", _model=object(), _tokenizer=_Tokenizer())


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_rm_scores_are_refused_naming_the_rm(monkeypatch, bad):
    monkeypatch.setattr(models, "rm_scores", lambda model, tok, prompts, responses, **kw: [0.5, bad, 1.0][: len(prompts)])
    rm = loaded_rm("flaky_rm")
    with pytest.raises(ValueError, match=r"RM 'flaky_rm' returned non-finite scores for rows \[1\]"):
        rm.score(["p1", "p2", "p3"], [" a", " b", " c"])


def test_finite_rm_scores_pass_and_responses_get_eos(monkeypatch):
    seen = {}

    def fake(model, tok, prompts, responses, **kw):
        seen["responses"] = list(responses)
        return [0.25] * len(prompts)

    monkeypatch.setattr(models, "rm_scores", fake)
    rm = loaded_rm("rm_ok")
    assert rm.score(["p", "p"], ["", " 4</s>"]) == [0.25, 0.25]
    assert seen["responses"] == ["</s>", " 4</s>"]  # an empty answer is scored as EOS alone
    assert rm.calls == 2


def test_non_finite_scores_stop_routed_scoring(monkeypatch):
    bad_model = object()
    monkeypatch.setattr(models, "rm_scores", lambda model, tok, prompts, responses, **kw:
                        [math.nan if model is bad_model else 1.0 for _ in responses])
    pool = [loaded_rm("rm_good"), loaded_rm("rm_nan")]
    pool[1]._model = bad_model
    groups = [group("g0", [" 4", " 5", " 6"])]
    # Ensemble and oracle score with every RM, so the bad one is always reached.
    for m in (method("ensemble", "query", "top_vs_next"), method("oracle", "query", "top_vs_next")):
        with pytest.raises(ValueError, match="RM 'rm_nan' returned non-finite"):
            route_and_score(groups, m, pool, None, seed=0)
    with pytest.raises(ValueError, match="RM 'rm_nan' returned non-finite"):
        route_and_score(groups, method("single", "batch", "top_vs_next"), pool, make_router("single", 2, DIM, 0, arm=1))
    pairs, _ = route_and_score(groups, method("single", "batch", "top_vs_next"), pool, make_router("single", 2, DIM, 0, arm=0))
    assert len(pairs) == 2  # the same groups route fine to the healthy RM


# ---------------------------------------------------------------- empty generations


def test_empty_generation_scores_zero_with_every_checker(records):
    assert {r["domain"] for r in records} == set(DOMAINS)
    for record in records:
        for empty in ("", " ", "\n"):
            assert score_record(record, empty) == 0.0, (record["domain"], empty)
        assert score_record(record, record["answer"]) == 1.0, record["domain"]


def test_empty_generations_stay_in_the_rollout(tmp_path, monkeypatch, records):
    """The rollout stage keeps an empty sample as one of the n answers, gold-scored 0."""
    path = tmp_path / "rollout.jsonl"
    write_jsonl(records, path)
    samples = {r["prompt"]: ["", r["answer"], ""] for r in records}
    monkeypatch.setattr(models, "load_policy", lambda *a, **k: None)
    monkeypatch.setattr(models, "load_tokenizer", lambda *a, **k: None)
    monkeypatch.setattr(models, "generate", lambda policy, tok, prompts, **kw: [list(samples[p]) for p in prompts])
    budget = {"prompts_per_iteration": 4, "samples_per_prompt": 3, "temperature": 1.0, "max_new_tokens": 8}
    out = tmp_path / "it1.jsonl"
    stages.rollout("unused", str(path), budget, seed=0, it=1, threads=1, device="cpu", out_path=str(out))
    rollout = read_jsonl(out)
    assert len(rollout) == 4 and {r["domain"] for r in rollout} == set(DOMAINS)
    for r in rollout:
        assert r["responses"] == ["", r["answer"], ""]
        assert r["gold"] == [0.0, 1.0, 0.0]


def test_identical_texts_are_never_paired():
    responses = ["", "", " 4", " 4"]
    scores = [3.0, 2.0, 1.0, 0.0]  # the two empty answers rank first and second
    assert top_vs_next(responses, scores, 3) == [(0, 2)]  # one distinct text besides the top: one pair
    assert build_pairs("top_vs_next", responses, scores, 3) == [(0, 2)]
    assert best_vs_worst(["", " 4", ""], [2.0, 1.0, 0.0]) == []  # best and worst are both empty
    assert best_vs_worst(["", " 4", " 5"], [2.0, 1.0, 0.0]) == [(0, 2)]
    pair_scores = {(a, b): (scores[a], scores[b]) for a, b in candidate_pairs(len(responses))}
    kept = random_routed(responses, pair_scores, 10, 0.0, random.Random(0))
    assert sorted(kept) == [(0, 2), (0, 3), (1, 2), (1, 3)]
    for rule in ("top_vs_next", "best_vs_worst"):
        assert build_pairs(rule, ["", "", ""], [1.0, 0.5, 0.0], 2) == []
    all_empty = {(a, b): (float(a), -float(b)) for a, b in candidate_pairs(3)}
    assert random_routed(["", "", ""], all_empty, 3, 0.0, random.Random(0)) == []


def test_top_vs_next_skips_copies_of_the_top_and_of_each_other():
    # Copies score alike and rank side by side: the rule pairs the top with the next P distinct
    # texts, so a repeated sample cannot crowd the real pairs out.
    responses = [" 7", " 7", " 7", " 5", " 5", " 9"]
    scores = [0.9, 0.9, 0.9, 0.5, 0.5, 0.1]
    assert top_vs_next(responses, scores, 2) == [(0, 3), (0, 5)]
    assert top_vs_next(responses, scores, 1) == [(0, 3)]
    # Under score noise a copy can rank apart from its twin; its best-ranked copy stands for it.
    assert top_vs_next([" a", " b", " a", " c"], [3.0, 2.5, 2.0, 1.0], 2) == [(0, 1), (0, 3)]
    assert top_vs_next([" a", " a"], [1.0, 1.0], 1) == []


def test_all_empty_group_yields_no_pair_under_any_router():
    pool = [FakeRM("rm_a", {}, default=1.0), FakeRM("rm_b", {}, default=-1.0)]
    groups = [group("g0", ["", "", ""]), group("g1", ["", " 4", ""], seed=1)]
    cases = [
        (method("single", "batch", "top_vs_next"), make_router("single", 2, DIM, 0, arm=0), None),
        (method("ensemble", "query", "top_vs_next"), None, None),
        (method("oracle", "query", "best_vs_worst"), None, None),
        (method("thompson", "pair", "random_routed"), make_router("thompson", n_arms=2, dim=DIM, seed=0),
         lambda grp, cands: np.random.default_rng(0).normal(size=(len(cands), DIM))),
    ]
    for m, router, contexts in cases:
        pairs, decisions = route_and_score(groups, m, pool, router, pair_contexts=contexts, seed=0)
        assert all(p["chosen"] != p["rejected"] for p in pairs), m.router
        assert not [p for p in pairs if p["prompt_id"] == "g0"], m.router
        assert {d["query_id"] for d in decisions} == {"g0", "g1"}, m.router


# ---------------------------------------------------------------- routed scoring with a fake pool


def test_single_router_scores_with_its_rm_only():
    pool = [FakeRM("rm_a", {" 4": 0.0, " 5": 1.0}), FakeRM("rm_b", {" 4": 1.0, " 5": 0.0, " 6": -1.0})]
    groups = [group("g0", [" 4", " 5", " 6"]), group("g1", [" 5", " 6", " 4"], seed=1), group("g2", [" 6", " 4", " 4"], seed=2)]
    m = method("single", "batch", "top_vs_next", pairs_per_prompt=1)
    pairs, decisions = route_and_score(groups, m, pool, make_router("single", 2, DIM, 0, arm=1), seed=0)
    assert pool[0].calls == 0 and pool[1].calls == 9
    assert {d["rm"] for d in decisions} == {"rm_b"} and {d["arm"] for d in decisions} == {1}
    assert sum(d["rm_calls"] for d in decisions) == 9
    assert [d["decision_id"] for d in decisions] == ["s0", "s0", "s1"]  # batches of batch_prompts = 2
    # rm_b's ranking, top vs the next distinct text; in g2 the top two are both " 4", so " 4" meets " 6".
    assert [(p["prompt_id"], p["chosen"], p["rejected"]) for p in pairs] == [("g0", " 4", " 5"), ("g1", " 4", " 5"),
                                                                            ("g2", " 4", " 6")]


def test_ensemble_pays_k_calls_per_response():
    pool = [FakeRM("rm_a", {" 4": 1.0, " 5": 0.0}), FakeRM("rm_b", {" 4": 0.5, " 5": 2.0}),
            FakeRM("rm_c", {" 4": 3.0, " 5": 1.0})]
    groups = [group("g0", [" 4", " 5", " 6", " 7"]), group("g1", [" 5", " 4"], seed=1)]
    pairs, decisions = route_and_score(groups, method("ensemble", "query", "top_vs_next", pairs_per_prompt=1), pool, None)
    assert [rm.calls for rm in pool] == [6, 6, 6]
    assert [d["rm_calls"] for d in decisions] == [3 * 4 + 3 * 2, 0]  # a batch's calls are logged on its first row
    assert {d["rm"] for d in decisions} == {"ensemble:mean"} and {d["arm"] for d in decisions} == {-1}
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [(" 4", " 5"), (" 4", " 5")]  # 2 of 3 RMs prefer " 4"


def test_per_pair_thompson_keeps_only_gaps_above_the_tie_threshold():
    responses = [" 1", " 2", " 3", " 4", " 5", " 5"]
    # rm_a separates everything by at least 1; rm_b ties " 1"-" 2" and " 3"-" 4" within the threshold.
    pool = [FakeRM("rm_a", {r: float(i) for i, r in enumerate(responses)}),
            FakeRM("rm_b", {" 1": 0.0, " 2": 0.1, " 3": 5.0, " 4": 5.2, " 5": 9.0})]
    groups = [group(f"g{i}", list(responses), seed=i) for i in range(8)]
    rng = np.random.default_rng(0)
    m = method("thompson", "pair", "random_routed", pairs_per_prompt=3, tie_threshold=0.5)
    router = make_router("thompson", n_arms=2, dim=DIM, seed=0)
    pairs, decisions = route_and_score(groups, m, pool, router, seed=0,
                                       pair_contexts=lambda grp, cands: rng.normal(size=(len(cands), DIM)))
    cands = candidate_pairs(len(responses))
    assert len(decisions) == len(groups) * len(cands)  # one routing decision per candidate pair
    assert {d["rm"] for d in decisions} == {"rm_a", "rm_b"}  # both arms get drawn
    by_id = {d["decision_id"]: d for d in decisions}
    eligible = {g["id"]: 0 for g in groups}  # candidates a per-pair rule may keep
    for d in decisions:
        a, b = map(int, d["decision_id"].split(":")[2].split("-"))
        rm = pool[d["arm"]]
        assert d["rm"] == rm.rm_id and d["score_gap"] == pytest.approx(abs(rm.table[responses[a]] - rm.table[responses[b]]))
        eligible[d["query_id"]] += d["score_gap"] > 0.5 and responses[a] != responses[b]
    assert any(d["score_gap"] <= 0.5 for d in decisions)  # some routed gaps fall under the threshold
    assert any(n > 3 for n in eligible.values())  # and some prompts have more eligible pairs than they may keep
    for g in groups:
        mine = [p for p in pairs if p["prompt_id"] == g["id"]]
        assert len(mine) == min(3, eligible[g["id"]])
        for p in mine:
            d = by_id[p["decision_id"]]
            assert d["query_id"] == g["id"] and d["n_pairs"] == 1
            assert d["score_gap"] > 0.5
            rm = pool[d["arm"]]
            assert rm.table[p["chosen"]] > rm.table[p["rejected"]]  # the routed RM's winner
            assert p["chosen"] != p["rejected"]
    assert all(d["n_pairs"] == 0 for d in decisions if d["decision_id"] not in {p["decision_id"] for p in pairs})


def test_per_pair_routing_scores_each_response_once_per_rm():
    """ScoreCache's contract: each (RM, prompt, response) is scored once, and the decision log's
    rm_calls is what the RMs really scored."""
    responses = [" 1", " 2", " 3", " 4"]
    pool = [FakeRM("rm_a", {r: float(i) for i, r in enumerate(responses)}), FakeRM("rm_b", {})]
    m = method("thompson", "pair", "random_routed", pairs_per_prompt=1)
    router = make_router("single", 2, DIM, 0, arm=0)  # every candidate pair to rm_a
    pairs, decisions = route_and_score([group("g0", responses)], m, pool, router,
                                       pair_contexts=lambda grp, cands: np.zeros((len(cands), DIM)))
    assert sum(d["rm_calls"] for d in decisions) == pool[0].calls
    assert pool[0].calls == len(responses)
