"""Agreement with gold: the one place it is computed (analysis only: no router reads gold).

One tie rule everywhere: **a tie counts half**.

* `ranking_counts` / `ranking_agreement` / `gold_pair_accuracy`: how an RM's scores order a
  prompt's responses against gold, over the pairs gold can tell apart (pairs gold scores equal are
  left out: no order to agree with); a pair the RM scores equal counts half.
* `gold_agreement`: the share of *built* DPO pairs whose chosen response gold prefers; a pair
  gold scores equal counts half.
"""

from __future__ import annotations

import numpy as np

from rmroute.pairs import candidate_pairs


def ranking_counts(scores: list[float], gold: list[float]) -> tuple[float, int]:
    """(pairs on which the scores order the responses as gold does, ties counting half; pairs gold
    can tell apart) over every pair of one group."""
    agree, total = 0.0, 0
    for a, b in candidate_pairs(len(scores)):
        if gold[a] == gold[b]:
            continue
        total += 1
        if (scores[a] - scores[b]) * (gold[a] - gold[b]) > 0:
            agree += 1
        elif scores[a] == scores[b]:
            agree += 0.5
    return agree, total


def ranking_agreement(scores: list[float], gold: list[float]) -> float:
    """How well one RM's ranking of a group agrees with gold, over pairs gold can tell apart
    (0.5 when gold tells none apart)."""
    agree, total = ranking_counts(scores, gold)
    return agree / total if total else 0.5


def gold_pair_accuracy(groups: list[dict], scores: list[list[float]]) -> tuple[float, int]:
    """`ranking_counts` pooled over groups (each with its `gold`): the share of within-prompt pairs
    gold can tell apart that `scores` order like gold, and the number of such pairs."""
    agree, total = 0.0, 0
    for group, s in zip(groups, scores):
        a, t = ranking_counts(s, group["gold"])
        agree, total = agree + a, total + t
    return (agree / total if total else float("nan")), total


def gold_agreement(gold: list[float] | None, pairs: list[tuple[int, int]]) -> float:
    """Share of built (chosen, rejected) pairs whose chosen response gold prefers (a gold tie
    counts half); NaN without pairs or gold."""
    if not pairs or gold is None:
        return float("nan")
    return float(np.mean([1.0 if gold[w] > gold[lo] else 0.5 if gold[w] == gold[lo] else 0.0 for w, lo in pairs]))
