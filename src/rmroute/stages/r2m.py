"""R2M beside its controls: the one-iteration probe and the tables of R2M in the loop."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rmroute import models
from rmroute.gold import gold_pair_accuracy
from rmroute.io import read_jsonl, write_table
from rmroute.published import R2M_TABLE3


R2M_VARIANTS = {"r2m": "policy", "r2m-noise": "noise", "r2m-untrained": "untrained", "base": "off"}  # variant -> feedback


R2M_TRAINED = [v for v, feedback in R2M_VARIANTS.items() if feedback != "off"]  # the variants with a state file


def r2m_probe(rollouts_path: str, policy_dir: str, base_rm_dir: str, fresh_rollouts_path: str, r2m: dict, seed: int,
              threads: int, device: str, out_table: str, out_states: dict[str, str],
              rollout_policy_dir: str | None = None) -> None:
    """Train R2M and its two controls for one iteration, and measure them beside the plain base RM.

    `rollouts_path` holds the iteration's groups (prompt, responses, gold); `policy_dir` is the
    policy after the iteration's update, whose last-layer hidden states of every prompt +
    response are R2M's feedback (the paper refreshes them with the policy's last update);
    `fresh_rollouts_path` holds the next iteration's groups, sampled by that policy. Each R2M
    variant labels the iteration with its own initial scores (at ω(T), with the hidden states of
    `rollout_policy_dir`, the policy that sampled the iteration, as in the loop where R2M scores
    the rollouts before the update; default `policy_dir`), trains on its own best vs worst pairs,
    and saves its state to `out_states[variant]`. The table's rows (variant, seed,
    split, domain, metric, value) give gold pair accuracy and pair counts on the iteration's
    rollouts (`train`) and on the fresh ones (`fresh`), per domain and over all (`all`)."""
    from rmroute.rewards.r2m import R2M, R2MConfig, policy_hidden_states

    if set(out_states) != set(R2M_TRAINED):
        raise ValueError(f"out_states must name a state file for each of {R2M_TRAINED}, got {sorted(out_states)}")
    models.set_threads(threads)
    policy = models.load_policy(policy_dir, device=device)
    tokenizer = models.load_tokenizer(policy_dir)
    splits = {"train": read_jsonl(rollouts_path), "fresh": read_jsonl(fresh_rollouts_path)}
    size = len(splits["train"][0]["responses"])
    flat = {name: ([g["prompt"] for g in groups for _ in g["responses"]], [r for g in groups for r in g["responses"]])
            for name, groups in splits.items()}
    hidden = {name: policy_hidden_states(policy, tokenizer, *rows) for name, rows in flat.items()}
    policy_dim = policy.config.hidden_size
    labelling = hidden["train"]
    if rollout_policy_dir and rollout_policy_dir != policy_dir:
        before = models.load_policy(rollout_policy_dir, device=device)
        labelling = policy_hidden_states(before, models.load_tokenizer(rollout_policy_dir), *flat["train"])
        del before
    del policy
    settings = {k: v for k, v in r2m.items() if k != "method"}

    def by_group(values, n):
        return [list(values[i:i + n]) for i in range(0, len(values), n)]

    scores: dict[str, dict[str, list[list[float]]]] = {}
    states = None  # the frozen base RM's H_last, the same for every variant
    for variant, feedback in R2M_VARIANTS.items():
        model = R2M.from_base(base_rm_dir, policy_dim, R2MConfig(**settings, feedback=feedback, seed=seed), device=device)
        model.total_steps = model.steps_per_update(len(splits["train"]))
        if states is None:
            states = {name: model.rm_states(*rows) for name, rows in flat.items()}
        own = by_group(model.score_states(states["train"], labelling).tolist(), size)
        model.update([g["prompt"] for g in splits["train"]], [g["responses"] for g in splits["train"]], own,
                     by_group(hidden["train"], size))
        if variant in out_states:
            model.save(out_states[variant])
        scores[variant] = {name: by_group(model.score_states(states[name], hidden[name]).tolist(), size) for name in splits}
    rows = []
    for variant, per_split in scores.items():
        for name, groups in splits.items():
            domains = sorted({g["domain"] for g in groups})
            for domain in ["all", *domains]:
                keep = [i for i, g in enumerate(groups) if domain in ("all", g["domain"])]
                acc, n = gold_pair_accuracy([groups[i] for i in keep], [per_split[name][i] for i in keep])
                rows += [{"variant": variant, "seed": seed, "split": name, "domain": domain, "metric": "gold_pair_accuracy",
                          "value": acc}, {"variant": variant, "seed": seed, "split": name, "domain": domain,
                                          "metric": "n_pairs", "value": float(n)}]
    write_table(pd.DataFrame(rows), out_table)


def r2m_tables(tables: list[str], out_table: str, out_summary: str) -> None:
    """r2m.tsv (every seed's rows) and the gold pair accuracy per variant, split and domain as
    mean ± 95% CI over seeds, with the paper's RM accuracy beside the fresh-rollout rows (in %;
    theirs is an RLOO run at 8B scale, ours one iteration of iterative DPO on the testbed)."""
    from rmroute.report import ci95

    table = pd.concat([pd.read_parquet(p) for p in tables], ignore_index=True)
    write_table(table, out_table)
    acc = table[table["metric"] == "gold_pair_accuracy"]
    summary = acc.groupby(["variant", "split", "domain"], sort=False)["value"].agg(
        mean="mean", ci95=ci95, n_seeds="size").reset_index()
    summary["paper_pct"] = [R2M_TABLE3.get(v, np.nan) if (s, d) == ("fresh", "all") else np.nan
                            for v, s, d in zip(summary["variant"], summary["split"], summary["domain"])]
    write_table(summary, out_summary)


def r2m_loop_tables(decisions: dict[str, list[str]], evals: dict[str, list[str]], out_table: str,
                    out_summary: str) -> None:
    """r2m.tsv: R2M trained in the loop, its two controls and the plain base RM, each the RM of a
    single-RM run (`decisions[variant]` / `evals[variant]`: that run's decision logs per seed and
    eval tables per seed and iteration, paths .../<seed>/it<i>/eval.tsv).

    Per variant, seed and iteration: `rm_pair_accuracy`, the RM's gold pair accuracy over every
    candidate pair of the iteration's fresh rollouts (sampled by the policy entering the
    iteration, before the RM learns from them; gold is read for this table only), and
    `policy_accuracy`, the run's test accuracy after the iteration (mean over domains), both in
    %. The summary gives mean ± 95% CI over seeds beside the paper's RM accuracy (72.3 -> 78.6,
    an RLOO run at 8B scale; ours serves iterative DPO on the testbed)."""
    import re

    from rmroute.report import ci95

    rows = []
    for variant, paths in decisions.items():
        for path in paths:
            log = pd.read_parquet(path)
            for (seed, it), part in log.groupby(["seed", "iteration"]):
                total = part["gold_pairs"].sum()
                rows.append({"variant": variant, "seed": int(seed), "iteration": int(it), "metric": "rm_pair_accuracy",
                             "value": 100.0 * part["gold_pairs_agree"].sum() / total if total else np.nan})
    for variant, paths in evals.items():
        for path in paths:
            seed, it = map(int, re.search(r"/(\d+)/it(\d+)/eval\.tsv$", str(path)).groups())
            table = pd.read_csv(path, sep="\t")
            acc = table[table["metric"] == "accuracy"]["value"].mean()
            rows.append({"variant": variant, "seed": seed, "iteration": it, "metric": "policy_accuracy",
                         "value": 100.0 * acc})
    table = pd.DataFrame(rows).sort_values(["metric", "variant", "seed", "iteration"], ignore_index=True)
    write_table(table, out_table)
    summary = table.groupby(["metric", "variant", "iteration"], sort=False)["value"].agg(
        mean="mean", ci95=ci95, n_seeds="size").reset_index()
    summary["paper_pct"] = [R2M_TABLE3.get(v, np.nan) if m == "rm_pair_accuracy" else np.nan
                            for m, v in zip(summary["metric"], summary["variant"])]
    write_table(summary, out_summary)
