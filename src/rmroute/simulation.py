"""BayesianRouter's controlled simulation: route a stream of held-out pairs whose per-RM
correctness is known, and count how often the picked RM labels the pair right. The only place
where gold reaches a learning router.

The stream is cut into batches as online training cuts its prompts (`budget.batch_order`, one
batch of `batch_size` pairs per step); LinUCB decides once per batch on the batch's mean prompt
context, from the same policy embedding it uses online; per-pair routers decide per pair on the
frozen offline encoder's pair vector h(prompt, a, b); every router learns after each batch, as
online. Thompson sampling runs at each prior precision λ0 of `lambda0s`, with and without the
offline prior. Two streams: `validation` (the offline pairs the offline router held out to pick
its checkpoint, for choosing settings such as λ0) and `test` (for reporting).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

from rmroute.behaviour import best_offline_arm, majority_vote, scored_pairs
from rmroute.encoders import (
    ENCODER_FILE,
    check_rm_order,
    encode_pairs,
    load_encoder,
    load_offline,
)
from rmroute.io import save_figure
from rmroute.methods import Method, build_router
from rmroute.online import training_batches
from rmroute.routers import arm_embeddings, pair_vector
from rmroute.seeding import child_rng

SIMULATION_ROUTERS = (
    "random", "single-best", "majority-vote", "oracle", "linucb", "thompson", "thompson-noprior", "offline-only",
)
STREAMS = ("validation", "test")
MAX_CURVE_POINTS = 200


def _method(name: str, best_arm: int, lambda0: float) -> Method:
    """The method a simulated router stands for, built by the factory the online loop uses."""
    return {
        "random": Method(name=name, router="random"),
        "single-best": Method(name=name, router="single", arm=best_arm),
        "linucb": Method(name=name, router="linucb"),
        "thompson": Method(name=name, router="thompson", granularity="pair", lambda0=lambda0),
        "thompson-noprior": Method(name=name, router="thompson", granularity="pair", lambda0=lambda0, prior="zero"),
        "offline-only": Method(name=name, router="offline-only", granularity="pair"),
    }[name]


def _run_router(name: str, lambda0: float, seed: int, correct: np.ndarray, pair_ctx: np.ndarray, prompt_ctx: np.ndarray,
                prior: np.ndarray, best_arm: int, batches: list[list[int]]) -> tuple[np.ndarray, int]:
    """Per-pair correctness of what `name` picks along the stream (in batch order), and its RM calls."""
    n, k = correct.shape
    order = np.concatenate(batches)
    if name == "majority-vote":
        return majority_vote(correct[order]), n * k
    if name == "oracle":  # the pipeline's oracle: a right RM whenever one exists (it sees every verdict)
        oracle = build_router(Method(name=name, router="oracle"), k, 1, seed)
        picks = [correct[rows, oracle.select(np.zeros((len(rows), 1)), correct=correct[rows])] for rows in map(np.asarray, batches)]
        return np.concatenate(picks), n * k
    method = _method(name, best_arm, lambda0)
    per_batch = method.router_class.context == "prompt"  # LASeR: one decision per batch on its mean prompt context
    contexts = prompt_ctx if per_batch else pair_ctx
    router = build_router(method, k, contexts.shape[1], seed, prior)
    got = []
    for rows in batches:
        rows = np.asarray(rows)
        if per_batch:
            # LASeR: one RM for the batch, on the batch's mean prompt context; one update with the
            # batch's mean correctness.
            context = contexts[rows].mean(axis=0, keepdims=True)
            arm = router.select(context)
            picked = correct[rows, arm[0]]
            router.update(context, arm, np.array([picked.mean()]))
        else:
            arms = router.select(contexts[rows])
            picked = correct[rows, arms]
            router.update(contexts[rows], arms, picked)
        got.append(picked)
    return np.concatenate(got), n


def _stream(name: str, pair_paths: dict[str, str], behaviour: pd.DataFrame, meta: dict):
    """(pairs, correct, rm_ids) of a stream: the test pairs, or the offline router's held-out pairs."""
    if name == "test":
        return scored_pairs(pair_paths["test"], behaviour, "test")
    pairs, correct, rm_ids = scored_pairs(pair_paths["router_offline"], behaviour, "router_offline")
    held_out = set(meta.get("validation_pair_ids", []))
    if not held_out:
        raise ValueError(f"the offline router's {ENCODER_FILE} lists no validation_pair_ids; retrain it")
    keep = np.array([p["id"] in held_out for p in pairs])
    return [p for p, k in zip(pairs, keep) if k], correct[keep], rm_ids


