"""The typed settings of `rm_training`, `sft`, `budget` and `evaluation` (rmroute.settings): their
defaults are the schema's, and a job's params hold only the keys it reads, so a changed key
re-runs only the jobs that read it (Snakemake's params trigger)."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from dataclasses import MISSING, fields
from pathlib import Path

import pandas as pd
import pytest
import yaml

from rmroute.config import load_config
from rmroute.settings import (
    SETTINGS_BLOCKS,
    SFT,
    Budget,
    GenerativeRMTraining,
    RMJob,
    RMTraining,
    settings_defaults,
)

REPO = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
DEFAULT_CONFIG = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
TEST_CONFIG = REPO / ".test" / "config" / "config.yaml"


def _required_fields(cls) -> set[str]:
    return {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}


def _check_block(cls, schema: dict, where: str) -> None:
    """Field names, required keys and defaults of `cls` against the schema block `schema`. A
    block with a default of its own (rm_training.generative) takes its keys' defaults from it."""
    properties = schema["properties"]
    assert [f.name for f in fields(cls)] == list(properties), f"{where}: fields and schema keys differ (or their order)"
    required = set(schema.get("required", [])) - set(schema.get("default", {}))
    assert _required_fields(cls) == required, f"{where}: required keys differ"
    for key, value in schema.get("default", {}).items():
        assert settings_defaults(cls)[key] == value, f"{where}.{key}: dataclass and the block's schema default differ"
    ours = settings_defaults(cls)
    for key, spec in properties.items():
        if "default" in spec:
            assert ours.get(key) == spec["default"], f"{where}.{key}: dataclass {ours.get(key)!r}, schema {spec['default']!r}"
        assert fields(cls)[list(properties).index(key)].metadata.get("help"), f"{where}.{key}: no help string"


@pytest.mark.parametrize("block", sorted(SETTINGS_BLOCKS))
def test_dataclass_defaults_are_the_schema_defaults(block):
    _check_block(SETTINGS_BLOCKS[block], SCHEMA["properties"][block], block)


def test_nested_generative_block_agrees_with_the_schema():
    _check_block(GenerativeRMTraining, SCHEMA["properties"]["rm_training"]["properties"]["generative"], "rm_training.generative")


def test_sft_warmup_has_one_default():
    """An omitted warmup_steps is 50 in the schema, the dataclass and so in the SFT job."""
    assert SCHEMA["properties"]["sft"]["properties"]["warmup_steps"]["default"] == 50
    assert SFT.from_params({"steps": 10, "batch_size": 2, "lr": 0.1}).warmup_steps == 50


@pytest.mark.parametrize("config_file", [REPO / "config" / "config.yaml", TEST_CONFIG])
def test_shipped_configs_build_typed_settings(config_file):
    config, _, _ = load_config(yaml.safe_load(config_file.read_text()), REPO)
    for block, cls in SETTINGS_BLOCKS.items():
        settings = cls.from_config(config[block])
        assert isinstance(settings, cls)
    assert Budget.from_config(config["budget"]).rollout() == {
        k: config["budget"][k] for k in ("prompts_per_iteration", "samples_per_prompt", "temperature", "max_new_tokens")}


# ---------------------------------------------------------------- what a train_rm job receives


def _rows(config_file: Path = TEST_CONFIG) -> dict[str, pd.Series]:
    config = yaml.safe_load(config_file.read_text())
    _, sheet, _ = load_config(config, REPO)
    return {rm_id: row for rm_id, row in sheet.set_index("rm_id", drop=False).iterrows()}


def _job(block: dict, row) -> dict:
    return RMTraining.from_config(block).job(row).params()


@pytest.fixture
def rm_training():
    return copy.deepcopy(DEFAULT_CONFIG["rm_training"])


def test_bsr_coef_reaches_only_bsr_rms(rm_training):
    rows = _rows()  # rm_a: bt, rm_b: bsr, rm_c: lm
    changed = {**rm_training, "bsr_coef": 0.05, "bsr_batch_scale": False}
    for rm in ("rm_a", "rm_c"):
        assert _job(changed, rows[rm]) == _job(rm_training, rows[rm]), rm
    assert _job(changed, rows["rm_b"]) != _job(rm_training, rows["rm_b"])
    assert _job(changed, rows["rm_b"])["bsr_coef"] == 0.05


def test_generative_and_classifier_keys_stay_apart(rm_training):
    rows = _rows()
    classifier = {**rm_training, "steps": 7, "lr": 0.1, "new_layers": 5, "freeze_init": True}
    assert _job(classifier, rows["rm_c"]) == _job(rm_training, rows["rm_c"])  # the generative RM
    generative = {**rm_training, "generative": {"steps": 3, "batch_size": 2, "lr": 0.5}}
    for rm in ("rm_a", "rm_b"):
        assert _job(generative, rows[rm]) == _job(rm_training, rows[rm])
    assert _job(generative, rows["rm_c"])["steps"] == 3
    # The pair-sampling keys are rm_pairs' only.
    sampling = {**rm_training, "samples_per_prompt": 9, "temperature": 0.3}
    assert all(_job(sampling, rows[rm]) == _job(rm_training, rows[rm]) for rm in ("rm_a", "rm_b", "rm_c"))


def test_sheet_columns_a_training_does_not_read_change_nothing(rm_training):
    row = _rows()["rm_a"]
    before = _job(rm_training, row)
    for column, value in {"description": "another note", "dtype": "bfloat16", "batch_size": 1,
                          "chat_template": "tokenizer", "trust_remote_code": True}.items():
        assert _job(rm_training, _with(row, column, value)) == before, column
    assert "description" not in before and "rm_id" not in before
    assert _job(rm_training, _with(row, "max_length", 64))["max_length"] == 64  # the length it trains at


