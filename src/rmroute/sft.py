"""Supervised warm start of the policy with TRL's SFTTrainer on the testbed's SFT split.

The SFT targets are the records' demonstrations (gold answers, or the careless demonstrator's
shortcut for a share `testbed.careless_rate` of them). The length of training is a step count
(`sft.steps`, with `sft.select: band` choosing a checkpoint on held-out prompts), never a
wall-clock budget. The learning rate is constant after warm-up and batches are taken in stream
order, so the checkpoint at step S of a longer run is exactly the policy a run with
`sft.steps = S` trains.
"""

from __future__ import annotations

import random
import tempfile

from datasets import Dataset
from transformers import TrainerCallback

from rmroute.models import trainer_settings


def sft_mix(records: list[dict], mix: dict[str, float], n_examples: int, seed: int) -> list[dict]:
    """A stream of n_examples records drawn with the given domain weights (with replacement).

    Each pick draws its domain and then its record, so the first k picks are the same whatever
    n_examples is: a run of S steps sees exactly the first S batches of a longer sweep.
    """
    rng = random.Random(seed)
    by_domain: dict[str, list[dict]] = {}
    for r in records:
        by_domain.setdefault(r["domain"], []).append(r)
    missing = [d for d in mix if mix[d] > 0 and d not in by_domain]
    if missing:
        raise ValueError(f"sft.mix names domains {missing} that the SFT split does not contain")
    domains = sorted(d for d, w in mix.items() if w > 0)
    weights = [mix[d] for d in domains]
    return [rng.choice(by_domain[rng.choices(domains, weights=weights)[0]]) for _ in range(n_examples)]


class _PeriodicEval(TrainerCallback):
    def __init__(self, every: int, fn):
        self.every, self.fn = every, fn

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.every and state.global_step % self.every == 0:
            model.eval()
            self.fn(state.global_step, model)
            model.train()


def train_sft(model, tokenizer, records: list[dict], *, steps: int, batch_size: int, lr: float, warmup_steps: int,
              seed: int, mix: dict[str, float], threads: int = 1, eval_every: int = 0, eval_fn=None, use_cpu: bool = True,
              max_length: int = 256):
    """Fine-tune `model` in place on prompt->demonstration completions (loss on the completion only);
    a record longer than `max_length` tokens (config: policy.max_length) is an error, not truncated."""
    from trl import SFTConfig, SFTTrainer

    # Tokenize each distinct record once, then draw the weighted mix as indices into it.
    index = {r["id"]: i for i, r in enumerate(records)}
    picks = [index[r["id"]] for r in sft_mix(records, mix, steps * batch_size, seed)]
    # A record's "demonstration" (the testbed's careless share, see testbed.careless_rate) is what
    # the SFT data shows; without one the gold answer is the demonstration.
    data = Dataset.from_list([{"prompt": r["prompt"], "completion": r.get("demonstration", r["answer"])} for r in records])
    with tempfile.TemporaryDirectory() as tmp:
        args = SFTConfig(
            output_dir=tmp,
            max_steps=steps,
            per_device_train_batch_size=batch_size,
            learning_rate=lr,
            warmup_steps=warmup_steps,
            lr_scheduler_type="constant_with_warmup",
            train_sampling_strategy="sequential",
            weight_decay=0.0,
            max_length=max_length,
            completion_only_loss=True,
            logging_steps=max(1, steps // 20),
            disable_tqdm=False,
            **trainer_settings(use_cpu, seed),
        )
        callbacks = [_PeriodicEval(eval_every, eval_fn)] if eval_fn else []
        trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer, callbacks=callbacks)
        if len(trainer.train_dataset) != len(records):
            raise ValueError(f"SFT preprocessing dropped {len(records) - len(trainer.train_dataset)} records longer than "
                             f"max_length={max_length} tokens; raise policy.max_length (the policy) or the RM sheet's "
                             "max_length (a generative RM)")
        trainer.train_dataset = trainer.train_dataset.select(picks)
        trainer.train()
    return model
