"""The claim figures' data functions on hand-made frames, every figure drawn once, and the figure
files of the tiny workflow run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rmroute import figures, report


def _behaviour(verdicts: dict[str, list[float]], domains: list[str], gold_tie=None) -> pd.DataFrame:
    """A behaviour table whose RM k scores pair i's chosen response verdicts[k][i] above its rejected one."""
    rows = []
    for rm, margins in verdicts.items():
        for i, (margin, domain) in enumerate(zip(margins, domains)):
            rows.append({"split": "test", "pair_id": f"p{i}", "domain": domain, "rm": rm, "score_chosen": margin,
                         "score_rejected": 0.0, "correct": int(margin > 0),
                         "gold_tie": 0 if gold_tie is None else gold_tie[i]})
    return pd.DataFrame(rows)


def test_identical_rms_always_agree_and_opposite_ones_never():
    domains = ["arith", "arith", "instruct", "instruct"]
    table = figures.rm_agreement(_behaviour({"a": [1, -2, 3, 0], "a_copy": [5, -1, 2, 0], "flip": [-1, 2, -3, 1]}, domains))
    cell = table.set_index(["domain", "rm_a", "rm_b"])["agreement"]
    assert cell[("all", "a", "a_copy")] == 1.0 and cell[("all", "a", "a")] == 1.0
    assert cell[("all", "a", "flip")] == 0.0
    assert cell[("instruct", "a", "flip")] == 0.0  # a tie (0) is its own verdict: flip's 1 is not it
    assert cell[("arith", "a", "flip")] == cell[("arith", "flip", "a")] == 0.0
    assert set(table["domain"]) == {"all", "arith", "instruct"}
    assert table.loc[table["domain"] == "all", "n_pairs"].eq(4).all()


def test_agreement_counts_half_agreeing_pairs():
    table = figures.rm_agreement(_behaviour({"a": [1, 1, 1, 1], "b": [1, 1, -1, -1]}, ["x"] * 4))
    assert table.set_index(["domain", "rm_a", "rm_b"]).loc[("all", "a", "b"), "agreement"] == 0.5


def _decisions() -> pd.DataFrame:
    rows = []
    for method, picks in (("laser", ["rm_a", "rm_a", "rm_b", "rm_a"]), ("random", ["rm_b", "rm_c", "rm_b", "rm_b"]),
                          ("rm-a", ["rm_a"] * 4), ("ensemble-mean", ["ensemble:mean"] * 4)):
        for seed in (0, 1):
            for it in (1, 2):
                for q, rm in enumerate(picks):
                    rows.append({"method": method, "seed": seed, "iteration": it, "domain": ["arith", "instruct"][q % 2],
                                 "rm": rm if it == 1 else picks[::-1][q], "n_pairs": 2, "score_gap": 0.5 + q})
    return pd.DataFrame(rows)


def test_selection_shares_sum_to_one_per_method_domain_and_iteration():
    choices = report.router_choices(_decisions())
    shares = figures.selection_shares(choices, ["random", "laser"])
    assert list(dict.fromkeys(shares["method"])) == ["random", "laser"]  # the routed methods, in the config's order
    sums = shares.groupby(["method", "iteration", "domain"])["share"].sum()
    assert np.allclose(sums, 1.0)
    # every RM in every cell, so stacked bars line up; never-picked RMs have share 0
    assert shares.groupby(["method", "iteration", "domain"]).size().eq(3).all()
    laser_arith = shares[(shares["method"] == "laser") & (shares["iteration"] == 1) & (shares["domain"] == "arith")]
    assert dict(zip(laser_arith["rm"], laser_arith["share"])) == {"rm_a": 0.5, "rm_b": 0.5, "rm_c": 0.0}


def test_selection_shares_of_a_run_without_routed_methods_is_empty(tmp_path):
    shares = figures.selection_shares(report.router_choices(_decisions()), ["oracle"])
    assert shares.empty
    figures.selection_share_figure(shares, tmp_path / "s.png", None)
    assert (tmp_path / "s.png").stat().st_size > 0


def test_reward_margins_keep_pool_rms_and_sign_gold_pairs():
    behaviour = _behaviour({"rm_a": [1.0, -2.0, 0.5], "rm_b": [0.2, 0.3, -0.1], "rm_c": [3.0, 1.0, 2.0]},
                           ["arith", "instruct", "arith"], gold_tie=[0, 0, 1])
    margins = figures.reward_margins(_decisions(), behaviour)
    routed = margins[margins["source"] == "routed"]
    assert set(routed["rm"]) == {"rm_a", "rm_b", "rm_c"}  # the ensemble's rows are not one RM's margin
    assert (routed["margin"] >= 0).all()
    gold = margins[margins["source"] == "gold pairs"]
    assert len(gold) == 6  # the gold tie is left out
    assert sorted(gold.loc[gold["rm"] == "rm_a", "margin"]) == [-2.0, 1.0]


