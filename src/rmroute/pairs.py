"""Pair rules: how scored samples of one prompt become DPO preference pairs.

* `top_vs_next` (LASeR): sort by the routed RM's score; top-1 vs the next P distinct responses.
* `best_vs_worst`: one pair, highest vs lowest score.
* `random_routed` (BayesianRouter): every candidate pair is scored by its own routed RM; pairs
  whose score gap is at most `tie_threshold` are dropped and k of the rest drawn at random;
  the winner is the response with the higher routed score.
Pairs of identical texts carry no preference and are always dropped.
"""

from __future__ import annotations

import itertools
import random


def top_vs_next(responses: list[str], scores: list[float], pairs_per_prompt: int) -> list[tuple[int, int]]:
    """Top-1 vs the next P *distinct* responses by score. Copies of one text score alike and sit
    side by side in the ranking; skipping them keeps the P pairs the rule asks for instead of
    letting a repeated sample crowd real pairs out."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    distinct, seen = [], set()
    for i in order:  # the best-ranked copy of each text, in rank order
        if responses[i] not in seen:
            seen.add(responses[i])
            distinct.append(i)
    top = distinct[0]
    return [(top, j) for j in distinct[1 : 1 + pairs_per_prompt]]


def best_vs_worst(responses: list[str], scores: list[float]) -> list[tuple[int, int]]:
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    best, worst = order[0], order[-1]
    return [(best, worst)] if responses[best] != responses[worst] and scores[best] > scores[worst] else []


def candidate_pairs(n: int) -> list[tuple[int, int]]:
    """All unordered index pairs of n samples (n = 6 gives BayesianRouter's 15)."""
    return list(itertools.combinations(range(n), 2))


def random_routed(responses: list[str], pair_scores: dict[tuple[int, int], tuple[float, float]], pairs_per_prompt: int,
                  tie_threshold: float, rng: random.Random) -> list[tuple[int, int]]:
    """pair_scores maps (a, b) to the routed RM's (score_a, score_b); returns (winner, loser) pairs."""
    kept = []
    for (a, b), (sa, sb) in sorted(pair_scores.items()):
        if responses[a] == responses[b] or abs(sa - sb) <= tie_threshold:
            continue
        kept.append((a, b) if sa > sb else (b, a))
    if len(kept) > pairs_per_prompt:
        kept = rng.sample(kept, pairs_per_prompt)
    return kept


def build_pairs(rule: str, responses: list[str], scores: list[float], pairs_per_prompt: int) -> list[tuple[int, int]]:
    """Dispatch for the rules that rank one score vector (the per-batch and per-query routers)."""
    if rule == "top_vs_next":
        return top_vs_next(responses, scores, pairs_per_prompt)
    if rule == "best_vs_worst":
        return best_vs_worst(responses, scores)
    raise ValueError(f"pair_rule {rule!r} needs per-response scores; expected 'top_vs_next' or 'best_vs_worst'")
