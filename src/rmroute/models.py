"""Policies, reward models and the tokenizer: build, load, save, sample and score.

One loading path serves both scales: a local `save_pretrained` directory (the testbed's tiny
models) and a Hugging Face model id (paper scale) both go through `from_pretrained`, safetensors
only, with remote code off unless the RM sheet allows it for that RM.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from rmroute.io import atomic_dir
from rmroute.seeding import derive_seed

SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>"}


def set_seed(seed: int) -> None:
    """Seed python, numpy and torch from one number."""
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_threads(threads: int) -> None:
    """Use exactly the cores Snakemake gave the job (CPU runs are deterministic per thread count)."""
    torch.set_num_threads(max(1, int(threads)))


def trainer_settings(use_cpu: bool, seed: int) -> dict:
    """Arguments every TRL trainer config here shares. On CPU, bf16 must be off explicitly
    (use_cpu alone turns bf16 autocast on); checkpoints are saved by the stages, not the trainer."""
    return dict(use_cpu=use_cpu, bf16=False, activation_checkpointing=False, save_strategy="no", report_to="none",
                dataset_num_proc=None, seed=seed, data_seed=seed)


def pick_device(want: str = "auto") -> torch.device:
    if want == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(want)


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on the testbed text, wrapped as a transformers tokenizer."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)
    fast.padding_side = "left"
    return fast


def load_tokenizer(source: str | os.PathLike) -> PreTrainedTokenizerFast:
    tok = AutoTokenizer.from_pretrained(str(source))
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def build_policy(tokenizer, hidden_size: int, layers: int, heads: int, intermediate_size: int, max_length: int) -> LlamaForCausalLM:
    """A small Llama-architecture causal LM initialised from config (the testbed policy)."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_length,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


def initial_policy(policy: dict, texts: list[str], device: str = "cpu"):
    """(model, tokenizer) before SFT: a tiny Llama and a tokenizer trained on `texts` when
    policy.source is `build`, else the causal LM and tokenizer at policy.source."""
    if policy["source"] == "build":
        tokenizer = train_tokenizer(texts, policy["tokenizer_vocab"])
        model = build_policy(tokenizer, policy["hidden_size"], policy["layers"], policy["heads"],
                             policy["intermediate_size"], policy["max_length"])
        return model, tokenizer
    model = load_policy(policy["source"], policy.get("dtype", "float32"), device).train()
    return model, load_tokenizer(policy["source"])


def _dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


ADAPTER_FILE = "adapter_config.json"  # marks a LoRA adapter checkpoint (`lora.save: adapter`)


def is_adapter(path: str | os.PathLike) -> bool:
    """Whether `path` is an adapter checkpoint (save: adapter) rather than full weights."""
    return (Path(path) / ADAPTER_FILE).is_file()


def adapter_base(path: str | os.PathLike) -> str:
    """The base model an adapter checkpoint was trained on (a directory or a hub id)."""
    from peft import PeftConfig

    return PeftConfig.from_pretrained(str(path)).base_model_name_or_path


def load_adapter_policy(path: str | os.PathLike, *, dtype: str = "float32", device: str = "auto", trainable: bool = False):
    """An adapter checkpoint on its base model: a PeftModel whose adapter trains (`trainable`), or,
    for sampling and scoring, the adapter merged into the weights (the same function, no adapter
    indirection on every forward pass). `rmroute.lora.load_policy` is this function; it lives here
    so that `load_policy` reads adapter checkpoints without importing `rmroute.lora`, which builds
    on this module."""
    from peft import PeftModel

    base = load_policy(adapter_base(path), dtype=dtype, device=device)
    model = PeftModel.from_pretrained(base, str(path), is_trainable=trainable)
    return model.train() if trainable else model.merge_and_unload().eval()


