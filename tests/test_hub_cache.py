"""A hub id the config loads must already be in the local Hugging Face cache: the check runs when
the Snakefile is parsed (`rmroute.hub.check_hub_cache`, called from workflow/rules/common.smk),
names the field or sheet row and how to fetch the model, and is only a warning for a dry run."""

from __future__ import annotations

import copy
import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rmroute.config import ConfigError, load_config
from rmroute.hub import CHECK_ENV, check_hub_cache, hub_sources
from test_config import DEFAULT_CONFIG, REPO, cell, init, write_sheet

HUB_ENV = ("HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", CHECK_ENV)
PAPER_TINY = REPO / ".test" / "config" / "paper_tiny.yaml"
PAPER_TINY_IDS = ("tiny-org/tiny-policy", "tiny-org/tiny-rm-chat", "tiny-org/tiny-rm-plain", "tiny-org/tiny-judge",
                  "tiny-org/tiny-encoder")


@pytest.fixture
def hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty HF_HOME of this test only (no HF_HUB_CACHE or check override from outside)."""
    for name in HUB_ENV:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "hf_home"
    (home / "hub").mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(home))
    return home


def tiny_classifier():
    from transformers import LlamaConfig, LlamaForSequenceClassification

    return LlamaForSequenceClassification(LlamaConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1,
                                                      num_attention_heads=2, intermediate_size=32, num_labels=1,
                                                      pad_token_id=0))


def cache(home: Path, repo_id: str, max_shard_size: str | None = None) -> Path:
    """save_pretrained into the hub cache layout that from_pretrained reads offline
    (models--org--name/snapshots/<commit>/, refs/main), as tests/paper_tiny.py does."""
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    repo = home / "hub" / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    tiny_classifier().save_pretrained(snapshot, **kwargs)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def with_hub_rm(project: Path, source: str) -> tuple:
    """The default config with one sheet row's source set to `source`; (config, sheet, methods)."""
    write_sheet(project / "config" / "rm_pool.tsv", [cell("rm_arith_mc_bt", "source", source),
                                                     init("rm_arith_mc_bt", "sft")])
    return load_config(copy.deepcopy(DEFAULT_CONFIG), project)


def test_a_missing_hub_rm_fails_with_its_row_and_the_fetch_command(project: Path, hf_home: Path):
    config, sheet, methods = with_hub_rm(project, "org/my-reward-model")  # load_config itself never looks
    with pytest.raises(ConfigError) as info:
        check_hub_cache(config, sheet, methods, project)
    message = str(info.value)
    assert message.startswith("rm_pool[rm_arith_mc_bt].source: 'org/my-reward-model' is not in the local Hugging Face "
                              f"cache (HF_HOME={hf_home})"), message
    assert "`hf download org/my-reward-model`" in message and "huggingface-cli download org/my-reward-model" in message
    assert "on a machine with network access" in message
    assert len(message.splitlines()) == 1  # the other rows are trained here: nothing else to fetch


def test_a_cached_hub_rm_passes_and_loads_offline(project: Path, hf_home: Path):
    cache(hf_home, "org/cached-rm")
    config, sheet, methods = with_hub_rm(project, "org/cached-rm")
    assert hub_sources(config, sheet, methods, project) == [("rm_pool[rm_arith_mc_bt].source", "org/cached-rm")]
    assert check_hub_cache(config, sheet, methods, project) == []
    # what passes is what a job then loads, offline, from the same cache
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained("org/cached-rm", cache_dir=hf_home / "hub",
                                                               local_files_only=True, use_safetensors=True)
    assert model.config.num_labels == 1


