"""Route and score one iteration's rollouts: the router picks an RM per batch, query or candidate
pair, only that RM scores, and the method's pair rule turns scores into DPO pairs.

Ensembles and the oracle score with every RM; their calls are counted like any other. Gold
scores travel with the rollouts for the decision log only: no router but the oracle reads them.
"""

from __future__ import annotations

import random
import time
from typing import Callable

import numpy as np

from rmroute.pairs import build_pairs, candidate_pairs, random_routed
from rmroute.routers import combine_scores


def _gold_agreement(gold: list[float], pairs: list[tuple[int, int]]) -> float:
    """Share of built pairs whose winner the gold checker agrees with (ties count half)."""
    if not pairs:
        return float("nan")
    return float(np.mean([1.0 if gold[w] > gold[l] else 0.5 if gold[w] == gold[l] else 0.0 for w, l in pairs]))


def _top_gap(scores: list[float]) -> float:
    top = sorted(scores, reverse=True)
    return float(top[0] - top[1]) if len(top) > 1 else 0.0


def _pairwise_agreement(scores: list[float], gold: list[float]) -> float:
    """How well one RM's ranking of a group agrees with gold, over pairs gold can tell apart."""
    agree, total = 0.0, 0
    for a, b in candidate_pairs(len(scores)):
        if gold[a] == gold[b]:
            continue
        total += 1
        if (scores[a] - scores[b]) * (gold[a] - gold[b]) > 0:
            agree += 1
        elif scores[a] == scores[b]:
            agree += 0.5
    return agree / total if total else 0.5


class _ScoreCache:
    """Scores each (RM, prompt, response) once and counts the calls per RM."""

    def __init__(self, pool, noise_sigma: float = 0.0, seed: int = 0):
        self.pool = pool
        self.cache: dict[tuple[int, int, int], float] = {}
        # LASeR's robustness test: Gaussian noise on every RM score a method sees.
        self.noise_sigma = noise_sigma
        self.noise = np.random.default_rng(seed)

    def score(self, k: int, groups: list[dict], wanted: list[tuple[int, int]]) -> None:
        todo = list(dict.fromkeys((g, i) for g, i in wanted if (k, g, i) not in self.cache))
        if not todo:
            return
        values = self.pool[k].score([groups[g]["prompt"] for g, _ in todo], [groups[g]["responses"][i] for g, i in todo])
        if self.noise_sigma > 0:
            values = np.asarray(values) + self.noise.normal(0.0, self.noise_sigma, len(values))
        for (g, i), v in zip(todo, values):
            self.cache[(k, g, i)] = float(v)

    def get(self, k: int, g: int, i: int) -> float:
        return self.cache[(k, g, i)]


