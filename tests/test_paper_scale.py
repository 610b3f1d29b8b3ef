"""Paper scale in CI: `config/paper.yaml` builds its DAG with GPUs on the rules that load a model
(from the config's own resources, and through profiles/slurm onto its GPU partition), and
`.test/config/paper_tiny.yaml` runs the same paper-scale code paths end to end on CPU with tiny
stand-ins saved under hub ids (tests/paper_tiny.py): hub-id loading from the HF cache, hf_data
datasets on local JSON/Parquet files, RM chat templates and tokenizers unlike the policy's, a
last-token offline-router encoder, and LoRA adapters carried across iterations."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

import paper_tiny

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "config" / "paper.yaml"
PAPER_TINY = ROOT / ".test" / "config" / "paper_tiny.yaml"
GPU_RULES = {"sft_policy", "evaluate_sft", "rm_pairs", "train_rm", "rm_behaviour", "rollout_sft", "rollout",
             "train_iteration", "evaluate"}  # the rules that load the policy or an RM

pytestmark = pytest.mark.workflow


def dry_run_jobs(*args: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, resources) of every job a dry run lists."""
    run = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", str(PAPER), *args], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:\n)", run.stdout):
        head = re.match(r"(?:local)?rule (\w+):\n", block)
        if not head:
            continue
        found = re.search(r"^\s+resources: (.*)$", block, re.M)
        resources = dict(item.split("=", 1) for item in found.group(1).split(", ")) if found else {}
        jobs.append((head.group(1), resources))
    return jobs


def test_paper_dag_asks_for_a_gpu_on_every_model_rule():
    jobs = dry_run_jobs()
    rules = {rule for rule, _ in jobs}
    assert len(jobs) > 1000 and {"rollout", "train_iteration"} <= rules
    for rule, resources in jobs:
        if rule in GPU_RULES - {"train_rm"}:  # paper.yaml trains no RM: every row is a hub RM
            assert resources.get("gpu") == "1", (rule, resources)
        else:
            assert resources.get("gpu", "0") == "0", (rule, resources)


def test_the_slurm_profile_sends_model_rules_to_its_gpu_partition():
    jobs = dry_run_jobs("--profile", "profiles/slurm")
    seen = set()
    for rule, resources in jobs:
        if rule in GPU_RULES:
            seen.add(rule)
            assert resources.get("slurm_partition") == "gpu" and resources.get("gpu") == "1", (rule, resources)
        elif rule in ("routing_sim", "train_offline_router", "prepare_data"):
            assert resources.get("slurm_partition") == "cpu" and resources.get("gpu", "0") == "0", (rule, resources)
    assert {"rollout", "train_iteration", "evaluate"} <= seen


def test_paper_tiny_keeps_the_test_configs_recipes_and_both_papers_routers():
    """The paper path runs the two routed methods (LinUCB with the previous policy as reference,
    Thompson with the SFT reference) as the .test config defines them; the single-RM, ensemble and
    oracle methods share their code path and run in the .test workflow."""
    tiny, test = (yaml.safe_load(p.read_text()) for p in (PAPER_TINY, ROOT / ".test" / "config" / "config.yaml"))
    assert tiny["recipes"] == test["recipes"]
    assert {m["router"] for m in tiny["methods"].values()} == {"linucb", "thompson"}
    assert all(test["methods"][name] == m for name, m in tiny["methods"].items())
    paper = yaml.safe_load(PAPER.read_text())
    assert set(tiny["hf_data"]) == set(paper["hf_data"]) and set(tiny["lora"]) == set(paper["lora"])
    assert "/" in tiny["policy"]["source"] and not (ROOT / tiny["policy"]["source"]).exists()  # a hub id, as in paper.yaml


@pytest.fixture(scope="module")
def hub_home():
    """The tiny models and datasets, built once into .test/hub (ignored by git)."""
    return paper_tiny.build()


def test_paper_tiny_runs_the_paper_code_paths(hub_home):
    config = yaml.safe_load(PAPER_TINY.read_text())
    results = ROOT / config["results_dir"]
    shutil.rmtree(results, ignore_errors=True)
    env = {**os.environ, "HF_HOME": str(hub_home)}  # the hub cache the tiny models were saved into
    start = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", str(PAPER_TINY)], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=1500)
    print(f"paper_tiny run: {time.monotonic() - start:.0f} s")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-6000:]

    # hf_data: every domain of the config came from its dataset file, and gold answers parse
    rollout = pd.read_json(results / "data" / "rollout.jsonl", lines=True)
    assert set(rollout["domain"]) == set(config["hf_data"])
    test = pd.read_json(results / "data" / "test.jsonl", lines=True)
    assert test.groupby("domain").size().to_dict() == {d: config["testbed"]["split_sizes"]["test"] for d in config["hf_data"]}
    # every RM of the sheet scored, each with its own tokenizer
    behaviour = pd.read_parquet(results / "behaviour" / "behaviour.parquet")
    assert set(behaviour["rm"]) == {"rm_a", "rm_b", "rm_c"}
    assert behaviour.groupby("rm")["score_chosen"].nunique().min() > 1
    # LoRA: each iteration's policy is an adapter on the SFT policy, and the last one evaluated
    for method in config["methods"]:
        for it in (1, 2):
            policy = results / "runs" / method / "0" / f"it{it}" / "policy"
            assert (policy / "adapter_config.json").exists() and not (policy / "model.safetensors").exists(), policy
    accuracy = pd.read_csv(results / "tables" / "policy_accuracy.tsv", sep="\t")
    assert set(accuracy["method"]) == set(config["methods"]) and set(accuracy["iteration"]) == {0, 1, 2}
    assert (results / "tables" / "routing_sim.tsv").exists() and (results / "tables" / "offline_router.tsv").exists()