def load_policy(source: str | os.PathLike, dtype: str = "float32", device: str = "auto", trust_remote_code: bool = False):
    """A causal LM (the policy, or a generative RM): a local directory or a hub id (cached, offline).
    A LoRA adapter checkpoint (`lora.save: adapter`) comes back merged onto its base model."""
    if is_adapter(source):
        return load_adapter_policy(source, dtype=dtype, device=device)
    model = AutoModelForCausalLM.from_pretrained(
        str(source), dtype=_dtype(dtype), use_safetensors=True, trust_remote_code=trust_remote_code
    )
    return model.to(pick_device(device)).eval()


def load_reward_model(source: str | os.PathLike, dtype: str = "float32", device: str = "auto", trust_remote_code: bool = False,
                      new_layers: int = 0):
    """Any sequence-classification RM with one output: a local directory or a hub id (cached, offline).

    `new_layers` > 0 stacks that many decoder layers on top of the checkpoint's (block expansion,
    as in LLaMA Pro): each starts as the identity (its attention output and MLP down projections
    are zero), so the expanded model scores exactly as the checkpoint's backbone does at the start
    of training. Decoder models whose layers have `self_attn.o_proj` and `mlp.down_proj` (Llama,
    Qwen, Mistral) only."""
    kwargs = dict(num_labels=1, dtype=_dtype(dtype), use_safetensors=True, trust_remote_code=trust_remote_code)
    if new_layers:
        config = AutoConfig.from_pretrained(str(source), trust_remote_code=trust_remote_code)
        kept = config.num_hidden_layers
        config.num_hidden_layers, config.num_labels = kept + new_layers, 1
        kwargs["config"] = config
        del kwargs["num_labels"]  # with a config given, from_pretrained would pass it to the model class
    model = AutoModelForSequenceClassification.from_pretrained(str(source), **kwargs)
    if new_layers:
        layers = getattr(model, model.base_model_prefix).layers
        with torch.no_grad():
            for layer in layers[kept:]:
                try:
                    layer.self_attn.o_proj.weight.zero_()
                    layer.mlp.down_proj.weight.zero_()
                except AttributeError:
                    raise ValueError(f"rm_training.new_layers: {type(layer).__name__} of {str(source)!r} has no "
                                     "self_attn.o_proj / mlp.down_proj to start as the identity") from None
    return model.to(pick_device(device)).eval()


def save_atomic(model, tokenizer, out_dir: str | os.PathLike) -> None:
    """save_pretrained into a temp directory, then rename, so a killed job leaves no half checkpoint."""
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)


def _batches(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]


