"""Tables and figures: tidy TSVs (one row per observation) and seaborn figures, each also in the
shape of the paper table it stands beside, with the published numbers next to ours."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from rmroute import evaluate
from rmroute.io import read_jsonl, save_figure
from rmroute.published import BAYES_TABLE1, LASER_TABLE1  # noqa: F401 (the Table 1 analogues' published numbers)

# Our testbed domain -> the benchmark it stands in for (its published numbers: rmroute.published).
BENCHMARK_OF = {"arith": "GSM8K", "facts_mc": "MMLU", "facts_yesno": "StrategyQA", "instruct": "instruction following"}


BEST_SINGLE = "best-single-rm"  # the paper tables' row of the best single RM (the key of the published numbers)
# A baseline generated under a recipe (`<baseline>@<recipe>`) is the paper row of its baseline name;
# these baselines have another name in the paper tables.
PAPER_ROW_OF = {"ensemble-vote": "majority-vote", "linucb": "laser"}


def paper_row(method: str) -> str:
    """The published row a method stands beside: its name without `@<recipe>`, as the paper calls it."""
    name = method.split("@", 1)[0]
    return PAPER_ROW_OF.get(name, name) if "@" in method else name


def ci95(values) -> float:
    """Half-width of the two-sided 95% t-interval of the mean (0 for a single seed)."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return 0.0
    return float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))


def t_interval(values) -> tuple[float, float]:
    """(low, high) of the 95% t-interval of the mean: `ci95` as a seaborn `errorbar`."""
    mean = float(np.mean(values))
    half = ci95(values)
    return mean - half, mean + half


def percent_limits(low: float, high: float) -> tuple[float, float]:
    """Axis limits for a percentage: inside 0-100 (a wide CI over few seeds would reach past it),
    at least 10 points tall (a flat 0% line would otherwise get an axis of ±0.05)."""
    low, high = max(low, -2.0), min(high, 102.0)
    if high - low < 10:
        low = max(-2.0, (low + high) / 2 - 5)
        high = low + 10
    return low, high


def sft_accuracy(eval_tsv: str) -> pd.DataFrame:
    table = pd.read_csv(eval_tsv, sep="\t")
    out = table[table["metric"] == "accuracy"][["domain", "value"]].rename(columns={"value": "accuracy"})
    return out.reset_index(drop=True)


