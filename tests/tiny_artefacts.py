"""Tiny local artefacts shared by the model-level tests: testbed splits, a tokenizer trained on
them, and a one-layer classifier RM, each built the way a local checkpoint would be."""

from __future__ import annotations

from transformers import LlamaConfig, LlamaForSequenceClassification

from rmroute import models
from rmroute.testbed import TestbedConfig, generate_splits


def tiny_splits(rm_train: int = 10, rollout: int = 10, test: int = 8) -> dict:
    """Testbed splits over 20 entities, with 60 SFT demonstrations and 4 OOD prompts."""
    return generate_splits(TestbedConfig(n_entities=20, split_sizes={"sft": 60, "rm_train": rm_train, "router_offline": 5,
                                                                     "rollout": rollout, "test": test}, ood_size=4))


def tiny_tokenizer(splits: dict):
    """A 400-token BPE tokenizer trained on the SFT demonstrations."""
    return models.train_tokenizer([r["prompt"] + r["answer"] for r in splits["sft"]], 400)


def tiny_classifier(tok, hidden: int = 32) -> LlamaForSequenceClassification:
    """A one-layer Llama sequence classifier with one output: a BT RM before training."""
    return LlamaForSequenceClassification(LlamaConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=1,
                                                      num_attention_heads=2, intermediate_size=2 * hidden, num_labels=1,
                                                      pad_token_id=tok.pad_token_id))


def policy_and_classifier(root, rm_train: int = 12):
    """A tiny policy (width 24) and a tiny classifier RM (width 32) saved under `root`/policy and
    `root`/rm, with their tokenizer and eight rm_train records, each with four candidate answers."""
    import torch

    splits = tiny_splits(rm_train=rm_train)
    tok = tiny_tokenizer(splits)
    torch.manual_seed(0)
    models.save_atomic(models.build_policy(tok, 24, 1, 2, 48, 128), tok, root / "policy")
    models.save_atomic(tiny_classifier(tok), tok, root / "rm")
    records = splits["rm_train"][:8]
    return tok, records, [[r["answer"], " 7", " yes", " blue red"] for r in records]
