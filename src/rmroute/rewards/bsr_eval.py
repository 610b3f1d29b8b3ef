"""The BSR paper's robustness measurements (Hong et al., ICML 2025, Tables 1 and 5) for a BT and a
BSR classifier RM trained on the same data and λ.

* Kendall τ between an RM's scores and the gold checker over the responses of each prompt, on
  in-domain prompts and on three shifted splits: prompt-OOD (the testbed's `test_ood` prompts:
  other templates, larger numbers, longer word lists), response-OOD (in-domain prompts answered
  by a differently trained policy) and mutual-OOD (both);
* held-out pair accuracy in domain;
* the distribution of the last hidden state the score head reads (and of the residual stream
  before the final norm, whose norm an RMS norm does not pin): norm mean, dispersion (std and
  coefficient of variation), skew, and the effective rank of the hidden-state matrix, on the
  RM's training texts and on each evaluation split.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from scipy import stats

from rmroute.published import BSR_TABLE5  # Kendall τ and in-domain accuracy, BT -> BT-BSR

BSR_SPLITS = ("in_domain", "prompt_ood", "response_ood", "mutual_ood")
# split -> (prompt split of the testbed, which policy answers it)
SPLIT_SOURCES = {"in_domain": ("test", "sft"), "prompt_ood": ("test_ood", "sft"),
                 "response_ood": ("test", "response"), "mutual_ood": ("test_ood", "response")}


def kendall_tau_groups(scores: list[list[float]], gold: list[list[float]]) -> tuple[float, int]:
    """(mean Kendall τ-b over prompts, number of prompts counted). A prompt whose gold scores are
    all equal has no order to recover and is skipped; an RM that gives a prompt's responses all
    the same score gets τ = 0 there (it ranks nothing)."""
    taus = []
    for s, g in zip(scores, gold):
        if len(set(g)) < 2:
            continue
        tau = stats.kendalltau(s, g).statistic if len(set(s)) > 1 else 0.0
        taus.append(float(tau))
    return (float(np.mean(taus)) if taus else float("nan")), len(taus)


def effective_rank(matrix: np.ndarray) -> float:
    """Roy & Vetterli's effective rank: exp of the entropy of the normalised singular values."""
    s = np.linalg.svd(np.asarray(matrix, dtype=np.float64), compute_uv=False)
    s = s[s > 0]
    p = s / s.sum()
    return float(math.exp(-(p * np.log(p)).sum()))


def norm_statistics(hidden: np.ndarray, prefix: str = "norm") -> dict[str, float]:
    """Mean, dispersion (std, coefficient of variation) and skew of the row norms of [n, d]."""
    norms = np.linalg.norm(hidden, axis=1)
    return {f"{prefix}_mean": float(norms.mean()), f"{prefix}_std": float(norms.std()),
            f"{prefix}_cv": float(norms.std() / norms.mean()), f"{prefix}_skew": float(stats.skew(norms))}


