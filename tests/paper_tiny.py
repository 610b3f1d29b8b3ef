"""Tiny stand-ins for everything `config/paper.yaml` names, so `.test/config/paper_tiny.yaml`
runs the paper-scale code paths on CPU without a download:

* models under Hugging Face ids (`tiny-org/...`), saved with save_pretrained into a Hugging Face
  hub cache (`models--org--name/snapshots/<commit>/`, `refs/main`) that `HF_HOME` points at, so
  they load exactly as a cached hub model does with HF_HUB_OFFLINE=1: a policy, an offline-router
  encoder, two sequence-classifier RMs and a generative RM;
* RM tokenizers that differ from the policy's (another vocabulary and other special tokens), one
  with a chat template;
* local dataset files shaped like GSM8K (JSON lines, `#### answer`), MMLU (Parquet, `choices` and
  an answer index) and StrategyQA (JSON lines, boolean answer), read through `datasets`' json and
  parquet builders by the config's `hf_data`.

    python tests/paper_tiny.py      # builds .test/hub; then
    HF_HOME=.test/hub snakemake --cores 2 --configfile .test/config/paper_tiny.yaml
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HUB_HOME = ROOT / ".test" / "hub"  # HF_HOME of the paper_tiny run (ignored by git)
DATA = HUB_HOME / "data"
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")
ENTITIES = ("Oslo", "Lima", "Cairo", "Perth", "Quito", "Dakar", "Hanoi", "Riga")


def gsm8k_rows(rng: random.Random, n: int) -> list[dict]:
    rows = []
    for i in range(n):
        a, b = rng.randint(2, 40), rng.randint(2, 40)
        rows.append({"question": f"Ann has {a} shells and finds {b} more on day {i}. How many shells does she have?",
                     "answer": f"She has {a} + {b} = <<{a}+{b}={a + b}>>{a + b} shells.\n#### {a + b}"})
    return rows


def mmlu_rows(rng: random.Random, n: int) -> list[dict]:
    rows = []
    for i in range(n):
        options = rng.sample(ENTITIES, 4)
        answer = rng.randrange(4)
        rows.append({"question": f"Question {i}: which city is listed as number {answer + 1}?", "subject": "geography",
                     "choices": options, "answer": answer})
    return rows


def strategyqa_rows(rng: random.Random, n: int) -> list[dict]:
    rows = []
    for i in range(n):
        a, b = rng.randint(1, 30), rng.randint(1, 30)
        rows.append({"qid": f"q{i:04d}", "question": f"Is {a} larger than {b} on trial {i}?", "answer": a > b,
                     "facts": [f"{a} and {b} are numbers."], "decomposition": [f"Compare {a} with {b}."]})
    return rows


def write_datasets(train: int = 40, test: int = 8, seed: int = 0) -> None:
    import pandas as pd

    DATA.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for name, make, suffix in (("gsm8k", gsm8k_rows, "jsonl"), ("mmlu", mmlu_rows, "parquet"),
                               ("strategyqa", strategyqa_rows, "jsonl")):
        for split, n in (("train", train), ("test", test)):
            rows = make(rng, n)
            path = DATA / f"{name}_{split}.{suffix}"
            if suffix == "parquet":
                pd.DataFrame(rows).to_parquet(path, index=False)
            else:
                path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def texts() -> list[str]:
    out = []
    for path in sorted(DATA.glob("*.jsonl")):
        out += [" ".join(str(v) for v in json.loads(line).values()) for line in path.read_text().splitlines()]
    return out + [" ".join(ENTITIES), "Q: A: yes no"]


def tokenizer(vocab: int, special: dict[str, str], chat_template: str | None = None):
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts(), trainer=trainers.BpeTrainer(vocab_size=vocab, special_tokens=list(special.values()),
                                                                 initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                                 show_progress=False))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **special)
    if chat_template:
        fast.chat_template = chat_template
    return fast


def save_to_hub_cache(repo_id: str, model, tok) -> Path:
    """save_pretrained into the hub cache layout from_pretrained reads offline."""
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    repo = HUB_HOME / "hub" / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    model.save_pretrained(snapshot)
    tok.save_pretrained(snapshot)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def build(force: bool = False) -> Path:
    """Every artefact under .test/hub; returns the HF_HOME to run with. Kept when present."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    done = HUB_HOME / ".complete"
    if done.exists() and not force:
        return HUB_HOME
    shutil.rmtree(HUB_HOME, ignore_errors=True)
    write_datasets()
    policy_tok = tokenizer(512, {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>"})
    rm_tok = tokenizer(384, {"pad_token": "<|pad|>", "eos_token": "<|end|>", "unk_token": "<|unk|>"}, CHAT_TEMPLATE)
    judge_tok = tokenizer(448, {"pad_token": "[PAD]", "eos_token": "[EOS]"}, CHAT_TEMPLATE)

    def config(tok, **extra):
        return LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                           num_key_value_heads=2, intermediate_size=64, max_position_embeddings=512,
                           pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                           bos_token_id=tok.bos_token_id, tie_word_embeddings=True, **extra)

    torch.manual_seed(0)
    save_to_hub_cache("tiny-org/tiny-policy", LlamaForCausalLM(config(policy_tok)), policy_tok)
    save_to_hub_cache("tiny-org/tiny-encoder", LlamaForCausalLM(config(policy_tok)), policy_tok)
    save_to_hub_cache("tiny-org/tiny-rm-chat", LlamaForSequenceClassification(config(rm_tok, num_labels=1)), rm_tok)
    save_to_hub_cache("tiny-org/tiny-rm-plain", LlamaForSequenceClassification(config(policy_tok, num_labels=1)), policy_tok)
    save_to_hub_cache("tiny-org/tiny-judge", LlamaForCausalLM(config(judge_tok)), judge_tok)
    done.write_text("ok\n")
    return HUB_HOME


if __name__ == "__main__":
    print(build(force="--force" in sys.argv))
