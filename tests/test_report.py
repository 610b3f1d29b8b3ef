"""Report tables computed from hand-made run outputs."""

from __future__ import annotations

import json

import pytest

from rmroute import report


def _pairs(path, rows):
    path.write_text("".join(json.dumps({"domain": d, "chosen_gold": c, "rejected_gold": r, "prompt": "p",
                                        "chosen": "a", "rejected": "b"}) + "\n" for d, c, r in rows))
    return str(path)


def test_pair_quality_by_hand(tmp_path):
    a1 = _pairs(tmp_path / "a1.jsonl", [("arith", 1.0, 0.0), ("arith", 0.0, 0.0), ("instruct", 0.5, 0.75)])
    a2 = _pairs(tmp_path / "a2.jsonl", [("arith", 0.0, 1.0)])
    b1 = _pairs(tmp_path / "b1.jsonl", [("instruct", 1.0, 0.25)])
    table = report.pair_quality([("zeta", 0, 1, a1), ("zeta", 1, 1, a2), ("alpha", 0, 1, b1)])
    assert list(table["method"].unique()) == ["zeta", "alpha"]  # the config's method order, not alphabetical
    row = table.set_index(["method", "domain"])
    arith = row.loc[("zeta", "arith")]
    assert arith["n_pairs"] == 3
    assert (arith["right"], arith["tie"], arith["wrong"], arith["chosen_correct"]) == pytest.approx((1 / 3, 1 / 3, 1 / 3, 1 / 3))
    everything = row.loc[("zeta", "all")]
    assert everything["n_pairs"] == 4 and everything["wrong"] == pytest.approx(0.5)
    assert everything["chosen_correct"] == pytest.approx(0.25)
    assert row.loc[("alpha", "instruct")]["right"] == 1.0 and row.loc[("alpha", "instruct")]["chosen_correct"] == 1.0
    assert set(table.loc[table["method"] == "alpha", "domain"]) == {"all", "instruct"}


@pytest.fixture
def saved_figures(monkeypatch):
    """The figures the report functions save, drawn first so their tick labels are the rendered ones."""
    figures = []

    def keep(fig, png, pdf=None):
        fig.canvas.draw()
        fig.savefig(png)
        figures.append(fig)

    monkeypatch.setattr(report, "save_figure", keep)
    return figures


def test_router_choice_figure_names_the_domains_under_every_panel(tmp_path, saved_figures):
    import pandas as pd

    choices = pd.DataFrame([{"method": m, "domain": d, "rm": r, "count": 1, "share": 0.5}
                            for m in ("laser", "oracle", "random", "bayesian", "rm-a", "rm-b")
                            for d in ("instruct", "arith") for r in ("rm_a", "rm_b")])
    report.router_choice_figure(choices, tmp_path / "c.png", None)
    assert (tmp_path / "c.png").stat().st_size > 0
    (fig,) = saved_figures
    labels = [[t.get_text() for t in ax.get_xticklabels()] for ax in fig.axes if ax.get_title()]
    assert labels == [["arith", "instruct"]] * 6


def test_heatmap_rows_follow_the_table_order(tmp_path, saved_figures):
    import pandas as pd

    table = pd.DataFrame([{"method": m, "domain": d, "right": 0.5} for m in ("zeta", "alpha", "mid") for d in ("b", "a")])
    report.heatmap(table, "method", "domain", "right", "t", tmp_path / "h.png", None)
    (fig,) = saved_figures
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["zeta", "alpha", "mid"]


# ---------------------------------------------------------------- the best single RM, chosen on validation


def _accuracy(values: dict[str, dict[int, float]], seeds=(0, 1), domains=("arith", "facts_mc")):
    """Tidy accuracy rows: method -> {iteration: accuracy}, the same in every seed and domain, except
    that seed 1's arith is 0.1 lower (the mean over domains and seeds is then value - 0.025)."""
    import pandas as pd

    return pd.DataFrame([{"method": m, "seed": s, "iteration": it, "domain": d,
                          "accuracy": a - (0.1 if (s, d) == (1, "arith") else 0.0)}
                         for m, per_it in values.items() for it, a in per_it.items() for s in seeds for d in domains])


