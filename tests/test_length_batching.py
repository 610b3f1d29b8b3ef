"""RM scoring and completion log-probs batch rows by token length and put each result back in
its row's place: on CPU the scores equal those of the unsorted batches (to 1e-6; exactly where
every row has the same length) and those of each row scored alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForSequenceClassification

from rmroute import models
from rmroute.testbed import TestbedConfig, generate_splits


@pytest.fixture(scope="module")
def tiny(one_torch_thread):
    splits = generate_splits(TestbedConfig(n_entities=20, split_sizes={"sft": 40, "rm_train": 4, "router_offline": 4,
                                                                       "rollout": 4, "test": 8}, ood_size=4))
    tok = models.train_tokenizer([r["prompt"] + r["answer"] for r in splits["sft"]], 400)
    torch.manual_seed(0)
    policy = models.build_policy(tok, 32, 1, 2, 64, 128).eval()
    rm = LlamaForSequenceClassification(LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1,
                                                    num_attention_heads=2, intermediate_size=64, num_labels=1,
                                                    pad_token_id=tok.pad_token_id)).eval()
    records = splits["test"]  # all four domains: prompts and answers of many lengths
    return tok, policy, rm, [r["prompt"] for r in records], [r["answer"] for r in records]


def unsorted(fn, prompts, responses, size):
    """The rows in their own order, `size` at a time: each call is one batch, so no sorting happens."""
    parts = [fn(prompts[i : i + size], responses[i : i + size]) for i in range(0, len(prompts), size)]
    return np.concatenate([np.asarray(p, dtype=np.float64) for p in parts])


def test_length_sorted_batches_keep_the_order_of_equal_lengths():
    assert models.length_sorted_batches([5, 5, 5, 5, 5], 2) == [[0, 1], [2, 3], [4]]
    assert models.length_sorted_batches([9, 1, 5, 1], 2) == [[1, 3], [2, 0]]
    assert sorted(i for b in models.length_sorted_batches([3, 8, 2, 7, 7, 1], 4) for i in b) == list(range(6))


def test_rm_scores_sorted_equal_unsorted_and_alone(tiny):
    tok, _, rm, prompts, responses = tiny
    lengths = {len(tok(p + r, add_special_tokens=False)["input_ids"]) for p, r in zip(prompts, responses)}
    assert len(lengths) > 3  # the rows really differ in length, so sorting reorders them

    def score(ps, rs, size=5):
        return models.rm_scores(rm, tok, ps, rs, batch_size=size)

    got = np.asarray(score(prompts, responses), dtype=np.float64)
    assert np.allclose(got, unsorted(score, prompts, responses, 5), atol=1e-6, rtol=0)
    alone = unsorted(lambda ps, rs: score(ps, rs, 1), prompts, responses, 1)
    assert np.allclose(got, alone, atol=1e-6, rtol=0)


def test_completion_logprobs_sorted_equal_unsorted_and_alone(tiny):
    tok, policy, _, prompts, responses = tiny

    def summed(ps, rs, size=5):
        return models.completion_logprobs(policy, tok, ps, rs, batch_size=size)[0]

    got = summed(prompts, responses).astype(np.float64)
    assert np.allclose(got, unsorted(summed, prompts, responses, 5), atol=1e-6 * np.abs(got).max(), rtol=0)
    assert np.allclose(got, unsorted(lambda ps, rs: summed(ps, rs, 1), prompts, responses, 1),
                       atol=1e-6 * np.abs(got).max(), rtol=0)


def test_equal_lengths_score_exactly_as_before(tiny):
    """Rows of one length keep their order and batches: bit-identical to unsorted batching."""
    tok, policy, rm, prompts, responses = tiny
    target = len(tok(prompts[0] + responses[0], add_special_tokens=False)["input_ids"])
    same = [(p, r) for p, r in zip(prompts, responses) if len(tok(p + r, add_special_tokens=False)["input_ids"]) == target]
    ps, rs = [p for p, _ in same] * 3, [r for _, r in same] * 3
    sorted_scores = np.asarray(models.rm_scores(rm, tok, ps, rs, batch_size=2))
    assert np.array_equal(sorted_scores, unsorted(lambda a, b: models.rm_scores(rm, tok, a, b, batch_size=2), ps, rs, 2))
    logps = models.completion_logprobs(policy, tok, ps, rs, batch_size=2)[1]
    assert np.array_equal(logps, unsorted(lambda a, b: models.completion_logprobs(policy, tok, a, b, batch_size=2)[1], ps, rs, 2))