def routing_simulation(
    pair_paths: dict[str, str], behaviour_path: str, offline_dir: str, *,
    prompt_context: Callable[[list[str]], np.ndarray] | None = None,
    routers: list[str] = SIMULATION_ROUTERS, seeds: list[int] = (0, 1, 2, 3, 4), batch_size: int = 16,
    batch_order: str = "interleaved", lambda0s: list[float] = (1.0,), streams: list[str] = STREAMS,
    device: str = "cpu",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Route each stream with every router and seed; the learning routers are rewarded with the
    0/1 correctness of the RM they picked (already on the [0, 1] scale the quantile normaliser
    produces, so no normaliser is applied). The online DPO pipeline rewards them with training
    losses instead.

    `prompt_context` gives LinUCB its prompt vectors (the workflow passes the SFT policy's
    last-token hidden states, LinUCB's online context); without it the offline encoder's prompt
    vectors are used. Routers (`SIMULATION_ROUTERS`): random; single-best (the best RM on the
    router_offline behaviour, not on the stream); majority-vote (every RM votes, ties count 0.5);
    oracle (a right RM when one exists); linucb (α = 0.1, one RM per batch); thompson (prior
    means = offline RM embeddings, prior precision λ0 for each of `lambda0s`); thompson-noprior
    (zero prior means, the same λ0s); offline-only (argmax of the offline router).

    Returns (summary, curve). summary: stream, router, lambda0 (Thompson rows; NaN otherwise),
    seed, labelling_accuracy (mean correctness of the pick), regret (pairs where the oracle is
    right minus the router's correct picks, at the end), rm_calls (one per pair; K for
    majority-vote and oracle), n_pairs. curve: stream, router, lambda0, seed, step,
    cumulative_regret, at ≤ 200 steps per run.
    """
    if unknown := [r for r in routers if r not in SIMULATION_ROUTERS]:
        raise ValueError(f"unknown router(s) {unknown}; valid: {', '.join(SIMULATION_ROUTERS)}")
    if unknown := [s for s in streams if s not in STREAMS]:
        raise ValueError(f"unknown stream(s) {unknown}; valid: {', '.join(STREAMS)}")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not list(seeds):
        raise ValueError("seeds must name at least one seed")
    if not list(lambda0s) or min(lambda0s) <= 0:
        raise ValueError(f"lambda0s must be a non-empty list of numbers > 0, got {list(lambda0s)}")
    needed = {"test"} | ({"router_offline"} if "validation" in streams else set())
    if missing := sorted(needed - set(pair_paths)):
        raise ValueError(f"pair_paths needs the split(s) {missing} for the streams {list(streams)}, got {sorted(pair_paths)}")
    model, meta = load_offline(offline_dir)
    encoder = load_encoder(meta["encoder"], device)
    behaviour = pd.read_parquet(behaviour_path)
    prior = arm_embeddings(model)

    summary, curve = [], []
    for stream in streams:
        pairs, correct, rm_ids = _stream(stream, pair_paths, behaviour, meta)
        check_rm_order(meta, rm_ids, offline_dir)
        # Encoded once per stream, shared by every router and seed.
        pair_ctx = pair_vector(model, *encode_pairs(encoder, pairs))
        prompts = [p["prompt"] for p in pairs]
        prompt_ctx = np.asarray(prompt_context(prompts) if prompt_context else encoder.encode(prompts), dtype=np.float64)
        best_arm = best_offline_arm(behaviour, rm_ids)
        n = len(pairs)
        steps = np.unique(np.linspace(1, n, min(n, MAX_CURVE_POINTS)).round().astype(int))
        for seed in seeds:
            # The stream order depends on the seed alone, never on the routers' own draws.
            shuffled = child_rng(seed).permutation(n)
            records = [{"domain": pairs[i]["domain"]} for i in shuffled]
            batches = [[int(shuffled[j]) for j in batch] for batch in training_batches(records, batch_size, batch_order, seed)]
            order = np.concatenate(batches)
            oracle_right = (correct[order] > 0.5).any(axis=1).astype(float)
            runs = [(name, lam) for name in routers for lam in (lambda0s if name.startswith("thompson") else [np.nan])]
            for name, lam in runs:
                got, calls = _run_router(name, lam, int(seed), correct, pair_ctx, prompt_ctx, prior, best_arm, batches)
                regret = np.cumsum(oracle_right - got)
                summary.append({"stream": stream, "router": name, "lambda0": lam, "seed": int(seed),
                                "labelling_accuracy": float(got.mean()), "regret": float(regret[-1]),
                                "rm_calls": int(calls), "n_pairs": n})
                curve.append(pd.DataFrame({"stream": stream, "router": name, "lambda0": lam, "seed": int(seed),
                                           "step": steps, "cumulative_regret": regret[steps - 1]}))
    return pd.DataFrame(summary), pd.concat(curve, ignore_index=True)


def simulation_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean labelling accuracy ± 95% CI over seeds per stream, router and λ0, and
    `chosen_lambda0`: the λ0 whose Thompson router (with the offline prior) labels the validation
    stream best, marked on every Thompson row of that λ0 (never chosen on the test stream)."""
    from rmroute.report import ci95

    keys = ["stream", "router", "lambda0"]
    summary = (table.groupby(keys, sort=False, dropna=False)["labelling_accuracy"]
               .agg(mean="mean", ci95=ci95, n_seeds="size").reset_index())
    chosen = best_lambda0(table) if ((table["stream"] == "validation") & (table["router"] == "thompson")).any() else None
    summary["chosen_lambda0"] = (summary["router"] == "thompson") & (summary["lambda0"] == chosen)
    return summary


def best_lambda0(table: pd.DataFrame) -> float:
    """The λ0 whose Thompson router (with the offline prior) labels the validation stream best."""
    rows = table[(table["stream"] == "validation") & (table["router"] == "thompson")]
    if rows.empty:
        raise ValueError("no Thompson rows on the validation stream to choose λ0 from")
    return float(rows.groupby("lambda0")["labelling_accuracy"].mean().idxmax())


def regret_figure(curve_df: pd.DataFrame, out_png: str, out_pdf: str) -> None:
    """Mean cumulative regret on the test stream against pairs routed, one line per router (and
    λ0 for Thompson), 95% bootstrap CI over seeds."""
    import seaborn as sns
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    curve = curve_df[curve_df["stream"] == "test"] if "stream" in curve_df else curve_df
    label = curve["router"].astype(str)
    if "lambda0" in curve:
        label = label.where(curve["lambda0"].isna(), label + " (λ0=" + curve["lambda0"].map("{:g}".format) + ")")
    curve = curve.assign(router=label)
    figure = Figure(figsize=(7.6, 4.4))
    axes = figure.subplots()
    # A dash pattern per router and faint bands keep eight overlapping routers apart; the legend
    # sits outside the axes, where it hides no curve.
    sns.lineplot(data=curve, x="step", y="cumulative_regret", hue="router", style="router", errorbar=("ci", 95), seed=0,
                 err_kws={"alpha": 0.12}, ax=axes)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("test pairs routed")
    axes.set_ylabel("cumulative regret (pairs)")
    axes.set_title("Controlled routing simulation (gold rewards; mean, 95% CI over seeds)")
    axes.legend(title="router", fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    figure.tight_layout()
    save_figure(figure, out_png, out_pdf)