def route_and_score(groups: list[dict], method: dict, pool: list, router=None, *, pair_contexts: Callable | None = None,
                    seed: int = 0, progress: bool = False) -> tuple[list[dict], list[dict]]:
    """Returns (pairs, decisions). `groups` are the rollout records of one iteration, in order.

    Each decision row carries the context and arm the router used, so the DPO step can feed the
    bandit reward back once it knows the training loss of the pairs this decision produced.
    """
    from tqdm.auto import tqdm

    rng = random.Random(seed)
    cache = _ScoreCache(pool, method.get("noise_sigma", 0.0), seed)
    rule, per_prompt = method["pair_rule"], method["pairs_per_prompt"]
    kind, granularity = method["router"], method["granularity"]
    pairs: list[dict] = []
    decisions: list[dict] = []
    all_idx = lambda g: [(g, i) for i in range(len(groups[g]["responses"]))]  # noqa: E731

    def emit(g: int, built: list[tuple[int, int]], decision_id: str, rm_name: str, gap: float, context, arm: int, seconds: float, calls: int):
        grp = groups[g]
        for w, l in built:
            pairs.append({
                "prompt_id": grp["id"], "domain": grp["domain"], "prompt": grp["prompt"],
                "chosen": grp["responses"][w], "rejected": grp["responses"][l], "decision_id": decision_id,
                "chosen_gold": grp["gold"][w], "rejected_gold": grp["gold"][l],
            })
        decisions.append({
            "decision_id": decision_id, "query_id": grp["id"], "domain": grp["domain"], "rm": rm_name, "arm": arm,
            "score_gap": gap, "n_pairs": len(built), "gold_agreement": _gold_agreement(grp["gold"], built),
            "context": None if context is None else np.asarray(context, dtype=np.float32).tolist(),
            "route_seconds": seconds, "rm_calls": calls,
        })

    names = [rm.rm_id for rm in pool]
    batch = method.get("batch_prompts", 16)
    if granularity == "pair":
        for g in tqdm(range(len(groups)), desc="route pairs", disable=not progress):
            grp = groups[g]
            cands = candidate_pairs(len(grp["responses"]))
            start = time.perf_counter()
            ctx = pair_contexts(grp, cands)
            if method.get("fused"):
                pair_scores, arms, calls = _fused_pair_scores(cache, groups, g, cands, router.mean_scores(ctx))
            else:
                arms = router.select(ctx)
                wanted: dict[int, list] = {}
                for (a, b), k in zip(cands, arms):
                    wanted.setdefault(int(k), []).extend([(g, a), (g, b)])
                calls = 0
                for k, idx in wanted.items():
                    before = len(cache.cache)
                    cache.score(k, groups, idx)
                    calls += len(cache.cache) - before
                pair_scores = {(a, b): (cache.get(int(k), g, a), cache.get(int(k), g, b)) for (a, b), k in zip(cands, arms)}
            built = random_routed(grp["responses"], pair_scores, per_prompt, method["tie_threshold"], rng)
            seconds = (time.perf_counter() - start) / len(cands)
            for j, ((a, b), k) in enumerate(zip(cands, arms)):
                mine = [p for p in built if set(p) == {a, b}]
                sa, sb = pair_scores[(a, b)]
                emit(g, mine, f"{grp['id']}:{a}-{b}", names[int(k)], abs(sa - sb), ctx[j], int(k), seconds, calls if j == 0 else 0)
        return pairs, decisions

    blocks = [list(range(i, min(i + batch, len(groups)))) for i in range(0, len(groups), batch)] if granularity == "batch" else [[g] for g in range(len(groups))]
    for bi, block in enumerate(tqdm(blocks, desc=f"route {granularity}", disable=not progress)):
        start = time.perf_counter()
        wanted = [x for g in block for x in all_idx(g)]
        ctx = None
        if kind in ("ensemble", "oracle"):
            for k in range(len(pool)):
                cache.score(k, groups, wanted)
            calls = len(pool) * len(wanted)
        else:
            ctx = np.stack([groups[g]["context"] for g in block]).mean(0) if router is not None and groups[block[0]].get("context") is not None else None
            arm = int(router.select(ctx[None, :] if ctx is not None else np.zeros((1, router_dim(router))))[0])
            cache.score(arm, groups, wanted)
            calls = len(wanted)
        seconds = (time.perf_counter() - start) / len(block)
        for g in block:
            grp = groups[g]
            n = len(grp["responses"])
            if kind == "ensemble":
                matrix = np.array([[cache.get(k, g, i) for i in range(n)] for k in range(len(pool))])
                options = {"k": method["uncertainty_k"]} if method["combine"] == "uncertainty" else {}
                scores = combine_scores(method["combine"], matrix, **options).tolist()
                rm_name, k = f"ensemble:{method['combine']}", -1
            elif kind == "oracle":
                agreement = [_pairwise_agreement([cache.get(k, g, i) for i in range(n)], grp["gold"]) for k in range(len(pool))]
                best = max(agreement)
                k = rng.choice([j for j, a in enumerate(agreement) if a == best])
                scores, rm_name = [cache.get(k, g, i) for i in range(n)], names[k]
            else:
                k = arm
                scores, rm_name = [cache.get(k, g, i) for i in range(n)], names[k]
            if rule == "random_routed":  # BayesianRouter's pair rule with one RM's scores for the whole group
                pair_scores = {(a, b): (scores[a], scores[b]) for a, b in candidate_pairs(n)}
                built = random_routed(grp["responses"], pair_scores, per_prompt, method["tie_threshold"], rng)
            else:
                built = build_pairs(rule, grp["responses"], scores, per_prompt)
            decision_id = f"b{bi}" if granularity == "batch" else grp["id"]
            emit(g, built, decision_id, rm_name, _top_gap(scores), ctx, k, seconds, calls if g == block[0] else 0)
    return pairs, decisions


def _fused_pair_scores(cache: _ScoreCache, groups: list[dict], g: int, cands: list, mean_scores: np.ndarray):
    """BayesianRouter's weighted-score fusion ablation: every RM scores, and each candidate pair is
    judged by the RMs' z-scored rewards weighted by softmax of the router's posterior-mean scores.
    The arm credited with the decision is the highest-weighted RM."""
    n = len(groups[g]["responses"])
    k_arms = mean_scores.shape[1]
    for k in range(k_arms):
        cache.score(k, groups, [(g, i) for i in range(n)])
    z = np.array([[cache.get(k, g, i) for i in range(n)] for k in range(k_arms)])
    z = (z - z.mean(1, keepdims=True)) / np.where(z.std(1, keepdims=True) > 0, z.std(1, keepdims=True), 1.0)
    weights = np.exp(mean_scores - mean_scores.max(1, keepdims=True))
    weights /= weights.sum(1, keepdims=True)
    scores = {(a, b): (float(w @ z[:, a]), float(w @ z[:, b])) for (a, b), w in zip(cands, weights)}
    return scores, weights.argmax(1), k_arms * n


def router_dim(router) -> int:
    return int(getattr(router, "dim", 1))
