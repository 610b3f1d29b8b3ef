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
