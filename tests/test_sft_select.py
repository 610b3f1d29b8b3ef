"""SFT checkpoint selection (`sft.select: band`): the kept policy is exactly the checkpoint the
selection table marks, the same weights a run of that many steps trains, chosen on held-out
prompts only; and a run's evaluation on those held-out (validation) prompts beside test."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from rmroute import models
from rmroute.io import write_jsonl
from rmroute.stages import band_margin, evaluate_policies, train_sft_policy
from rmroute.testbed import TestbedConfig, generate_splits

POLICY = {"source": "build", "tokenizer_vocab": 400, "hidden_size": 32, "layers": 1, "heads": 2,
          "intermediate_size": 64, "max_length": 128}


def test_band_margin_is_the_worst_domains_depth_inside_the_band():
    assert band_margin({"a": 0.5, "b": 0.5}, (0.25, 0.75)) == pytest.approx(0.25)
    assert band_margin({"a": 0.5, "b": 0.3}, (0.25, 0.75)) == pytest.approx(0.05)
    assert band_margin({"a": 0.9, "b": 0.5}, (0.25, 0.75)) == pytest.approx(-0.15)  # one domain above: negative
    assert band_margin({"a": 0.0}, (0.25, 0.75)) == pytest.approx(-0.25)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("sft_select")
    splits = generate_splits(TestbedConfig(n_entities=20, split_sizes={"sft": 60, "rm_train": 10, "router_offline": 6,
                                                                       "rollout": 10, "test": 8}, ood_size=4))
    for name in ("sft", "router_offline", "test"):
        write_jsonl(splits[name], root / f"{name}.jsonl")
    return root


def _sft(steps: int, **select) -> dict:
    return {"steps": steps, "batch_size": 8, "lr": 0.003, "warmup_steps": 0,
            "mix": {"arith": 1.0, "facts_mc": 1.0, "facts_yesno": 1.0, "instruct": 1.0}, **select}


def test_band_selection_keeps_the_marked_checkpoint_and_equals_a_run_of_that_length(data, one_torch_thread):
    band = {"select": "band", "select_every": 4, "band": [0.0, 1.0]}
    train_sft_policy(str(data / "sft.jsonl"), POLICY, _sft(12, **band), 0, 1, "cpu", str(data / "band"),
                     val_path=str(data / "router_offline.jsonl"), selection_path=str(data / "selection.tsv"), max_new_tokens=6)
    table = pd.read_csv(data / "selection.tsv", sep="\t")
    assert sorted(table["step"].unique()) == [4, 8, 12]
    assert set(table["domain"]) == {"arith", "facts_mc", "facts_yesno", "instruct"}
    per_step = table.groupby("step")["margin"].first()
    chosen = int(table.loc[table["selected"], "step"].iloc[0])
    assert table.loc[table["selected"], "step"].nunique() == 1
    assert chosen == per_step[per_step == per_step.max()].index.min()  # the earliest of the deepest
    for step, margin in per_step.items():
        acc = table[table["step"] == step].set_index("domain")["accuracy"].to_dict()
        assert margin == pytest.approx(band_margin(acc, (0.0, 1.0)), abs=1e-6)

    train_sft_policy(str(data / "sft.jsonl"), POLICY, _sft(chosen), 0, 1, "cpu", str(data / "fixed"))
    kept = models.load_policy(data / "band", device="cpu").state_dict()
    fixed = models.load_policy(data / "fixed", device="cpu").state_dict()
    assert all(torch.equal(kept[k], fixed[k]) for k in kept)
    if chosen != 12:  # and not the last checkpoint's weights
        last_run = data / "last"
        train_sft_policy(str(data / "sft.jsonl"), POLICY, _sft(12), 0, 1, "cpu", str(last_run))
        last = models.load_policy(last_run, device="cpu").state_dict()
        assert not all(torch.equal(kept[k], last[k]) for k in kept)


def test_band_selection_needs_validation_prompts(data):
    with pytest.raises(ValueError, match="val_path"):
        train_sft_policy(str(data / "sft.jsonl"), POLICY, _sft(4, select="band"), 0, 1, "cpu", str(data / "none"))


def test_evaluation_adds_the_validation_split_and_leaves_test_as_it_was(data, one_torch_thread):
    train_sft_policy(str(data / "sft.jsonl"), POLICY, _sft(2), 0, 1, "cpu", str(data / "short"))
    policies = [str(data / "short")] * 2
    tests, vals = [str(data / f"eval{i}.tsv") for i in (1, 2)], [str(data / f"eval_validation{i}.tsv") for i in (1, 2)]
    evaluate_policies(policies, str(data / "test.jsonl"), 6, 1, "cpu", tests, validation_path=str(data / "router_offline.jsonl"),
                      out_validation_tsvs=vals)
    evaluate_policies(policies[:1], str(data / "test.jsonl"), 6, 1, "cpu", [str(data / "alone.tsv")])
    evaluate_policies(policies[:1], str(data / "router_offline.jsonl"), 6, 1, "cpu", [str(data / "val_as_test.tsv")])
    pd.testing.assert_frame_equal(pd.read_csv(tests[0], sep="\t"), pd.read_csv(data / "alone.tsv", sep="\t"))
    for path in vals:  # greedy decoding: the validation accuracy is a function of the policy alone
        pd.testing.assert_frame_equal(pd.read_csv(path, sep="\t"), pd.read_csv(data / "val_as_test.tsv", sep="\t"))
    assert set(pd.read_csv(vals[0], sep="\t")["metric"]) == {"accuracy"}
    with pytest.raises(ValueError, match="validation"):
        evaluate_policies(policies, str(data / "test.jsonl"), 6, 1, "cpu", tests, out_validation_tsvs=vals)


def test_a_selection_worker_keeps_the_same_checkpoint_with_the_same_bytes(data, one_torch_thread, tmp_path):
    """`select_worker`: the checkpoints are evaluated by a second process while training goes on.
    With more checkpoints than the worker may hold pending (7 > 2, so `submit` waits for results),
    the selection table and every file of the saved policy equal those of the run that evaluates
    in its own process."""
    band = {"select": "band", "select_every": 2, "band": [0.25, 0.75]}
    for worker in (False, True):
        train_sft_policy(str(data / "sft.jsonl"), POLICY, _sft(14, **band), 0, 1, "cpu", str(tmp_path / f"w{worker}"),
                         val_path=str(data / "router_offline.jsonl"), selection_path=str(tmp_path / f"w{worker}.tsv"),
                         max_new_tokens=6, select_worker=worker)
    assert (tmp_path / "wFalse.tsv").read_bytes() == (tmp_path / "wTrue.tsv").read_bytes()
    assert sorted(pd.read_csv(tmp_path / "wTrue.tsv", sep="\t")["step"].unique()) == list(range(2, 15, 2))
    files = sorted(p.name for p in (tmp_path / "wFalse").iterdir())
    assert "model.safetensors" in files and files == sorted(p.name for p in (tmp_path / "wTrue").iterdir())
    for name in files:
        assert (tmp_path / "wFalse" / name).read_bytes() == (tmp_path / "wTrue" / name).read_bytes(), name
