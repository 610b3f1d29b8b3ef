"""BayesianRouter's controlled simulation: route a stream of held-out pairs whose per-RM
correctness is known, and count how often the picked RM labels the pair right. The only place
where gold reaches a learning router.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from rmroute.behaviour import best_offline_arm as _best_offline_arm
from rmroute.behaviour import majority_vote as _majority_vote
from rmroute.behaviour import scored_pairs as _scored_pairs
from rmroute.encoders import check_rm_order as _check_rm_order
from rmroute.encoders import encode_pairs, load_encoder
from rmroute.encoders import load_offline as _load_offline
from rmroute.io import save_figure
from rmroute.routers import arm_embeddings, make_router, pair_vector

SIMULATION_ROUTERS = (
    "random", "single-best", "majority-vote", "oracle", "linucb", "thompson", "thompson-noprior", "offline-only",
)
LINUCB_ALPHA = 0.1  # LASeR's exploration weight
MAX_CURVE_POINTS = 200


def _simulation_router(name: str, n_arms: int, dim: int, seed: int, prior: np.ndarray, best_arm: int, lambda0: float):
    if name == "linucb":
        return make_router("linucb", n_arms, dim, seed, alpha=LINUCB_ALPHA)
    if name == "single-best":
        return make_router("single", n_arms, dim, seed, arm=best_arm)
    if name == "offline-only":
        return make_router("offline-only", n_arms, dim, seed, arm_embeddings=prior)
    if name in ("thompson", "thompson-noprior"):
        prior_means = prior if name == "thompson" else None
        return make_router("thompson", n_arms, dim, seed, prior_means=prior_means, lambda0=lambda0)
    return make_router(name, n_arms, dim, seed)  # random, oracle


def _run_router(
    name: str, seed: int, correct: np.ndarray, pair_ctx: np.ndarray, prompt_ctx: np.ndarray, prior: np.ndarray,
    best_arm: int, batch_size: int, lambda0: float,
) -> tuple[np.ndarray, int]:
    """Per-pair correctness of what `name` picks along the stream, and its RM calls."""
    n, k = correct.shape
    if name == "majority-vote":
        return _majority_vote(correct), n * k
    per_batch = name == "linucb"
    contexts = prompt_ctx if per_batch else pair_ctx
    router = _simulation_router(name, k, contexts.shape[1], seed, prior, best_arm, lambda0)
    got = np.empty(n)
    for start in range(0, n, batch_size):
        rows = np.arange(start, min(start + batch_size, n))
        if per_batch:
            # LASeR: one RM for the whole batch, chosen on the batch's mean prompt embedding, one
            # update with the batch's mean reward.
            context = contexts[rows].mean(axis=0, keepdims=True)
            arm = router.select(context)
            got[rows] = correct[rows, arm[0]]
            router.update(context, arm, np.array([got[rows].mean()]))
        else:
            arms = router.select(contexts[rows], correct[rows]) if name == "oracle" else router.select(contexts[rows])
            got[rows] = correct[rows, arms]
            router.update(contexts[rows], arms, got[rows])
    return got, n * k if name == "oracle" else n


def routing_simulation(
    pair_paths: dict[str, str], behaviour_path: str, offline_dir: str, policy_free: bool = True,
    routers: list[str] = SIMULATION_ROUTERS, seeds: list[int] = (0, 1, 2, 3, 4), batch_size: int = 16,
    lambda0: float = 1.0, *, device: str = "cpu", threads: int = 1,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """BayesianRouter's controlled simulation: route a stream of held-out pairs whose per-RM
    correctness is known, and count how often the picked RM labels the pair right.

    This is the only place gold reaches a router: the learning routers are rewarded with the 0/1
    correctness of the RM they picked (already on the [0, 1] scale the quantile normaliser
    produces, so no normaliser is applied). The online DPO pipeline rewards them with training
    losses instead. `policy_free=True` (the only mode) means no policy exists: every context comes
    from the frozen offline encoder.

    Stream: the `test` pairs with a gold preference where the RMs disagree, shuffled by seed.
    Routers (`SIMULATION_ROUTERS`): random; single-best (best RM on the router_offline behaviour,
    not on the stream); majority-vote (every RM votes, ties count 0.5); oracle (a right RM when
    one exists; sees every verdict); linucb (α = 0.1, one RM per block of `batch_size` pairs,
    context = the block's mean prompt embedding); thompson (prior means = offline RM
    embeddings, prior precision `lambda0`); thompson-noprior (zero prior means); offline-only
    (argmax of the offline router). Per-pair routers pick per pair with context h(prompt, a, b),
    which is symmetric in the two responses so it does not reveal the chosen one, and learn after
    each block of `batch_size` pairs (feedback arrives after the step, as online).

    Returns (summary, curve). summary: router, seed, labelling_accuracy (mean correctness of the
    pick), regret (pairs where the per-pair oracle is right minus the router's correct picks, at
    the end), rm_calls (RM verdicts requested: one per pair, K for majority-vote and oracle),
    n_pairs. curve: router, seed, step, cumulative_regret, at ≤ 200 steps per run.
    """
    if not policy_free:
        raise ValueError("policy_free=False needs policy hidden states; the controlled simulation has no policy")
    if unknown := [r for r in routers if r not in SIMULATION_ROUTERS]:
        raise ValueError(f"unknown router(s) {unknown}; valid: {', '.join(SIMULATION_ROUTERS)}")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not list(seeds):
        raise ValueError("seeds must name at least one seed")
    if "test" not in pair_paths:
        raise ValueError(f"pair_paths needs the 'test' split for the stream, got {sorted(pair_paths)}")
    torch.set_num_threads(max(1, int(threads)))
    model, meta = _load_offline(offline_dir)
    encoder = load_encoder(meta["encoder"], device)
    behaviour = pd.read_parquet(behaviour_path)
    pairs, correct, rm_ids = _scored_pairs(pair_paths["test"], behaviour, "test")
    _check_rm_order(meta, rm_ids, offline_dir)
    # Encoded once, shared by every router and seed.
    pair_ctx = pair_vector(model, *encode_pairs(encoder, pairs))
    prompt_ctx = encoder.encode([p["prompt"] for p in pairs]).astype(np.float64)
    prior = arm_embeddings(model)
    best_arm = _best_offline_arm(behaviour, rm_ids)

    n = len(pairs)
    steps = np.unique(np.linspace(1, n, min(n, MAX_CURVE_POINTS)).round().astype(int))
    summary, curve = [], []
    for seed in seeds:
        # A child of the seed, so the stream order is independent of the routers' own draws.
        order = np.random.default_rng(np.random.SeedSequence(int(seed)).spawn(1)[0]).permutation(n)
        oracle_right = (correct[order] > 0.5).any(axis=1).astype(float)
        for name in routers:
            got, calls = _run_router(name, int(seed), correct[order], pair_ctx[order], prompt_ctx[order], prior,
                                     best_arm, int(batch_size), lambda0)
            regret = np.cumsum(oracle_right - got)
            summary.append({"router": name, "seed": int(seed), "labelling_accuracy": float(got.mean()),
                            "regret": float(regret[-1]), "rm_calls": int(calls), "n_pairs": n})
            curve.append(pd.DataFrame({"router": name, "seed": int(seed), "step": steps, "cumulative_regret": regret[steps - 1]}))
    return pd.DataFrame(summary), pd.concat(curve, ignore_index=True)


def regret_figure(curve_df: pd.DataFrame, out_png: str, out_pdf: str) -> None:
    """Mean cumulative regret against step, one line per router, 95% bootstrap CI over seeds."""
    import seaborn as sns
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.2))
    axes = figure.subplots()
    sns.lineplot(data=curve_df, x="step", y="cumulative_regret", hue="router", errorbar=("ci", 95), seed=0, ax=axes)
    axes.set_xlabel("pairs routed")
    axes.set_ylabel("cumulative regret (pairs)")
    axes.set_title("Controlled routing simulation")
    figure.tight_layout()
    save_figure(figure, out_png, out_pdf)
