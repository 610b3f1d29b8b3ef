"""Greedy evaluation of a policy on the testbed's test split: accuracy per domain (the graded
instruction score for `instruct`) and win rate against the SFT policy judged by the gold checker;
and the best single RM, chosen on the validation split's accuracy (never on the test split's)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from rmroute.testbed import score_record


def greedy_outputs(policy, tokenizer, records: list[dict], max_new_tokens: int, batch_size: int = 64) -> list[str]:
    from rmroute import models  # imported here: choosing the best single RM needs no torch

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


def single_rm_methods(methods: Mapping, recipe: str, exclude_rms: Iterable[str] = ()) -> list[str]:
    """The candidates of `best_single` under `recipe`, in config order: methods (resolved, as
    rmroute.methods.Method) with router `single` that train with that recipe, add no noise to
    their RM's scores (`noise_sigma`: the noisy twins of the robustness test) and whose RM is not
    in `exclude_rms` (R2M rows: an RM that learns inside the loop is a method of its own)."""
    excluded = set(exclude_rms)
    return [name for name, m in methods.items()
            if m.router == "single" and m.recipe_name == recipe and not m.noise_sigma and m.rm not in excluded]


def best_single(validation_accuracy: pd.DataFrame, candidates: Iterable[str]) -> str:
    """The candidate with the highest validation accuracy after the last iteration: per seed the
    mean over domains, then the mean over seeds; equal accuracies go to the first name in sorted
    order. `validation_accuracy` has columns method, seed, iteration, domain, accuracy
    (tables/validation_accuracy.tsv); every candidate must have rows there."""
    candidates = list(dict.fromkeys(candidates))
    if not candidates:
        raise ValueError("best_single: no candidate methods to choose from")
    rows = validation_accuracy[validation_accuracy["method"].isin(candidates)]
    last = rows[rows["iteration"] == rows["iteration"].max()]
    absent = [c for c in candidates if c not in set(last["method"])]
    if absent:
        raise ValueError(f"best_single: no validation accuracy of {absent} after the last iteration "
                         f"(candidates {candidates})")
    score = last.groupby(["method", "seed"])["accuracy"].mean().groupby("method").mean()
    # Means of the same accuracies summed in another order can differ in the last bits: round so
    # that they tie, and the tie goes to the name.
    return min(candidates, key=lambda c: (-round(float(score[c]), 12), c))
