"""Like-for-like baselines: the `baselines:` block runs each baseline under each listed recipe,
named `<baseline>@<recipe>`, with the recipe's settings, every RM of the pool as a single-RM
method, and clear errors for names that cannot work."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from rmroute.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def with_baselines(block: dict | None, methods: dict | None = None) -> dict:
    config = copy.deepcopy(DEFAULT_CONFIG)
    config["baselines"] = block
    if methods is not None:
        config["methods"] = methods
        config.pop("claims", None)  # its roles name methods of the default
    return config


def test_each_baseline_runs_under_each_recipe_with_that_recipe(project: Path):
    config = with_baselines({"laser": ["single", "random", "ensemble-mean"], "bayesian": ["single", "ensemble-vote"]},
                            methods={"laser": {"router": "linucb"}, "bayesian": {"router": "thompson"}})
    _, sheet, methods = load_config(config, project)
    rms = list(sheet["rm_id"])
    for recipe in ("laser", "bayesian"):
        for rm in rms:  # every RM of the pool as a single-RM method of each recipe
            m = methods[f"{rm}@{recipe}"]
            assert m.router == "single" and m.rm == rm and m.recipe_name == recipe
            assert m.recipe.pair_rule == config["recipes"][recipe]["pair_rule"]
            assert m.recipe.beta == config["recipes"][recipe]["beta"]
    assert methods["random@laser"].recipe.reference == "previous"
    assert methods["ensemble-vote@bayesian"].combine == "vote"
    assert methods["ensemble-vote@bayesian"].recipe.reference == "sft"
    # A routed method and the baselines it is compared with share every recipe field.
    assert methods["bayesian"].recipe == methods["ensemble-vote@bayesian"].recipe == methods[f"{rms[0]}@bayesian"].recipe
    assert methods["laser"].recipe == methods["random@laser"].recipe
    assert len(methods) == 2 + 2 * len(rms) + 2 + 1


@pytest.mark.parametrize("block, match", [
    ({"nope": ["random"]}, r"baselines\.nope: 'nope' is not defined under recipes"),
    ({"laser": ["ensemble-median"]}, r"baselines\.laser: .*'ensemble-median'|baselines\.laser\.0"),
    ({"laser": ["teleport"]}, r"baselines\.laser: 'teleport' is not a baseline"),
])
def test_bad_baselines_name_the_field(project: Path, block, match):
    with pytest.raises(ConfigError, match=match):
        load_config(with_baselines(block), project)


def test_the_separator_is_reserved_for_generated_names(project: Path):
    config = with_baselines({"laser": ["random"]})
    config["methods"]["random@laser"] = {"router": "random"}
    with pytest.raises(ConfigError, match=r"config: methods: .*random@laser"):
        load_config(config, project)


def test_an_item_may_override_method_keys_but_trains_with_the_recipe(project: Path):
    config = with_baselines({"bayesian": [{"linucb": {"reward": "neg_loss", "normaliser": "quantile-laser"}}]},
                            methods={"bayesian": {"router": "thompson"}})
    _, _, methods = load_config(config, project)
    m, routed = methods["linucb@bayesian"], methods["bayesian"]
    assert m.router == "linucb" and m.recipe.reward == "neg_loss" and m.recipe.normaliser == "quantile-laser"
    training = ("pair_rule", "tie_threshold", "loss", "beta", "nll_weight", "reference", "lr", "epochs")
    assert all(getattr(m.recipe, k) == getattr(routed.recipe, k) for k in training)


def test_the_default_compares_within_recipes(project: Path):
    """laser_table1's and bayesian_table1's rows: every baseline of the default shares its routed method's training."""
    _, sheet, methods = load_config(copy.deepcopy(DEFAULT_CONFIG), project)
    training = ("pair_rule", "tie_threshold", "loss", "beta", "nll_weight", "reference", "lr", "epochs")
    for name, m in methods.items():
        routed = methods["laser" if m.recipe_name == "laser" else "bayesian"]
        assert all(getattr(m.recipe, k) == getattr(routed.recipe, k) for k in training), name
    for recipe in ("laser", "bayesian"):
        assert {f"{rm}@{recipe}" for rm in sheet["rm_id"]} <= set(methods)