@torch.no_grad()
def last_hidden_states(model, tokenizer, prompts: list[str], responses: list[str], *, batch_size: int = 64,
                       max_length: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(rewards [n], the final hidden state the score head reads [n, d], the residual stream
    entering the backbone's final norm at that token [n, d], or None for a backbone without a
    `norm`) for (prompt, response) rows, tokenised as the RM is trained and scored (prompt +
    response + EOS, no special tokens). The head reads the normalised state, whose norm an RMS
    norm keeps nearly fixed; the residual's norm is free to spread."""
    device = next(model.parameters()).device
    eos = tokenizer.eos_token or ""
    texts = [p + (r if r.endswith(eos) else r + eos) for p, r in zip(prompts, responses)]
    backbone = getattr(model, model.base_model_prefix)
    final_norm = getattr(backbone, "norm", None)
    captured = {}
    hook = final_norm.register_forward_pre_hook(lambda module, args: captured.update(x=args[0])) if final_norm else None
    rewards, states, residual = [], [], []
    try:
        for i in range(0, len(texts), batch_size):
            enc = tokenizer(texts[i:i + batch_size], return_tensors="pt", padding=True, truncation=True,
                            max_length=max_length, add_special_tokens=False).to(device)
            hidden = backbone(**enc).last_hidden_state
            last = enc["attention_mask"].shape[1] - 1 - enc["attention_mask"].flip(-1).argmax(-1)  # rightmost real token
            rows = torch.arange(hidden.shape[0], device=device)
            pooled = hidden[rows, last]
            rewards.append(model.score(pooled).squeeze(-1).float().cpu())
            states.append(pooled.float().cpu())
            if hook is not None:
                residual.append(captured["x"][rows, last].float().cpu())
    finally:
        if hook is not None:
            hook.remove()
    return (torch.cat(rewards).numpy(), torch.cat(states).numpy(),
            torch.cat(residual).numpy() if residual else None)


def evaluate_rm(model, tokenizer, train_pairs: list[dict], test_pairs: list[dict], groups: list[dict],
                domains: list[str], *, max_length: int = 256, seed: int = 0) -> tuple[list[dict], pd.DataFrame]:
    """Every BSR measurement of one RM: (rows of split/metric/value, the hidden-state norms per
    split as a frame with columns split, state, norm).

    `train_pairs` are the RM's own training pairs (the "train" distribution), `test_pairs` the
    held-out pairs with gold scores, `groups` the scored responses per prompt of each split
    (split, domain, prompt, responses, gold); only the RM's `domains` are evaluated. Norm rows:
    `norm_*` of the state the head reads, `residual_norm_*` of the residual stream before the
    final norm. The effective rank (of the head's input) depends on the number of rows, so every
    split's is taken on the same number of rows (the smallest split's), drawn with `seed`."""
    rows: list[dict] = []
    states: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    prompts = [p["prompt"] for p in train_pairs] * 2
    _, head, residual = last_hidden_states(model, tokenizer, prompts, [p["chosen"] for p in train_pairs] +
                                           [p["rejected"] for p in train_pairs], max_length=max_length)
    states["train"] = (head, residual)

    held_out = [p for p in test_pairs if p["domain"] in domains and p["chosen_gold"] != p["rejected_gold"]]
    if held_out:
        prompts = [p["prompt"] for p in held_out]
        chosen = last_hidden_states(model, tokenizer, prompts, [p["chosen"] for p in held_out], max_length=max_length)[0]
        rejected = last_hidden_states(model, tokenizer, prompts, [p["rejected"] for p in held_out], max_length=max_length)[0]
        rows.append({"split": "in_domain", "metric": "pair_accuracy", "value": float((chosen > rejected).mean())})
        rows.append({"split": "in_domain", "metric": "n_pairs", "value": float(len(held_out))})

    for split in BSR_SPLITS:
        chosen_groups = [g for g in groups if g["split"] == split and g["domain"] in domains]
        if not chosen_groups:
            continue
        prompts = [g["prompt"] for g in chosen_groups for _ in g["responses"]]
        responses = [r for g in chosen_groups for r in g["responses"]]
        rewards, head, residual = last_hidden_states(model, tokenizer, prompts, responses, max_length=max_length)
        states[split] = (head, residual)
        scores, start = [], 0
        for g in chosen_groups:
            scores.append(rewards[start:start + len(g["responses"])].tolist())
            start += len(g["responses"])
        tau, counted = kendall_tau_groups(scores, [g["gold"] for g in chosen_groups])
        rows.append({"split": split, "metric": "kendall_tau", "value": tau})
        rows.append({"split": split, "metric": "n_prompts", "value": float(counted)})

    common = min(len(head) for head, _ in states.values())
    rng = np.random.default_rng(seed)
    frames = []
    for split, (head, residual) in states.items():
        found = norm_statistics(head)
        found["effective_rank"] = effective_rank(head[rng.permutation(len(head))[:common]])
        frames.append(pd.DataFrame({"split": split, "state": "head input", "norm": np.linalg.norm(head, axis=1)}))
        if residual is not None:
            found.update(norm_statistics(residual, "residual_norm"))
            frames.append(pd.DataFrame({"split": split, "state": "residual", "norm": np.linalg.norm(residual, axis=1)}))
        rows.extend({"split": split, "metric": k, "value": v} for k, v in found.items())
    return rows, pd.concat(frames, ignore_index=True)


def effective_rank_shift(table: pd.DataFrame) -> pd.DataFrame:
    """Rows of metric `effective_rank_shift`: each split's effective rank minus the train split's
    (the BSR paper's train-to-eval shift), per (loss, seed)."""
    er = table[table["metric"] == "effective_rank"]
    train = er[er["split"] == "train"].set_index(["loss", "seed"])["value"]
    shift = er[er["split"] != "train"].copy()
    shift["value"] = shift["value"].to_numpy() - train.loc[list(zip(shift["loss"], shift["seed"]))].to_numpy()
    shift["metric"] = "effective_rank_shift"
    return shift


def summary_table(table: pd.DataFrame) -> pd.DataFrame:
    """Mean ± 95% CI over seeds per (loss, split, metric), with the BSR paper's BT and BSR values
    beside the Kendall τ and in-domain accuracy rows (a tiny-scale analogue, not a replication)."""
    from rmroute.report import ci95

    keep = table[~table["metric"].isin(["n_pairs", "n_prompts"])]
    out = keep.groupby(["loss", "split", "metric"], sort=False)["value"].agg(
        mean="mean", ci95=ci95, n_seeds="size").reset_index()
    out["paper"] = [BSR_TABLE5.get((s, m), (np.nan, np.nan))[0 if loss == "bt" else 1]
                    for loss, s, m in zip(out["loss"], out["split"], out["metric"])]
    return out


def norm_figure(norms: pd.DataFrame, png, pdf) -> None:
    """Hidden-state norm distributions, BT vs BSR: one panel per split (columns) and state (rows:
    the head's input, the residual before the final norm), all seeds pooled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    from rmroute.io import save_figure

    splits = list(dict.fromkeys(norms["split"]))
    grid = sns.displot(data=norms, x="norm", hue="loss", col="split", row="state", col_order=splits, kind="kde",
                       common_norm=False, fill=True, height=2.4, aspect=1.15, facet_kws={"sharex": False, "sharey": False})
    grid.set_titles("{row_name} · {col_name}")
    grid.set_axis_labels("L2 norm at the scored token", "density")
    grid.figure.suptitle("Last hidden state of the RM: BT vs BSR (all seeds)", y=1.03)
    save_figure(grid.figure, png, pdf)
    plt.close(grid.figure)