def test_best_single_is_the_highest_validation_accuracy_after_the_last_iteration():
    import pandas as pd

    from rmroute.evaluate import best_single

    validation = _accuracy({"rm-a": {1: 0.9, 2: 0.5}, "rm-b": {1: 0.2, 2: 0.6}, "rm-c": {1: 0.3, 2: 0.55},
                            "laser": {1: 0.9, 2: 0.9}})  # a routed method is no candidate
    assert best_single(validation, ["rm-a", "rm-b", "rm-c"]) == "rm-b"  # iteration 1's leader does not count
    assert best_single(validation, ["rm-a", "rm-c"]) == "rm-c"
    # Averaged over seeds and domains: rm-d is best in 3 of 4 cells but loses the mean.
    rm_d = pd.DataFrame([{"method": "rm-d", "seed": s, "iteration": 2, "domain": d, "accuracy": 0.0 if (s, d) == (0, "arith") else 0.6}
                         for s in (0, 1) for d in ("arith", "facts_mc")])
    assert best_single(pd.concat([_accuracy({"rm-c": {2: 0.55}}), rm_d]), ["rm-d", "rm-c"]) == "rm-c"


def test_best_single_breaks_ties_by_name_and_needs_every_candidate():
    from rmroute.evaluate import best_single

    validation = _accuracy({"rm-z": {2: 0.5}, "rm-b": {2: 0.5}, "rm-a": {2: 0.4}})
    assert best_single(validation, ["rm-z", "rm-b", "rm-a"]) == "rm-b"
    with pytest.raises(ValueError, match="rm-x"):
        best_single(validation, ["rm-b", "rm-x"])
    with pytest.raises(ValueError, match="no candidate"):
        best_single(validation, [])


def test_single_rm_methods_are_one_recipes_plain_single_rm_runs():
    from rmroute.evaluate import single_rm_methods
    from rmroute.methods import Method

    methods = {m.name: m for m in [
        Method(name="rm-a", router="single", recipe_name="laser", rm="rm_a"),
        Method(name="laser", router="linucb", recipe_name="laser"),
        Method(name="rm-a-noisy", router="single", recipe_name="laser", rm="rm_a", noise_sigma=0.3),
        Method(name="r2m-a", router="single", recipe_name="laser", rm="r2m_a"),
        Method(name="rm-b@bayesian", router="single", recipe_name="bayesian", rm="rm_b"),
        Method(name="rm-b", router="single", recipe_name="laser", rm="rm_b"),
    ]}
    assert single_rm_methods(methods, "laser", exclude_rms=["r2m_a"]) == ["rm-a", "rm-b"]
    assert single_rm_methods(methods, "laser") == ["rm-a", "r2m-a", "rm-b"]
    assert single_rm_methods(methods, "bayesian") == ["rm-b@bayesian"]
    assert single_rm_methods(methods, "shared") == []


def test_paper_table_row_is_chosen_on_validation_and_reported_on_test():
    test = _accuracy({"rm-a": {0: 0.3, 2: 0.8}, "rm-b": {0: 0.3, 2: 0.6}, "laser": {0: 0.3, 2: 0.7}})
    validation = _accuracy({"rm-a": {2: 0.5}, "rm-b": {2: 0.7}, "laser": {2: 0.9}})
    table, note = report.paper_table(test, validation, 2, report.LASER_TABLE1, "laser", ["rm-a", "rm-b"], "router_offline")
    row = table[table["method"] == report.BEST_SINGLE].set_index("domain")
    assert set(row["chosen_method"]) == {"rm-b"}  # best on validation, though rm-a is best on test
    assert row.loc["avg", "mean"] == pytest.approx(100 * (0.6 - 0.025))  # rm-b's test accuracy
    assert row.loc["avg", "paper"] == report.LASER_TABLE1["best-single-rm"]["avg"]
    assert row.loc["avg", "n_seeds"] == 2
    order = list(dict.fromkeys(table["method"]))
    assert order[:2] == ["sft", report.BEST_SINGLE] and set(order[2:]) == {"rm-a", "rm-b", "laser"}
    assert table.loc[table["method"] != report.BEST_SINGLE, "chosen_method"].isna().all()
    assert "rm-b" in note and "router_offline" in note
    md = report.summary_markdown(table, "t", note)
    assert "best-single-rm (rm-b)" in md and note in md