def test_hf_hub_cache_overrides_hf_home(project: Path, hf_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    elsewhere = tmp_path / "elsewhere"
    cache(elsewhere, "org/cached-rm")
    config, sheet, methods = with_hub_rm(project, "org/cached-rm")
    with pytest.raises(ConfigError, match=r"HF_HOME="):
        check_hub_cache(config, sheet, methods, project)
    monkeypatch.setenv("HF_HUB_CACHE", str(elsewhere / "hub"))
    assert check_hub_cache(config, sheet, methods, project) == []


def test_a_partial_snapshot_fails(project: Path, hf_home: Path):
    """Only config.json fetched (no weights), or a sharded checkpoint with a shard missing."""
    snapshot = cache(hf_home, "org/no-weights")
    (snapshot / "model.safetensors").unlink()
    config, sheet, methods = with_hub_rm(project, "org/no-weights")
    with pytest.raises(ConfigError, match=r"rm_pool\[rm_arith_mc_bt\]\.source: 'org/no-weights' is only partly in the "
                                          r"local Hugging Face cache \(no safetensors weights"):
        check_hub_cache(config, sheet, methods, project)

    snapshot = cache(hf_home, "org/sharded", max_shard_size="4KB")
    shards = sorted(snapshot.glob("model-*.safetensors"))
    assert len(shards) > 1 and not (snapshot / "model.safetensors").exists()
    config, sheet, methods = with_hub_rm(project, "org/sharded")
    assert check_hub_cache(config, sheet, methods, project) == []
    shards[-1].unlink()
    with pytest.raises(ConfigError, match=rf"'org/sharded' is only partly .*weight shards missing, e.g. {re.escape(shards[-1].name)}"):
        check_hub_cache(config, sheet, methods, project)


def test_local_directories_and_builtin_sources_are_not_hub_ids(project: Path, hf_home: Path):
    """`build`, `train`, `r2m:`, `minilm` and directories inside the project, even `org/name`-shaped
    ones, are never looked up in the hub cache."""
    (project / "models" / "policy").mkdir(parents=True)
    (project / "org" / "local-rm").mkdir(parents=True)  # an existing path wins over the hub-id reading
    write_sheet(project / "config" / "rm_pool.tsv", [cell("rm_arith_mc_bt", "source", "org/local-rm"),
                                                     init("rm_arith_mc_bt", "sft")])
    config = copy.deepcopy(DEFAULT_CONFIG)
    config["methods"]["bayesian"] = {"router": "thompson"}  # the offline router's encoder is used: minilm
    config, sheet, methods = load_config(config, project)
    assert hub_sources(config, sheet, methods, project) == []
    config["policy"]["source"] = "models/policy"
    assert hub_sources(config, sheet, methods, project) == []
    assert check_hub_cache(config, sheet, methods, project) == []


def test_every_hub_id_of_the_paper_config_is_checked(hf_home: Path):
    """policy.source, each hub row of the sheet and the offline router's encoder, each on its own line;
    the encoder only where a method uses the offline router."""
    config, sheet, methods = load_config(yaml.safe_load((REPO / "config" / "paper.yaml").read_text()), REPO)
    with pytest.raises(ConfigError) as info:
        check_hub_cache(config, sheet, methods, REPO)
    lines = str(info.value).splitlines()
    assert [line.split(":", 1)[0] for line in lines] == [
        "policy.source", "rm_pool[skywork_llama3_8b].source", "rm_pool[grm_gemma2_2b].source",
        "rm_pool[armorm_llama3_8b].source", "offline_router.encoder"]
    assert "'HuggingFaceTB/SmolLM2-135M' is not in the local Hugging Face cache" in lines[-1]
    no_offline = {name: m for name, m in methods.items() if not m.needs_offline_router}
    assert "offline_router.encoder" not in dict(hub_sources(config, sheet, no_offline, REPO))


def test_a_dry_run_only_warns_unless_told_otherwise(project: Path, hf_home: Path, monkeypatch: pytest.MonkeyPatch):
    config, sheet, methods = with_hub_rm(project, "org/my-reward-model")
    warnings = check_hub_cache(config, sheet, methods, project, dry_run=True)
    assert len(warnings) == 1 and warnings[0].startswith("rm_pool[rm_arith_mc_bt].source: 'org/my-reward-model'")
    monkeypatch.setenv(CHECK_ENV, "error")  # a strict dry run: a pre-flight check on the cluster
    with pytest.raises(ConfigError, match=r"rm_pool\[rm_arith_mc_bt\]\.source"):
        check_hub_cache(config, sheet, methods, project, dry_run=True)
    monkeypatch.setenv(CHECK_ENV, "warn")  # e.g. --unlock or --dag where the models are not
    assert check_hub_cache(config, sheet, methods, project) == warnings
    monkeypatch.setenv(CHECK_ENV, "sometimes")
    with pytest.raises(ConfigError, match=rf"{CHECK_ENV}: 'sometimes' is not one of"):
        check_hub_cache(config, sheet, methods, project)


# ---------------------------------------------------------------- through snakemake, at parse time


def snakemake(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in HUB_ENV}
    env["HF_HOME"] = str(home)
    # A results directory of its own, never written (dry runs): the paper-scale test's finished run
    # would otherwise leave the dry run nothing to plan.
    return subprocess.run([sys.executable, "-m", "snakemake", *args, "--cores", "1", "--configfile", str(PAPER_TINY),
                           "--config", "results_dir=.test/results-hub-check"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.workflow
def test_snakemake_stops_at_parse_time_and_a_dry_run_warns(hf_home: Path):
    # A real run stops while the Snakefile is parsed. The target is one no rule makes, so even a
    # check that let the run through would schedule nothing.
    run = snakemake(hf_home, ".test/results-hub-check/none")
    output = run.stdout + run.stderr
    assert run.returncode != 0, output
    assert "rm_pool[rm_a].source: 'tiny-org/tiny-rm-chat' is not in the local Hugging Face cache" in output, output
    assert "hf download tiny-org/tiny-policy" in output and "MissingRuleException" not in output, output
    # a dry run plans the DAG and warns about each missing model
    run = snakemake(hf_home, "-n")
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "Job stats" in output
    for repo_id in PAPER_TINY_IDS:
        assert f"'{repo_id}' is not in the local Hugging Face cache" in output, repo_id
    # every model cached: no warning
    for repo_id in PAPER_TINY_IDS:
        cache(hf_home, repo_id)
    run = snakemake(hf_home, "-n")
    output = run.stdout + run.stderr
    assert run.returncode == 0 and "local Hugging Face cache" not in output, output