def length_sorted_batches(lengths: list[int], size: int) -> list[list[int]]:
    """Row indices in batches of rows of similar length (a stable sort by length), so a batch pads
    to little more than its own rows; callers put each row's result back at its index. Rows of
    equal length keep their order, so equal lengths give exactly the unsorted batches."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    return [order[i : i + size] for i in range(0, len(order), size)]


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: list[str],
    *,
    n: int = 1,
    temperature: float = 0.0,
    max_new_tokens: int = 24,
    seed: int = 0,
    batch_size: int = 64,
    progress: bool = False,
) -> list[list[str]]:
    """n responses per prompt; temperature 0 means greedy. Deterministic for a seed on CPU."""
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    out: list[list[str]] = []
    batches = list(_batches(prompts, batch_size))
    for b, batch in enumerate(tqdm(batches, desc="generate", disable=not progress)):
        torch.manual_seed(derive_seed(seed, b, scheme="generate_batch"))
        enc = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        kwargs = dict(max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_k=0, top_p=1.0, num_return_sequences=n)
        else:
            kwargs.update(do_sample=False, num_return_sequences=1)
        ids = model.generate(**enc, **kwargs)[:, enc["input_ids"].shape[1] :]
        texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
        k = n if temperature > 0 else 1
        for i in range(len(batch)):
            group = texts[i * k : (i + 1) * k]
            out.append(group if temperature > 0 else group * n)
    return out


@torch.no_grad()
def prompt_embeddings(model, tokenizer, prompts: list[str], kind: str = "last_hidden", batch_size: int = 64):
    """One vector per prompt from the policy: last-token final hidden state (LASeR paper) or
    the mean of the input-embedding vectors (LASeR released code)."""
    device = next(model.parameters()).device
    rows = []
    for batch in _batches(prompts, batch_size):
        enc = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        if kind == "mean_input_embedding":
            emb = model.get_input_embeddings()(enc["input_ids"])
            mask = enc["attention_mask"].unsqueeze(-1).to(emb.dtype)
            rows.append((emb * mask).sum(1) / mask.sum(1))
        elif kind == "last_hidden":
            hidden = model(**enc, output_hidden_states=True).hidden_states[-1]
            rows.append(hidden[:, -1, :])  # left padding: the last position is the last real token
        else:
            raise ValueError(f"context kind {kind!r}: expected 'last_hidden' or 'mean_input_embedding'")
    return torch.cat(rows).float().cpu().numpy()


@torch.no_grad()
def completion_logprobs(model, tokenizer, prompts: list[str], completions: list[str], batch_size: int = 64,
                        max_length: int | None = None):
    """Summed and mean log-prob of each completion (+EOS) given its prompt, tokenized as TRL does.

    Used for the DPO pair losses and as the reward of generative RMs (`loss: lm` in the pool sheet).
    With `max_length`, a longer sequence first loses prompt tokens from the left (one is kept, so
    the first completion token is still predicted), then completion tokens from the right; only the
    completion tokens kept are scored."""
    device = next(model.parameters()).device
    summed, mean = [0.0] * len(prompts), [0.0] * len(prompts)
    eos = tokenizer.eos_token
    all_rows = []
    for p, c in zip(prompts, completions):
        p_ids = tokenizer(p, add_special_tokens=False)["input_ids"]
        f = tokenizer(p + c + eos, add_special_tokens=False)["input_ids"]
        n_prompt = next((k for k, (a, b) in enumerate(zip(p_ids, f)) if a != b), min(len(p_ids), len(f)))
        if max_length is not None and len(f) > max_length:
            cut = min(len(f) - max_length, max(n_prompt - 1, 0))
            f, n_prompt = f[cut:][:max_length], n_prompt - cut
        all_rows.append((f, n_prompt))
    for index in length_sorted_batches([len(f) for f, _ in all_rows], batch_size):
        rows = [all_rows[j] for j in index]
        width = max(len(f) for f, _ in rows)
        ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        comp = torch.zeros_like(ids)
        for j, (f, n_prompt) in enumerate(rows):
            start = width - len(f)  # left padding, as the policy sees prompts at generation
            ids[j, start:] = torch.tensor(f)
            mask[j, start:] = 1
            comp[j, start + n_prompt :] = 1
        ids, mask, comp = ids.to(device), mask.to(device), comp.to(device)
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids).logits[:, :-1].float()
        token_logps = torch.gather(F.log_softmax(logits, -1), 2, ids[:, 1:, None]).squeeze(-1)
        cmask = comp[:, 1:].float()
        s = (token_logps * cmask).sum(-1)
        for j, total, avg in zip(index, s.cpu().tolist(), (s / cmask.sum(-1).clamp(min=1)).cpu().tolist()):
            summed[j], mean[j] = total, avg
    return np.asarray(summed, dtype=np.float32), np.asarray(mean, dtype=np.float32)


@torch.no_grad()
def rm_scores(model, tokenizer, prompts: list[str], responses: list[str], *, batch_size: int = 64, max_length: int = 256) -> list[float]:
    """Scalar reward for each (prompt, response); tokens of prompt and response are concatenated.
    Rows are batched by token length and the scores returned in the rows' order."""
    device = next(model.parameters()).device
    texts = [p + r for p, r in zip(prompts, responses)]
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_length, add_special_tokens=False)["input_ids"]]
    scores: list[float] = [0.0] * len(texts)
    for index in length_sorted_batches(lengths, batch_size):
        enc = tokenizer([texts[j] for j in index], return_tensors="pt", padding=True, truncation=True, max_length=max_length,
                        add_special_tokens=False).to(device)
        for j, score in zip(index, model(**enc).logits[:, 0].float().cpu().tolist()):
            scores[j] = score
    return scores