def test_a_paper_table_holds_its_recipes_methods_beside_their_paper_rows():
    """BayesianRouter's table: only the bayesian recipe's methods (and SFT); LASeR's router under
    that recipe stands beside the paper's LASeR row, majority vote beside majority vote."""
    test = _accuracy({"bayesian": {0: 0.3, 2: 0.7}, "linucb@bayesian": {0: 0.3, 2: 0.6},
                      "ensemble-vote@bayesian": {0: 0.3, 2: 0.65}, "rm-a@bayesian": {0: 0.3, 2: 0.5},
                      "laser": {0: 0.3, 2: 0.9}, "random@laser": {0: 0.3, 2: 0.4}})
    validation = _accuracy({"rm-a@bayesian": {2: 0.5}})
    mine = ["bayesian", "linucb@bayesian", "ensemble-vote@bayesian", "rm-a@bayesian"]
    table, _ = report.paper_table(test, validation, 2, report.BAYES_TABLE1, "bayesian", ["rm-a@bayesian"],
                                  "router_offline", methods=mine)
    assert set(table["method"]) == {"sft", report.BEST_SINGLE, *mine}  # no laser-recipe row
    paper = table[table["domain"] == "arith"].set_index("method")["paper"]
    assert paper["linucb@bayesian"] == report.BAYES_TABLE1["laser"]["GSM8K"]
    assert paper["ensemble-vote@bayesian"] == report.BAYES_TABLE1["majority-vote"]["GSM8K"]
    assert paper["bayesian"] == report.BAYES_TABLE1["bayesian"]["GSM8K"]
    assert report.paper_row("random@laser") == "random" and report.paper_row("laser") == "laser"


def test_paper_table_without_single_rm_methods_of_its_recipe_says_so():
    test = _accuracy({"bayesian": {0: 0.3, 2: 0.7}})
    table, note = report.paper_table(test, _accuracy({"bayesian": {2: 0.7}}), 2, report.BAYES_TABLE1, "bayesian", [],
                                     "router_offline")
    assert report.BEST_SINGLE not in set(table["method"])
    assert "No best-single-rm row" in note and "'bayesian'" in note
    assert note in report.summary_markdown(table, "t", note)


def test_run_accuracy_reads_validation_tables(tmp_path):
    import pandas as pd

    paths = []
    for it in (1, 2):
        path = tmp_path / f"it{it}.tsv"
        pd.DataFrame({"domain": ["arith", "instruct"], "metric": ["accuracy", "accuracy"],
                      "value": [0.1 * it, 0.2 * it]}).to_csv(path, sep="\t", index=False)
        paths.append(("rm-a", 0, it, str(path)))
    table = report.run_accuracy(paths)
    assert list(table.columns) == ["method", "seed", "iteration", "domain", "accuracy"]
    assert table["accuracy"].tolist() == pytest.approx([0.1, 0.2, 0.2, 0.4])
    assert list(report.run_accuracy([]).columns) == list(table.columns)


def test_gold_best_share_counts_the_decisions_that_went_to_each_domains_best_rm():
    import pandas as pd

    from rmroute.report import gold_best_share

    choices = pd.DataFrame([
        {"method": "laser", "iteration": 1, "domain": "arith", "rm": "a", "count": 3},
        {"method": "laser", "iteration": 1, "domain": "arith", "rm": "b", "count": 1},
        {"method": "laser", "iteration": 1, "domain": "instruct", "rm": "a", "count": 2},
        {"method": "laser", "iteration": 1, "domain": "instruct", "rm": "b", "count": 2},
        {"method": "single-a", "iteration": 1, "domain": "arith", "rm": "a", "count": 4},  # not routed: left out
    ])
    accuracy = pd.DataFrame([{"rm": "a", "domain": "arith", "accuracy": 0.9}, {"rm": "b", "domain": "arith", "accuracy": 0.6},
                             {"rm": "a", "domain": "instruct", "accuracy": 0.5}, {"rm": "b", "domain": "instruct", "accuracy": 0.7}])
    table = gold_best_share(choices, accuracy).set_index("domain")
    assert list(table["method"].unique()) == ["laser"]
    assert table.loc["arith", "best_rm"] == "a" and table.loc["arith", "share"] == pytest.approx(0.75)
    assert table.loc["instruct", "best_rm"] == "b" and table.loc["instruct", "share"] == pytest.approx(0.5)
    assert (table["chance"] == 0.5).all()


def test_the_paper_tables_are_the_published_ones():
    """The Table 1 analogues read their published numbers from rmroute.published, unchanged."""
    from rmroute import published

    assert report.LASER_TABLE1 is published.LASER_TABLE1 and report.BAYES_TABLE1 is published.BAYES_TABLE1
    assert published.LASER_TABLE1["laser"] == {"StrategyQA": 85.96, "GSM8K": 74.75, "MMLU": 68.24, "avg": 76.32}
    assert published.BAYES_TABLE1["bayesian"] == {"GSM8K": 75.66, "MMLU": 57.39}