def _bench(tmp_path, name, seconds):
    path = tmp_path / f"{name}.tsv"
    path.write_text(f"s\th:m:s\tmax_rss\n{seconds}\t0:00:01\t1\n")
    return str(path)


def test_efficiency_means_and_cis_over_seeds(tmp_path):
    accuracy = pd.DataFrame([{"method": m, "seed": s, "iteration": it, "domain": d, "accuracy": a}
                             for m, base in (("laser", 0.6), ("ensemble-mean", 0.5)) for s in (0, 1)
                             for it in (0, 2) for d, a in (("arith", base + 0.1 * s), ("instruct", base + 0.1 * s))])
    cost = pd.DataFrame({"method": ["laser", "laser", "ensemble-mean", "ensemble-mean"], "seed": [0, 1, 0, 1],
                         "rm_calls": [10, 12, 30, 30]})
    benchmarks = [(m, s, stage, _bench(tmp_path, f"{m}{s}{stage}{k}", sec))
                  for m, scale in (("laser", 1), ("ensemble-mean", 2)) for s in (0, 1)
                  for k, (stage, sec) in enumerate((("rollout", 1.0), ("train_iteration", 2.0 * scale), ("train_iteration", 3.0)))]
    times = figures.wall_times(benchmarks)
    assert list(times["method"].unique()) == ["laser", "ensemble-mean"]
    assert times.set_index(["method", "seed"]).loc[("laser", 0), "wall_s"] == 6.0
    table = figures.efficiency(accuracy, cost, times).set_index("method")
    laser = table.loc["laser"]
    assert laser["n_seeds"] == 2
    assert laser["accuracy_mean"] == pytest.approx(65.0)
    assert laser["accuracy_ci95"] == pytest.approx(report.ci95([60.0, 70.0]))
    assert laser["rm_calls_mean"] == 11 and laser["wall_s_mean"] == 6.0 and laser["wall_s_ci95"] == 0.0
    assert table.loc["ensemble-mean", "train_iteration_s_mean"] == 7.0
    assert list(table.index) == ["laser", "ensemble-mean"]


def test_every_figure_draws(tmp_path):
    behaviour = _behaviour({"rm_a": [1.0, -2.0, 0.5, 1.0], "rm_b": [0.2, 0.3, -0.1, 0.4], "rm_c": [3.0, 1.0, 2.0, -1.0]},
                           ["arith", "instruct", "arith", "instruct"])
    decisions = _decisions()
    figures.selection_share_figure(figures.selection_shares(report.router_choices(decisions), ["laser", "random"]),
                                   tmp_path / "share.png", tmp_path / "share.pdf")
    figures.agreement_figure(figures.rm_agreement(behaviour), tmp_path / "agree.png", tmp_path / "agree.pdf")
    figures.margin_figure(figures.reward_margins(decisions, behaviour), tmp_path / "margin.png", tmp_path / "margin.pdf")
    table = pd.DataFrame({"method": ["laser", "rm-a"], "n_seeds": [2, 2], "accuracy_mean": [60.0, 55.0],
                          "accuracy_ci95": [3.0, 2.0], "wall_s_mean": [10.0, 8.0], "wall_s_ci95": [1.0, 0.5],
                          "rm_calls_mean": [100.0, 100.0], "rm_calls_ci95": [0.0, 0.0]})
    figures.efficiency_figure(table, tmp_path / "eff.png", tmp_path / "eff.pdf")
    for name in ("share", "agree", "margin", "eff"):
        assert (tmp_path / f"{name}.png").stat().st_size > 0 and (tmp_path / f"{name}.pdf").stat().st_size > 0


@pytest.mark.workflow
def test_tiny_run_writes_the_claim_figures(tiny_run):
    for name in ("rm_selection_share", "rm_agreement", "reward_margins", "efficiency"):
        for suffix in (".png", ".pdf"):
            assert (tiny_run / "figures" / f"{name}{suffix}").stat().st_size > 0, name
    efficiency = pd.read_csv(tiny_run / "tables" / "efficiency.tsv", sep="\t")
    assert (tiny_run / "tables" / "efficiency.md").stat().st_size > 0
    assert {"method", "n_seeds", "accuracy_mean", "accuracy_ci95", "wall_s_mean", "wall_s_ci95", "rm_calls_mean"} <= set(efficiency)
    assert len(efficiency) > 0 and (efficiency["n_seeds"] > 1).all() and (efficiency["wall_s_mean"] > 0).all()
    agreement = pd.read_csv(tiny_run / "tables" / "rm_agreement.tsv", sep="\t")
    diagonal = agreement[agreement["rm_a"] == agreement["rm_b"]]
    assert (diagonal["agreement"] == 1.0).all()