def _with(row: pd.Series, column: str, value) -> pd.Series:
    out = row.copy()
    out[column] = value
    return out


def test_job_params_are_plain_and_round_trip(rm_training):
    """Snakemake compares params by repr, and only builtin types: a dataclass param would be ignored."""
    for row in _rows().values():
        if row["source"] != "train":
            continue
        params = _job(rm_training, row)
        assert all(isinstance(v, (int, float, str, bool)) for v in params.values()), params
        assert RMJob.from_params(params).params() == params
    sft = SFT.from_config({**DEFAULT_CONFIG["sft"], "select": "last"})
    assert set(sft.params()) == {"steps", "batch_size", "lr", "warmup_steps", "mix", "select"}
    assert SFT.from_params(sft.params()) == SFT.from_config({**DEFAULT_CONFIG["sft"], "select": "last"}).stopped_at(sft.steps)
    band = SFT.from_config(DEFAULT_CONFIG["sft"]).params()
    assert band["band"] == [0.25, 0.75] and "select_split" not in band


def test_bsr_comparison_gets_the_loss_of_its_job(rm_training):
    row = _rows()["rm_a"]  # bsr_eval.rm of the .test config, a bt row
    training = RMTraining.from_config(rm_training)
    bt, bsr = training.job(row, loss="bt").params(), training.job(row, loss="bsr").params()
    assert bsr == {**bt, "loss": "bsr", "bsr_coef": 0.001, "bsr_batch_scale": True}
    changed = RMTraining.from_config({**rm_training, "bsr_coef": 0.01})
    assert changed.job(row, loss="bt").params() == bt


# ---------------------------------------------------------------- the same, as Snakemake sees it


def _snakemake(root: Path, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", "--configfile", "config.yaml", *args],
                            cwd=root, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def touched(tmp_path_factory):
    """A copy of the project on the .test config whose train_rm and rm_behaviour outputs Snakemake
    has recorded as made (`--touch`, with empty stand-ins: no model is trained)."""
    root = tmp_path_factory.mktemp("project")
    for name in ("workflow", "envs"):
        shutil.copytree(REPO / name, root / name)
    shutil.copy(REPO / "Snakefile", root / "Snakefile")
    (root / "src").symlink_to(REPO / "src")
    shutil.copy(REPO / ".test" / "config" / "rm_pool.tsv", root / "rm_pool.tsv")
    config = yaml.safe_load(TEST_CONFIG.read_text())
    config.update(results_dir="results", rm_pool="rm_pool.tsv")
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    results = root / "results"
    for path in ("models/sft", "rms/rm_a", "rms/rm_b", "rms/rm_c"):
        (results / path).mkdir(parents=True)
        (results / path / "stub").write_text("")
    for split in ("rm_train", "router_offline", "test", "test_ood"):
        (results / "data" / "pairs").mkdir(parents=True, exist_ok=True)
        (results / "data" / "pairs" / f"{split}.jsonl").write_text("")
    (results / "behaviour").mkdir()
    (results / "behaviour" / "behaviour.parquet").write_text("")
    _snakemake(root, "--touch", "--forcerun", "train_rm", "rm_behaviour", "--allowed-rules", "train_rm", "rm_behaviour",
               "--", *TARGETS)
    return root


TARGETS = ("results/rms/rm_a", "results/rms/rm_b", "results/rms/rm_c", "results/behaviour/behaviour.parquet")


def _dry_run(root: Path, edit_config=None, edit_sheet=None) -> tuple[set[str], set[str]]:
    """(outputs whose params changed, every output the dry run would remake) after an edit, with
    only Snakemake's params trigger on (the stand-ins' times mean nothing). `--list-changes
    params` cannot say it: Snakemake 9.27 lists there every output that has a record."""
    config = yaml.safe_load((root / "config.yaml").read_text())
    sheet = (root / "rm_pool.tsv").read_text()
    try:
        if edit_config:
            edited = copy.deepcopy(config)
            edit_config(edited)
            (root / "config.yaml").write_text(yaml.safe_dump(edited))
        if edit_sheet:
            (root / "rm_pool.tsv").write_text(edit_sheet(sheet))
        out = _snakemake(root, "-n", "--rerun-triggers", "params", "--allowed-rules", "train_rm", "rm_behaviour",
                         "--", *TARGETS).stdout
    finally:
        (root / "config.yaml").write_text(yaml.safe_dump(config))
        (root / "rm_pool.tsv").write_text(sheet)
    changed, remade, output = set(), set(), None
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("output: "):
            output = line.removeprefix("output: ")
            remade.add(output)
        elif line.startswith("reason: Params have changed"):
            changed.add(output)
    return changed, remade


@pytest.mark.workflow
def test_snakemake_sees_a_params_change_only_where_the_key_is_read(touched):
    """On the .test sheet (rm_a: bt over rm_c, rm_b: bsr, rm_c: lm)."""
    behaviour = "results/behaviour/behaviour.parquet"
    assert _dry_run(touched) == (set(), set())
    bsr = _dry_run(touched, edit_config=lambda c: c["rm_training"].update(bsr_coef=0.05))
    assert bsr == ({"results/rms/rm_b"}, {"results/rms/rm_b", behaviour})
    assert _dry_run(touched, edit_sheet=lambda s: s.replace("specialist B, BSR loss", "another note")) == (set(), set())
    assert _dry_run(touched, edit_config=lambda c: c["rm_training"].update(samples_per_prompt=5)) == (set(), set())
    generative = _dry_run(touched, edit_config=lambda c: c["rm_training"]["generative"].update(steps=7))
    assert generative == ({"results/rms/rm_c"}, {"results/rms/rm_c", "results/rms/rm_a", behaviour})  # rm_a starts from rm_c
