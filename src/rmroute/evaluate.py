"""Greedy evaluation of a policy on the testbed's test split: accuracy per domain (the graded
instruction score for `instruct`) and win rate against the SFT policy judged by the gold checker."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rmroute import models
from rmroute.testbed import score_record


def greedy_outputs(policy, tokenizer, records: list[dict], max_new_tokens: int, batch_size: int = 64) -> list[str]:
    outs = models.generate(policy, tokenizer, [r["prompt"] for r in records], max_new_tokens=max_new_tokens, batch_size=batch_size)
    return [o[0] for o in outs]


def score_outputs(records: list[dict], outputs: list[str]) -> np.ndarray:
    return np.array([score_record(r, o) for r, o in zip(records, outputs)])


def evaluation_table(records: list[dict], outputs: list[str], sft_outputs: list[str] | None) -> pd.DataFrame:
    """Tidy rows (domain, metric, value): metric `accuracy` and, given SFT outputs, `win_rate_vs_sft`
    (win 1, tie 0.5, loss 0 per prompt, by gold score)."""
    scores = score_outputs(records, outputs)
    win = None
    if sft_outputs is not None:
        base = score_outputs(records, sft_outputs)
        win = np.where(scores > base, 1.0, np.where(scores == base, 0.5, 0.0))
    domains = np.array([r["domain"] for r in records])
    rows = []
    for domain in sorted(set(domains)):
        sel = domains == domain
        rows.append({"domain": domain, "metric": "accuracy", "value": float(scores[sel].mean())})
        if win is not None:
            rows.append({"domain": domain, "metric": "win_rate_vs_sft", "value": float(win[sel].mean())})
    return pd.DataFrame(rows)
