"""The figures that test the papers' claims beside the tables of `rmroute.report`: which RM each
router picks over iterations, how often the RMs agree, the reward margins they give, and what
accuracy each method buys per second and per RM call. Data functions return tidy frames; each
`*_figure` draws one of them."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rmroute.io import save_figure
from rmroute.report import ci95, percent_limits



def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _rm_palette(rms: list[str]) -> dict[str, tuple]:
    """One colour per RM, the same in every figure that shows RMs."""
    import seaborn as sns

    return dict(zip(rms, sns.color_palette("colorblind", len(rms))))


# ---------------------------------------------------------------- RM selection share over iterations


def selection_shares(choices: pd.DataFrame, routed: list[str]) -> pd.DataFrame:
    """The routed methods' rows of `router_choices` (method, iteration, domain, rm, count, share),
    in the order of `routed`, with every RM present in every (method, iteration, domain) cell
    (share 0 where it was never picked), so the shares of a cell sum to 1."""
    part = choices[choices["method"].isin(routed)]
    if part.empty:
        return part.assign(share=pd.Series(dtype=float)).reset_index(drop=True)
    rms = list(dict.fromkeys(part["rm"]))
    cells = part[["method", "iteration", "domain"]].drop_duplicates()
    full = cells.merge(pd.DataFrame({"rm": rms}), how="cross")
    out = full.merge(part[["method", "iteration", "domain", "rm", "count"]], how="left").fillna({"count": 0})
    out["count"] = out["count"].astype(int)
    out["share"] = out["count"] / out.groupby(["method", "iteration", "domain"])["count"].transform("sum")
    out["method"] = pd.Categorical(out["method"], categories=[m for m in routed if m in set(part["method"])], ordered=True)
    out["rm"] = pd.Categorical(out["rm"], categories=rms, ordered=True)
    out = out.sort_values(["method", "iteration", "domain", "rm"]).reset_index(drop=True)
    return out.astype({"method": str, "rm": str})


def selection_share_figure(shares: pd.DataFrame, png, pdf) -> None:
    """Stacked bars: per routed method (rows) and domain (columns), the share of decisions labelled
    by each RM at each iteration (LASeR's RM-utilisation figure)."""
    plt = _pyplot()
    if shares.empty:
        return _placeholder("No routed method in this run: every method labels with one RM or an ensemble.", png, pdf)
    methods, domains = list(dict.fromkeys(shares["method"])), sorted(shares["domain"].unique())
    rms, iterations = list(dict.fromkeys(shares["rm"])), sorted(shares["iteration"].unique())
    colours = _rm_palette(rms)
    fig, axes = plt.subplots(len(methods), len(domains), figsize=(1.2 + 2.3 * len(domains), 0.9 + 1.9 * len(methods)),
                             sharex=True, sharey=True, squeeze=False)
    for r, method in enumerate(methods):
        for c, domain in enumerate(domains):
            ax = axes[r, c]
            cell = shares[(shares["method"] == method) & (shares["domain"] == domain)]
            wide = cell.pivot(index="iteration", columns="rm", values="share").reindex(index=iterations, columns=rms)
            bottom = np.zeros(len(iterations))
            for rm in rms:
                height = wide[rm].fillna(0).to_numpy()
                ax.bar(iterations, height, bottom=bottom, color=colours[rm], width=0.8, label=rm, edgecolor="white", linewidth=0.5)
                bottom += height
            ax.set_ylim(0, 1)
            ax.set_xticks(iterations)
            if r == 0:
                ax.set_title(domain)
            if c == 0:
                ax.set_ylabel(f"{method}\nshare of decisions")
            if r == len(methods) - 1:
                ax.set_xlabel("iteration")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[rm]) for rm in rms]
    fig.legend(handles, rms, title="RM", loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.suptitle("Which RM labels each domain, iteration by iteration (all seeds)")
    fig.tight_layout()
    save_figure(fig, png, pdf)
    plt.close(fig)


# ---------------------------------------------------------------- pairwise RM agreement


def rm_agreement(behaviour: pd.DataFrame) -> pd.DataFrame:
    """Fraction of offline pairs on which two RMs prefer the same response (the sign of
    chosen − rejected score; a tie is its own verdict), for every ordered pair of RMs, per domain
    and over all domains (`domain = all`). Every split of the behaviour table counts; no gold is read.
    Columns: domain, rm_a, rm_b, agreement, n_pairs."""
    rms = list(dict.fromkeys(behaviour["rm"]))
    verdict = behaviour.assign(verdict=np.sign(behaviour["score_chosen"] - behaviour["score_rejected"]))
    wide = verdict.pivot_table(index=["split", "pair_id", "domain"], columns="rm", values="verdict").reindex(columns=rms)
    wide = wide.dropna().reset_index()
    rows = []
    domains = [("all", wide), *((d, part) for d, part in wide.groupby("domain", sort=True))]
    for domain, part in domains:
        for a in rms:
            for b in rms:
                rows.append({"domain": domain, "rm_a": a, "rm_b": b,
                             "agreement": float((part[a] == part[b]).mean()), "n_pairs": len(part)})
    return pd.DataFrame(rows, columns=["domain", "rm_a", "rm_b", "agreement", "n_pairs"])


def agreement_figure(table: pd.DataFrame, png, pdf) -> None:
    """One annotated RM × RM heatmap per domain, all domains first (LASeR's agreement figure)."""
    plt = _pyplot()
    import seaborn as sns

    domains = ["all", *sorted(d for d in table["domain"].unique() if d != "all")]
    rms = list(dict.fromkeys(table["rm_a"]))
    side = 0.9 + 0.55 * len(rms)
    fig, axes = plt.subplots(1, len(domains), figsize=(0.8 + side * len(domains), 0.9 + 0.55 * len(rms)), squeeze=False)
    for k, (ax, domain) in enumerate(zip(axes[0], domains)):
        part = table[table["domain"] == domain]
        wide = part.pivot(index="rm_a", columns="rm_b", values="agreement").reindex(index=rms, columns=rms)
        sns.heatmap(wide, annot=True, fmt=".2f", cmap="viridis", vmin=0, vmax=1, square=True, ax=ax,
                    cbar=k == len(domains) - 1, cbar_kws={"label": "share of pairs with the same preference"})
        ax.set_title(f"{domain} (n={int(part['n_pairs'].iloc[0])})")
        ax.set_xlabel("")
        ax.set_ylabel("" if k else "RM")
        if k:
            ax.set_yticklabels([])
    fig.suptitle("How often two RMs prefer the same response (held-out and offline pairs)")
    fig.tight_layout()
    save_figure(fig, png, pdf)
    plt.close(fig)


# ---------------------------------------------------------------- chosen − rejected reward margins


def reward_margins(decisions: pd.DataFrame, behaviour: pd.DataFrame) -> pd.DataFrame:
    """Chosen − rejected reward per RM, from two sources (column `source`):

    * `routed`: every routed decision labelled by one pool RM (ensembles excluded), its logged
      `score_gap`: the labelling RM's score of its top response minus the next one's (the
      chosen − rejected margin of the top pair under top_vs_next), or |chosen − rejected| of the
      candidate pair a per-pair router routed. Never negative: the RM prefers what it chose.
    * `gold pairs`: every RM on the offline pairs with a gold preference, chosen = gold-better;
      negative where the RM disagrees with gold.

    Columns: source, rm, domain, margin."""
    rms = list(dict.fromkeys(behaviour["rm"]))
    routed = decisions[decisions["rm"].isin(rms) & (decisions["n_pairs"] > 0)]
    gold = behaviour[behaviour["gold_tie"] == 0]
    out = pd.concat([
        pd.DataFrame({"source": "routed", "rm": routed["rm"], "domain": routed["domain"], "margin": routed["score_gap"]}),
        pd.DataFrame({"source": "gold pairs", "rm": gold["rm"], "domain": gold["domain"],
                      "margin": gold["score_chosen"] - gold["score_rejected"]}),
    ], ignore_index=True)
    out["rm"] = pd.Categorical(out["rm"], categories=rms, ordered=True)
    return out.sort_values(["source", "rm"], kind="stable").reset_index(drop=True).astype({"rm": str, "margin": float})


def margin_figure(margins: pd.DataFrame, png, pdf) -> None:
    """Violins of chosen − rejected reward: one column per RM (its own scale: classifier and
    log-prob rewards differ), one row per source, one violin per domain."""
    plt = _pyplot()
    import seaborn as sns

    rms = list(dict.fromkeys(margins["rm"]))
    sources = [s for s in ("routed", "gold pairs") if s in set(margins["source"])]
    domains = sorted(margins["domain"].unique())
    titles = {"routed": "routed training decisions", "gold pairs": "offline pairs, chosen = gold-better"}
    fig, axes = plt.subplots(len(sources), len(rms), figsize=(1.0 + 3.0 * len(rms), 0.8 + 2.8 * len(sources)),
                             sharey="col", squeeze=False)
    for r, source in enumerate(sources):
        for c, rm in enumerate(rms):
            ax = axes[r, c]
            part = margins[(margins["source"] == source) & (margins["rm"] == rm)]
            present = [d for d in domains if d in set(part["domain"])]
            if part.empty:
                ax.text(0.5, 0.5, "never picked", ha="center", va="center", transform=ax.transAxes, color="grey")
            else:
                sns.violinplot(data=part, x="domain", y="margin", order=present, hue="domain", hue_order=domains,
                               legend=False, cut=0, inner="quart", density_norm="width", linewidth=0.8, ax=ax)
            ax.axhline(0, color="black", linewidth=0.6, linestyle=":")
            ax.set_title(f"{rm} · {titles[source]}", fontsize="medium")
            ax.set_xlabel("")
            ax.set_ylabel("chosen − rejected reward" if c == 0 else "")
            ax.tick_params(axis="x", labelrotation=30)
            for label in ax.get_xticklabels():
                label.set_horizontalalignment("right")
    fig.suptitle("Reward margin of each RM: what it labelled in training, and on gold-ordered pairs")
    fig.tight_layout()
    save_figure(fig, png, pdf)
    plt.close(fig)


# ---------------------------------------------------------------- efficiency: accuracy per second and per RM call


def wall_times(benchmarks: list[tuple[str, int, str, str]]) -> pd.DataFrame:
    """Seconds per (method, seed) and stage, summed over iterations, from the per-seed seconds files
    (`benchmarks/seeds/<rule>/...`: a seed's own work in its job, without the job's start-up;
    `rmroute.stages.seeds`). benchmarks: (method, seed, stage, path); a shared job (the SFT policy's rollouts of iteration 1)
    is listed once for every method that needs it. Columns: method, seed, <stage>_s..., wall_s (their sum)."""
    rows = [{"method": m, "seed": s, "stage": stage, "seconds": float(pd.read_csv(path, sep="\t")["s"].iloc[0])}
            for m, s, stage, path in benchmarks]
    order = list(dict.fromkeys(m for m, *_ in benchmarks))
    wide = pd.DataFrame(rows).pivot_table(index=["method", "seed"], columns="stage", values="seconds", aggfunc="sum")
    wide.columns = [f"{c}_s" for c in wide.columns]
    wide["wall_s"] = wide.sum(axis=1)
    wide = wide.reset_index()
    wide["method"] = pd.Categorical(wide["method"], categories=order, ordered=True)
    return wide.sort_values(["method", "seed"]).reset_index(drop=True).astype({"method": str})


def efficiency(accuracy: pd.DataFrame, cost: pd.DataFrame, times: pd.DataFrame) -> pd.DataFrame:
    """Per method: final accuracy (% averaged over domains at the last iteration), wall time and RM
    calls, each as mean and 95% CI over seeds. accuracy: the policy_accuracy table; cost: the cost
    table (method, seed, rm_calls, ...); times: `wall_times`."""
    last = accuracy[accuracy["iteration"] == accuracy["iteration"].max()]
    final = (100 * last.groupby(["method", "seed"], sort=False)["accuracy"].mean()).rename("accuracy").reset_index()
    per_seed = final.merge(cost[["method", "seed", "rm_calls"]], on=["method", "seed"], how="left")
    per_seed = per_seed.merge(times, on=["method", "seed"], how="left")
    stages = [c for c in times.columns if c.endswith("_s") and c != "wall_s"]
    rows = []
    for method, group in per_seed.groupby("method", sort=False):
        row = {"method": method, "n_seeds": len(group)}
        for name in ("accuracy", "wall_s", "rm_calls"):
            row[f"{name}_mean"] = float(group[name].mean())
            row[f"{name}_ci95"] = ci95(group[name].dropna())
        for stage in stages:
            row[f"{stage}_mean"] = float(group[stage].mean())
        rows.append(row)
    return pd.DataFrame(rows)


def efficiency_figure(table: pd.DataFrame, png, pdf) -> None:
    """Final accuracy against wall time and against RM calls, one point per method, 95% CI bars
    over seeds on both axes."""
    plt = _pyplot()
    import seaborn as sns

    methods = list(table["method"])
    colours = dict(zip(methods, sns.color_palette("tab10" if len(methods) <= 10 else "husl", len(methods))))
    markers = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "*"]
    fig, axes = plt.subplots(1, 2, figsize=(10.0, 4.2), sharey=True)
    panels = (("wall_s", "training wall time per seed (s): rollouts + routed DPO"), ("rm_calls", "RM calls per seed"))
    for ax, (x, label) in zip(axes, panels):
        for k, row in table.reset_index(drop=True).iterrows():
            # Open markers of distinct shapes: methods with equal cost (single RMs, the ensembles)
            # sit on one another and stay visible.
            ax.errorbar(row[f"{x}_mean"], row["accuracy_mean"], xerr=row[f"{x}_ci95"], yerr=row["accuracy_ci95"],
                        fmt=markers[k % len(markers)], color=colours[row["method"]], markerfacecolor="none",
                        markeredgewidth=1.6, markersize=9, capsize=3, elinewidth=1.0, label=row["method"])
        ax.set_xlabel(label)
        ax.set_xlim(left=0)  # a wide CI over few seeds reaches below zero seconds and calls
        ax.grid(alpha=0.3)
    axes[0].set_ylim(*percent_limits(*axes[0].get_ylim()))
    axes[0].set_ylabel("final test accuracy, mean over domains (%)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, title="method", loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.suptitle("What each method's accuracy costs (mean, 95% CI over seeds)")
    fig.tight_layout()
    save_figure(fig, png, pdf)
    plt.close(fig)


def _placeholder(message: str, png, pdf) -> None:
    """A figure that says why it is empty, so every declared output exists."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 1.5))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    save_figure(fig, png, pdf)
    plt.close(fig)