def rm_accuracy(behaviour: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Pair accuracy of every RM per domain on held-out pairs that gold can tell apart."""
    rows = behaviour[(behaviour["split"] == split) & (behaviour["gold_tie"] == 0)]
    table = rows.groupby(["rm", "domain"], sort=False)["correct"].agg(["mean", "size"]).reset_index()
    return table.rename(columns={"mean": "accuracy", "size": "n_pairs"})


def rm_complementarity(table: pd.DataFrame) -> pd.DataFrame:
    """Best single RM (by mean over domains) vs picking the best RM per domain."""
    wide = table.pivot(index="rm", columns="domain", values="accuracy")
    best_single = wide.mean(axis=1).idxmax()
    return pd.DataFrame([
        {"quantity": "best_single_rm", "rm": best_single, "mean_accuracy": float(wide.loc[best_single].mean())},
        {"quantity": "best_rm_per_domain", "rm": ",".join(wide.idxmax().tolist()), "mean_accuracy": float(wide.max().mean())},
    ])


def heatmap(table: pd.DataFrame, index: str, columns: str, values: str, title: str, png, pdf, fmt: str = ".2f") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    # Rows in the table's order (the config's method or RM order), not pivot's alphabetical one.
    wide = table.pivot(index=index, columns=columns, values=values).reindex(table[index].drop_duplicates())
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * wide.shape[1], 1.0 + 0.5 * wide.shape[0]))
    sns.heatmap(wide, annot=True, fmt=fmt, cmap="viridis", vmin=0, vmax=1, ax=ax, cbar_kws={"label": values})
    ax.tick_params(axis="y", labelrotation=0)  # row names read across, not up the page
    ax.set_title(title)
    save_figure(fig, png, pdf)
    plt.close(fig)


ACCURACY_COLUMNS = ["method", "seed", "iteration", "domain", "accuracy"]


def run_accuracy(eval_files: list[tuple[str, int, int, str]]) -> pd.DataFrame:
    """Tidy (method, seed, iteration, domain, accuracy) from per-iteration evaluation tables given
    as (method, seed, iteration, path): eval.tsv (test) or eval_validation.tsv (validation split)."""
    rows = []
    for method, seed, it, path in eval_files:
        table = pd.read_csv(path, sep="\t")
        for _, r in table[table["metric"] == "accuracy"].iterrows():
            rows.append({"method": method, "seed": seed, "iteration": it, "domain": r["domain"], "accuracy": r["value"]})
    return pd.DataFrame(rows, columns=ACCURACY_COLUMNS)


def policy_accuracy(eval_files: list[tuple[str, int, int, str]], sft_eval: str, methods: list[str], seeds: list[int]) -> pd.DataFrame:
    """Tidy (method, seed, iteration, domain, accuracy) on test; iteration 0 is the SFT policy for every method."""
    sft = sft_accuracy(sft_eval)
    rows = [{"method": m, "seed": s, "iteration": 0, "domain": d, "accuracy": a}
            for m in methods for s in seeds for d, a in zip(sft["domain"], sft["accuracy"])]
    return pd.DataFrame(rows + run_accuracy(eval_files).to_dict("records"), columns=ACCURACY_COLUMNS)


def win_rates(eval_files: list[tuple[str, int, int, str]]) -> pd.DataFrame:
    rows = []
    for method, seed, it, path in eval_files:
        table = pd.read_csv(path, sep="\t")
        for _, r in table[table["metric"] == "win_rate_vs_sft"].iterrows():
            rows.append({"method": method, "seed": seed, "iteration": it, "domain": r["domain"], "win_rate_vs_sft": r["value"]})
    return pd.DataFrame(rows)


def summary_table(acc: pd.DataFrame, iteration: int, published: dict | None = None, sft_label: str = "sft",
                  best_single: str | None = None) -> pd.DataFrame:
    """Methods x (domains + avg) at one iteration: mean and 95% CI over seeds (accuracy in %),
    with the SFT row and, where the paper has one, the published number for the analogous cell.
    `best_single` (a method, chosen elsewhere) adds its rows again as the paper's `best-single-rm`
    row, after SFT, with its name in `chosen_method`."""
    final = acc[acc["iteration"] == iteration]
    sft = acc[acc["iteration"] == 0].drop_duplicates(["seed", "domain"]).assign(method=sft_label)
    frames = [sft, final]
    if best_single is not None:
        if BEST_SINGLE in set(acc["method"]):
            raise ValueError(f"a method is named {BEST_SINGLE!r}, the label of the best single RM's row; rename it")
        frames.insert(1, final[final["method"] == best_single].assign(method=BEST_SINGLE))
    rows = []
    for frame in frames:
        per_seed = frame.pivot_table(index=["method", "seed"], columns="domain", values="accuracy").reset_index()
        domains = [c for c in per_seed.columns if c not in ("method", "seed")]
        per_seed["avg"] = per_seed[domains].mean(axis=1)
        for method, group in per_seed.groupby("method", sort=False):
            for domain in [*domains, "avg"]:
                values = 100 * group[domain].to_numpy()
                bench = BENCHMARK_OF.get(domain, "avg" if domain == "avg" else None)
                paper = (published or {}).get(paper_row(method), {}).get(bench) if published else None
                rows.append({"method": method, "domain": domain, "benchmark_analogue": bench, "mean": values.mean(),
                             "ci95": ci95(values), "n_seeds": len(values), "paper": paper,
                             "chosen_method": best_single if method == BEST_SINGLE else None})
    return pd.DataFrame(rows)


def paper_table(acc: pd.DataFrame, validation: pd.DataFrame, iteration: int, published: dict, recipe: str,
                candidates: list[str], split: str, methods: list[str] | None = None) -> tuple[pd.DataFrame, str]:
    """`summary_table` of a paper table whose `best-single-rm` row is the best of `candidates`
    (the single-RM methods of `recipe`) on the validation split, reported on test; and a note
    saying which method that is, or why the row is absent. `methods` (those trained with
    `recipe`) are the table's rows beside SFT, so that it compares within one recipe."""
    if methods is not None:
        acc = acc[acc["method"].isin(methods) | (acc["iteration"] == 0)]
    if not candidates:
        return summary_table(acc, iteration, published), (
            f"No {BEST_SINGLE} row: no single-RM method (router single, no score noise, not an R2M row) "
            f"trains with recipe {recipe!r}.")
    chosen = evaluate.best_single(validation, candidates)
    return summary_table(acc, iteration, published, best_single=chosen), (
        f"{BEST_SINGLE} = {chosen}: of the single-RM methods of recipe {recipe!r} ({', '.join(candidates)}), the one "
        f"with the highest accuracy on the {split} split after the last iteration (mean over domains and seeds), "
        "chosen without the test split; its test accuracy is reported.")


def summary_markdown(table: pd.DataFrame, title: str, note: str = "") -> str:
    """The wide 'mean ± CI' layout of a paper table, with the published number in brackets; the
    best-single-rm row names its method, and `note` follows the standard one."""
    cell = table.apply(lambda r: f"{r['mean']:.1f} ± {r['ci95']:.1f}" + (f" [{r['paper']:.1f}]" if pd.notna(r["paper"]) else ""), axis=1)
    label = table["method"]
    if "chosen_method" in table:
        label = label.where(table["chosen_method"].isna(), label + " (" + table["chosen_method"].astype(str) + ")")
    wide = table.assign(cell=cell, method=label).pivot(index="method", columns="domain", values="cell")
    wide = wide.reindex(index=list(dict.fromkeys(label)))
    cols = [c for c in wide.columns if c != "avg"] + ["avg"]
    standard = ("Tiny-scale analogue on the embedded testbed: accuracy % (mean ± 95% CI over seeds); "
                "[published Llama-3-8B number of the analogous benchmark], which is not directly comparable.")
    notes = "\n\n".join(n for n in (standard, note) if n)
    return f"# {title}\n\n{notes}\n\n" + wide[cols].reset_index().to_markdown(index=False) + "\n"


def accuracy_figure(acc: pd.DataFrame, png, pdf) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.ticker import MaxNLocator

    avg = acc.groupby(["method", "seed", "iteration"], as_index=False)["accuracy"].mean().assign(domain="average")
    data = pd.concat([acc, avg])
    data["accuracy"] *= 100
    # Bands are the tables' t-interval (ci95), not seaborn's bootstrap, which over 2-3 seeds is
    # their min-max range; a marker per method keeps coinciding lines apart.
    grid = sns.relplot(data=data, x="iteration", y="accuracy", hue="method", style="method", col="domain", col_wrap=3,
                       kind="line", errorbar=t_interval, markers=True, dashes=False, height=3.0, aspect=1.2,
                       err_kws={"alpha": 0.15}, facet_kws={"sharey": False})
    grid.set_titles("{col_name}")
    grid.set_axis_labels("iteration (0 = SFT)", "test accuracy (%)")
    for ax in grid.axes.flat:  # iterations are whole numbers; accuracy stays within 0-100 where a wide CI would not
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(*percent_limits(*ax.get_ylim()))
    grid.figure.suptitle("Policy accuracy per iteration (mean, 95% t-interval over seeds)", y=1.02)
    save_figure(grid.figure, png, pdf)
    plt.close(grid.figure)


def router_choices(decisions: pd.DataFrame) -> pd.DataFrame:
    """How often each method's router picked each RM, per iteration and domain (one count per
    routed query row; per-pair routers count every candidate pair), as a count and a share."""
    counts = decisions.groupby(["method", "iteration", "domain", "rm"], sort=False).size().rename("count").reset_index()
    counts["share"] = counts["count"] / counts.groupby(["method", "iteration", "domain"])["count"].transform("sum")
    return counts.sort_values(["method", "iteration", "domain", "rm"], kind="stable").reset_index(drop=True)


def gold_best_share(choices: pd.DataFrame, rm_accuracy: pd.DataFrame) -> pd.DataFrame:
    """Analysis only (gold enters here): per method, iteration and domain, the share of routed
    decisions that went to the domain's gold-best RM of the method's own pool, i.e. the RM with the
    highest pair accuracy on that domain's held-out test pairs (`tables/rm_accuracy.tsv`).
    Methods that route (several RMs picked over the run) only; ties between RMs go to the first."""
    routed = choices.groupby("method")["rm"].transform("nunique") > 1
    rows = []
    for (method, it, domain), part in choices[routed].groupby(["method", "iteration", "domain"], sort=False):
        pool = set(choices.loc[choices["method"] == method, "rm"])
        acc = rm_accuracy[(rm_accuracy["domain"] == domain) & rm_accuracy["rm"].isin(pool)]
        if acc.empty:
            continue
        best = acc.sort_values(["accuracy", "rm"], ascending=[False, True], kind="stable")["rm"].iloc[0]
        rows.append({"method": method, "iteration": it, "domain": domain, "best_rm": best,
                     "best_rm_accuracy": float(acc["accuracy"].max()),
                     "share": float(part.loc[part["rm"] == best, "count"].sum() / part["count"].sum()),
                     "chance": 1.0 / len(pool)})
    return pd.DataFrame(rows, columns=["method", "iteration", "domain", "best_rm", "best_rm_accuracy", "share", "chance"])


def router_choice_figure(choices: pd.DataFrame, png, pdf) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    domains = sorted(choices["domain"].unique())
    overall = choices.groupby(["method", "domain", "rm"], sort=False)["count"].sum().reset_index()
    overall["share"] = overall["count"] / overall.groupby(["method", "domain"])["count"].transform("sum")
    grid = sns.catplot(data=overall, x="domain", y="share", hue="rm", col="method", col_wrap=4, kind="bar", height=2.6,
                       aspect=1.3, order=domains)
    grid.set_titles("{col_name}")
    # Name the domains under every panel: the grid otherwise labels only its bottom row, and
    # FacetGrid.set_xticklabels() before a draw reads back empty labels and blanks even those.
    for ax in grid.axes.flat:
        ax.tick_params(labelbottom=True)
        ax.set_xticks(range(len(domains)))
        ax.set_xticklabels(domains, rotation=30, ha="right")
    grid.tight_layout()  # room for those labels between the rows
    grid.figure.suptitle("Which RM each router picked, per domain (share of routed queries)", y=1.02)
    save_figure(grid.figure, png, pdf)
    plt.close(grid.figure)


def reward_validity(decisions: pd.DataFrame, by: str = "reward_timing", variants: tuple = ("step", "after_update")) -> pd.DataFrame:
    """Does the loss-based bandit reward tell good RMs from bad ones? Analysis only: gold enters here.

    Per method, reward timing, domain and RM (`rm` = the routed RM, or `all`): decisions with a
    reward (`n_decisions`), their pairs (`n_pairs`), the RM's gold pair accuracy there (the pairs'
    share whose chosen response gold prefers, ties half), and the mean raw bandit reward, and the
    mean normalised reward under the timing the router used (`reward_timing` of the decision log;
    the other timing's reward is logged for analysis, `bandit_reward_raw_<timing>`). On the `all`
    rows: `spearman_reward_gold`, the rank correlation between a decision's raw reward and its
    pairs' gold accuracy, and `spearman_arms`, between the RMs' mean raw reward and their gold pair
    accuracy (does the reward rank the RMs as gold does?). A batch decision that spans several
    domains counts once in each.

    `by` and `variants` name the reward variants: the DPO path's reward timings (the decision
    log's `reward_timing`), or the online trainers' bandit signals (`reward_signal`, with
    `variants` = rmroute.rl.SIGNALS); the output's column `by` says which variant a row measures.
    """
    keys = ["method", "seed", "iteration", "decision_id", "domain"]
    d = decisions[decisions["n_pairs"] > 0].copy()
    d["gold_weighted"] = d["gold_agreement"] * d["n_pairs"]
    used = d[by] if by in d else pd.Series(variants[0], index=d.index)
    rows = []
    for timing in variants:
        # The router's own timing is logged as bandit_reward_raw, the other one under its name.
        own = used == timing
        column = f"bandit_reward_raw_{timing}"
        reward = d["bandit_reward_raw"].where(own, d[column] if column in d else np.nan)
        if not np.isfinite(reward).any():
            continue
        frame = d.assign(reward=reward, norm=d["bandit_reward_norm"].where(own))
        per = frame.groupby(keys, sort=False).agg(rm=("rm", "first"), reward=("reward", "first"), norm=("norm", "first"),
                                                  n_pairs=("n_pairs", "sum"), gold=("gold_weighted", "sum")).reset_index()
        per["gold"] = per["gold"] / per["n_pairs"]
        per = per[np.isfinite(per["reward"])]
        for (method, domain), part in per.groupby(["method", "domain"], sort=False):
            arms = part.groupby("rm", sort=False).apply(
                lambda a: pd.Series({"n_decisions": len(a), "n_pairs": a["n_pairs"].sum(),
                                     "gold_pair_accuracy": np.average(a["gold"], weights=a["n_pairs"]),
                                     "mean_reward_raw": a["reward"].mean(), "mean_reward_norm": a["norm"].mean()}),
                include_groups=False).reset_index()
            where = {"method": method, by: timing, "domain": domain}
            rows += [{**where, **arm} for arm in arms.to_dict("records")]
            rows.append({**where, "rm": "all", "n_decisions": len(part), "n_pairs": part["n_pairs"].sum(),
                         "gold_pair_accuracy": np.average(part["gold"], weights=part["n_pairs"]),
                         "mean_reward_raw": part["reward"].mean(), "mean_reward_norm": part["norm"].mean(),
                         "spearman_reward_gold": _spearman(part["reward"], part["gold"]),
                         "spearman_arms": _spearman(arms["mean_reward_raw"], arms["gold_pair_accuracy"])})
    columns = ["method", by, "domain", "rm", "n_decisions", "n_pairs", "gold_pair_accuracy",
               "mean_reward_raw", "mean_reward_norm", "spearman_reward_gold", "spearman_arms"]
    table = pd.DataFrame(rows, columns=columns).astype({"n_decisions": int, "n_pairs": int})
    order = list(dict.fromkeys(decisions["method"]))
    table["method"] = pd.Categorical(table["method"], categories=order, ordered=True)
    return table.sort_values(["method", by, "domain"], kind="stable").reset_index(drop=True).astype({"method": str})


def _spearman(a, b) -> float:
    """Spearman's rank correlation, NaN where it is undefined (fewer than 3 points or a constant side)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


def reward_validity_figure(table: pd.DataFrame, png, pdf) -> None:
    """Each RM's mean raw bandit reward against its gold pair accuracy, per method, domain and timing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    # Raw rewards: every method and both timings have them (ensembles and the oracle normalise none).
    arms = table[table["rm"] != "all"].assign(timing=lambda t: t["reward_timing"].map({"step": "step loss",
                                                                                       "after_update": "after the step"}))
    grid = sns.relplot(data=arms, x="gold_pair_accuracy", y="mean_reward_raw", hue="domain", style="rm", col="method",
                       row="timing", height=2.6, aspect=1.1, s=60, facet_kws={"sharey": "row", "sharex": True})
    grid.set_titles("{col_name} | {row_name}")
    grid.set_axis_labels("gold pair accuracy of the RM's pairs", "mean raw bandit reward")
    grid.figure.suptitle("Does the loss-based reward rank RMs as gold does? (one point per RM, domain and reward timing)",
                         y=1.03)
    save_figure(grid.figure, png, pdf)
    plt.close(grid.figure)


def pair_quality(pair_files: list[tuple[str, int, int, str]]) -> pd.DataFrame:
    """Gold quality of the routed preference labels, for analysis only (no router reads it).

    Per method and domain (and `all`): the share of DPO pairs whose chosen response is gold-better
    (`right`), gold-equal (`tie`: no signal, yet the NLL term still trains on the chosen one) or
    gold-worse (`wrong`) than the rejected one, and the share whose chosen response is fully
    correct (`chosen_correct`). pair_files: (method, seed, iteration, pairs.jsonl path)."""
    rows = [(method, seed, it, r["domain"], float(r["chosen_gold"]), float(r["rejected_gold"]))
            for method, seed, it, path in pair_files for r in read_jsonl(path)]
    order = list(dict.fromkeys(method for method, *_ in pair_files))
    d = pd.DataFrame(rows, columns=["method", "seed", "iteration", "domain", "chosen_gold", "rejected_gold"])
    d["right"] = d["chosen_gold"] > d["rejected_gold"]
    d["tie"] = d["chosen_gold"] == d["rejected_gold"]
    d["wrong"] = d["chosen_gold"] < d["rejected_gold"]
    d["chosen_correct"] = d["chosen_gold"] >= 1.0
    d = pd.concat([d, d.assign(domain="all")], ignore_index=True)
    out = d.groupby(["method", "domain"], sort=False).agg(
        n_pairs=("right", "size"), right=("right", "mean"), tie=("tie", "mean"), wrong=("wrong", "mean"),
        chosen_correct=("chosen_correct", "mean")).reset_index()
    out["method"] = pd.Categorical(out["method"], categories=order, ordered=True)
    return out.sort_values(["method", "domain"]).reset_index(drop=True).astype({"method": str})


def cost_table(decisions: pd.DataFrame, benchmarks: list[tuple[str, int, int, str, str]]) -> pd.DataFrame:
    """RM calls per method and seed (from the decision log) and wall time per stage (each seed's own
    seconds in its jobs, `benchmarks/seeds/`)."""
    calls = decisions.groupby(["method", "seed"])["rm_calls"].sum().rename("rm_calls").reset_index()
    rows = []
    for method, seed, it, stage, path in benchmarks:
        bench = pd.read_csv(path, sep="\t")
        rows.append({"method": method, "seed": seed, "stage": stage, "seconds": float(bench["s"].iloc[0])})
    times = pd.DataFrame(rows).pivot_table(index=["method", "seed"], columns="stage", values="seconds", aggfunc="sum")
    times.columns = [f"{c}_s" for c in times.columns]
    return calls.merge(times.reset_index(), on=["method", "seed"], how="left")
