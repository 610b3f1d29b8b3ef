"""The paper-scale data path (`datasets.load_dataset`) on tiny local files in the formats of
GSM8K, MMLU and StrategyQA: records come out in the testbed format and the checkers grade them."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from rmroute.config import load_config
from rmroute.hf_data import hf_splits
from rmroute.io import read_jsonl
from rmroute.stages import prepare_data
from rmroute.testbed import score_record

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"sft": 3, "rm_train": 2, "router_offline": 2, "rollout": 2, "test": 2}


def _write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture()
def hf_data(tmp_path):
    gsm = _write(tmp_path / "gsm.jsonl", [{"question": f"What is {i} + 2?", "answer": f"{i} plus two.\n#### {i + 2:,}"}
                                          for i in range(12)])
    mmlu = _write(tmp_path / "mmlu.jsonl", [{"question": f"Item {i}: pick {i % 4}.", "choices": ["zero", "one", "two", "three"],
                                            "answer": i % 4} for i in range(12)])
    sqa = _write(tmp_path / "sqa.jsonl", [{"question": f"Is {i} even?", "answer": i % 2 == 0} for i in range(12)])
    return {
        "arith": {"path": "json", "data_files": gsm, "split": "train", "test_split": "train",
                  "question_field": "question", "answer_field": "answer"},
        "facts_mc": {"path": "json", "data_files": mmlu, "split": "train", "test_split": "train",
                     "question_field": "question", "answer_field": "answer", "choices_field": "choices"},
        "facts_yesno": {"path": "json", "data_files": sqa, "split": "train", "test_split": "train",
                        "question_field": "question", "answer_field": "answer"},
    }


def test_records_are_in_testbed_format_and_gold_scores_one(hf_data):
    splits = hf_splits(hf_data, SIZES, 0, seed=0)
    for split, size in SIZES.items():
        assert len(splits[split]) == 3 * size, split
    for record in [r for rs in splits.values() for r in rs]:
        assert record["prompt"].startswith("Q: ") and record["prompt"].endswith("\nA:")
        assert record["answer"].startswith(" ")
        assert score_record(record, record["answer"]) == 1.0
    mc = next(r for r in splits["test"] if r["domain"] == "facts_mc")
    assert mc["options"] == ["zero", "one", "two", "three"] and "(B) one" in mc["prompt"]
    assert mc["answer"] == " " + mc["options"][int(mc["prompt"].split("pick ")[1][0])]
    arith = next(r for r in splits["sft"] if r["domain"] == "arith")
    assert "#" not in arith["answer"] and "," not in arith["answer"]


def test_training_slices_do_not_overlap(hf_data):
    splits = hf_splits(hf_data, SIZES, 0, seed=1)
    train = [r["prompt"] for s in ("sft", "rm_train", "router_offline", "rollout") for r in splits[s]]
    assert len(train) == len(set(train))


def test_unknown_domain_is_refused(hf_data):
    with pytest.raises(ValueError, match="unknown domain"):
        hf_splits({"poetry": hf_data["arith"]}, SIZES, 0, seed=0)


def test_prepare_data_writes_every_split(hf_data, tmp_path):
    testbed = {"split_sizes": SIZES, "ood_size": 0}
    prepare_data(testbed, 0, tmp_path / "data", hf_data)
    for split in ("sft", "rm_train", "router_offline", "rollout", "test", "test_ood", "facts"):
        assert (tmp_path / "data" / f"{split}.jsonl").exists(), split
    assert len(read_jsonl(tmp_path / "data" / "test.jsonl")) == 6


def test_config_accepts_hf_data_and_rejects_a_typo(hf_data):
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    good = copy.deepcopy(config)
    good["hf_data"] = hf_data
    load_config(good, ROOT)
    bad = copy.deepcopy(good)
    bad["hf_data"]["arith"]["question_feild"] = "q"
    with pytest.raises(ValueError, match="hf_data.arith"):
        load_config(bad, ROOT)
