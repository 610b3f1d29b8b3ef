"""The calibration probe's config overrides (benchmarks/method_probe.py)."""

import importlib.util
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location("method_probe", Path(__file__).parents[1] / "benchmarks" / "method_probe.py")
probe = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(probe)


def test_overrides_set_nested_keys_with_yaml_values():
    config = {"budget": {"temperature": 1.0, "iterations": 3}, "recipes": {"laser": {"lr": 1e-4}}}
    probe.apply_overrides(config, ["budget.temperature=0.8", "recipes.laser.lr=0.0003", "budget.iterations=1"])
    assert config == {"budget": {"temperature": 0.8, "iterations": 1}, "recipes": {"laser": {"lr": 3e-4}}}


@pytest.mark.parametrize("bad", ["budget.temperature", "budget.temperature.x=1", "nothing.here=1"])
def test_malformed_overrides_name_the_key(bad):
    with pytest.raises(SystemExit, match=bad.split("=")[0].split(".")[0]):
        probe.apply_overrides({"budget": {"temperature": 1.0}}, [bad])
