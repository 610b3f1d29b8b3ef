"""Every RM's verdicts on offline preference pairs (the behaviour data), read as matrices.

`correct[i, k]` = did RM k rank pair i's gold-chosen response higher. The offline router trains on
these verdicts, its accuracy table and the controlled simulation are scored with them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rmroute.io import read_jsonl


def behaviour_matrix(
    behaviour: pd.DataFrame, split: str, pair_ids: list[str], column: str = "correct"
) -> tuple[np.ndarray, list[str]]:
    """(N, K) float array of `column` (default: did RM k rank pair i's gold-chosen response higher),
    rows aligned with `pair_ids`, columns in RM order (first appearance of `rm` in the whole table);
    and the list of RM ids."""
    for name in ("split", "pair_id", "rm", column):
        if name not in behaviour.columns:
            raise ValueError(f"behaviour table has no column {name!r}; columns: {list(behaviour.columns)}")
    rm_ids = list(dict.fromkeys(behaviour["rm"]))
    rows = behaviour[behaviour["split"] == split]
    if rows.duplicated(["pair_id", "rm"]).any():
        first = rows[rows.duplicated(["pair_id", "rm"])].iloc[0]
        raise ValueError(f"behaviour split {split!r} has pair_id {first['pair_id']!r} twice for rm {first['rm']!r}")
    table = rows.pivot(index="pair_id", columns="rm", values=column).reindex(index=list(pair_ids), columns=rm_ids)
    missing = np.argwhere(table.isna().to_numpy())
    if len(missing):
        pair_id, rm = table.index[missing[0][0]], table.columns[missing[0][1]]
        raise ValueError(f"behaviour split {split!r} has no {column!r} for pair_id {pair_id!r} and rm {rm!r}")
    return table.to_numpy(dtype=np.float64), rm_ids


def scored_pairs(pairs_path: str, behaviour: pd.DataFrame, split: str):
    """The split's pairs that carry a gold preference (no gold tie) and on which the RMs disagree
    (the only rows where a choice of RM matters); with their (N, K) correctness and the RM ids."""
    pairs = read_jsonl(pairs_path)
    ids = [p["id"] for p in pairs]
    correct, rm_ids = behaviour_matrix(behaviour, split, ids)
    right = correct > 0.5
    keep = right.any(axis=1) & ~right.all(axis=1)
    keep &= behaviour_matrix(behaviour, split, ids, column="gold_tie")[0].max(axis=1) == 0
    if not keep.any():
        raise ValueError(f"split {split!r} ({pairs_path}) has no pair left once gold ties and pairs where all RMs agree are removed")
    return [p for p, k in zip(pairs, keep) if k], correct[keep], rm_ids


def majority_vote(correct: np.ndarray) -> np.ndarray:
    """Per row: 1 if more than half of the RMs are right, 0.5 on an exact half, else 0."""
    share = (correct > 0.5).mean(axis=1)
    return np.where(share > 0.5, 1.0, np.where(share == 0.5, 0.5, 0.0))


def best_offline_arm(behaviour: pd.DataFrame, rm_ids: list[str]) -> int:
    """The RM with the highest accuracy on the router_offline pairs with a gold preference."""
    offline = behaviour[(behaviour["split"] == "router_offline") & (behaviour["gold_tie"] == 0)]
    if offline.empty:
        raise ValueError("behaviour table has no router_offline row without a gold tie; single-best needs them")
    accuracy = offline.groupby("rm")["correct"].mean().reindex(rm_ids).fillna(-1.0)
    return int(np.argmax(accuracy.to_numpy()))  # ties: the first RM in pool order


