"""The conda route pins what the pip route pins: every requirement of pyproject.toml appears,
with the same version specifier, in the rule environment (envs/rmroute.yaml), and the driver
environment (environment.yml) pins Snakemake and the SLURM plugin as the `workflow` extra does.
Conda itself is not installed in CI, so these environments are checked, not built."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def pip_pins(env: dict) -> dict[str, str]:
    """name -> specifier of the `pip:` entries of a conda environment file."""
    pins = {}
    for entry in env["dependencies"]:
        if isinstance(entry, dict):
            for line in entry.get("pip", []):
                match = re.match(r"^([A-Za-z0-9_.\-]+)\s*(.*)$", line)
                if match and not line.startswith("-"):
                    pins[match.group(1).lower()] = match.group(2).replace(" ", "")
    return pins


def conda_pins(env: dict) -> dict[str, str]:
    pins = {}
    for entry in env["dependencies"]:
        if isinstance(entry, str) and "=" in entry:
            name, version = entry.split("=", 1)
            pins[name.lower()] = "==" + version
    return pins


def requirements(names: list[str]) -> dict[str, str]:
    out = {}
    for line in names:
        match = re.match(r"^([A-Za-z0-9_.\-]+)\s*(.*)$", line)
        out[match.group(1).lower()] = match.group(2).replace(" ", "")
    return out


PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_the_rule_environment_pins_every_runtime_requirement():
    env = yaml.safe_load((ROOT / "envs" / "rmroute.yaml").read_text())
    pins = pip_pins(env)
    for name, spec in requirements(PROJECT["dependencies"]).items():
        assert pins.get(name) == spec, f"envs/rmroute.yaml: {name}{pins.get(name, ' missing')}, pyproject.toml: {name}{spec}"
    workflow = requirements(PROJECT["optional-dependencies"]["workflow"])
    assert pins["snakemake"] == workflow["snakemake"]  # the script directive imports snakemake inside the job


def test_the_driver_environment_pins_the_workflow_extra():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pins = conda_pins(env)
    for name, spec in requirements(PROJECT["optional-dependencies"]["workflow"]).items():
        assert pins.get(name) == spec, f"environment.yml: {name} {pins.get(name)}, pyproject.toml: {spec}"
    assert any("-e .[test]" in line for e in env["dependencies"] if isinstance(e, dict) for line in e["pip"])


def test_every_conda_directive_names_an_environment_file():
    named = set()
    for rules in (ROOT / "workflow" / "rules").glob("*.smk"):
        named |= set(re.findall(r'conda:\s*\n\s*"([^"]+)"', rules.read_text()))
    assert named
    for path in named:
        assert (ROOT / "workflow" / "rules" / path).resolve().is_file(), path


def test_the_vllm_environment_differs_only_where_vllm_requires():
    """envs/vllm.yaml (rollouts with rollout.backend: vllm) = the rule environment + vllm, with the
    transformers and numpy that vLLM 0.32.0 accepts (see benchmarks/gpu_check.sh, which installs the same)."""
    pins = pip_pins(yaml.safe_load((ROOT / "envs" / "vllm.yaml").read_text()))
    differ = {"transformers": "==5.19.0", "numpy": "==2.3.5"}
    for name, spec in requirements(PROJECT["dependencies"]).items():
        assert pins.get(name) == differ.get(name, spec), f"envs/vllm.yaml: {name}{pins.get(name, ' missing')}"
    assert pins["vllm"] == "==0.32.0"
    script = (ROOT / "benchmarks" / "gpu_check.sh").read_text()
    assert "vllm==0.32.0 transformers==5.19.0 numpy==2.3.5" in script
    rules = (ROOT / "workflow" / "rules" / "common.smk").read_text()
    assert '"../../envs/vllm.yaml"' in rules and (ROOT / "envs" / "vllm.yaml").is_file()
