"""The DPO update of one iteration (TRL's DPOTrainer) and the per-pair losses that feed the bandits.

Losses by recipe name:
* `dpo_nll`: sigmoid DPO + w·NLL on the chosen response (LASeR's loss for reasoning tasks; TRL's
  `loss_type=["sigmoid", "sft"]`, the "sft" term being the length-normalised chosen NLL);
* `dpo`: plain sigmoid DPO (BayesianRouter);
* `nll`: NLL on the chosen response alone, the control that says how much of a gain the
  preference term brings.
Log-probs are summed over the response, as in both papers.
"""

from __future__ import annotations

import tempfile

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset

from rmroute.models import completion_logprobs, trainer_settings

LOSSES = {"dpo_nll": (["sigmoid", "sft"], "both"), "dpo": (["sigmoid"], "dpo"), "nll": (["sft"], "nll")}


def loss_spec(recipe: dict) -> tuple[list[str], list[float]]:
    name = recipe["loss"]
    if name not in LOSSES:
        raise ValueError(f"recipe loss {name!r}: expected one of {sorted(LOSSES)}")
    types = LOSSES[name][0]
    weights = [1.0 if t == "sigmoid" else float(recipe.get("nll_weight", 1.0)) for t in types]
    return types, weights


def train_dpo(policy, reference, tokenizer, pairs: list[dict], recipe: dict, *, seed: int, use_cpu: bool = True):
    """One DPO pass over the iteration's pairs; returns the trainer's log history."""
    from trl import DPOConfig, DPOTrainer

    if not pairs:
        return []
    types, weights = loss_spec(recipe)
    data = Dataset.from_list([{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]} for p in pairs])
    with tempfile.TemporaryDirectory() as tmp:
        args = DPOConfig(
            output_dir=tmp, beta=float(recipe["beta"]), loss_type=types, loss_weights=weights,
            learning_rate=float(recipe["lr"]), num_train_epochs=float(recipe["epochs"]),
            per_device_train_batch_size=int(recipe["batch_size"]), lr_scheduler_type="constant",
            max_length=256, logging_steps=1, disable_dropout=True, **trainer_settings(use_cpu, seed),
        )
        trainer = DPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=data, processing_class=tokenizer)
        trainer.train()
        return list(trainer.state.log_history)


@torch.no_grad()
def pair_losses(policy, reference, tokenizer, pairs: list[dict], recipe: dict) -> np.ndarray:
    """Per-pair value of the recipe's training loss (the same terms and weights as train_dpo)."""
    if not pairs:
        return np.zeros(0)
    prompts = [p["prompt"] for p in pairs]
    pc, pc_mean = completion_logprobs(policy, tokenizer, prompts, [p["chosen"] for p in pairs])
    pr, _ = completion_logprobs(policy, tokenizer, prompts, [p["rejected"] for p in pairs])
    rc, _ = completion_logprobs(reference, tokenizer, prompts, [p["chosen"] for p in pairs])
    rr, _ = completion_logprobs(reference, tokenizer, prompts, [p["rejected"] for p in pairs])
    types, weights = loss_spec(recipe)
    total = np.zeros(len(pairs))
    for t, w in zip(types, weights):
        if t == "sigmoid":
            margin = float(recipe["beta"]) * ((pc - rc) - (pr - rr))
            total += w * -F.logsigmoid(torch.from_numpy(margin)).numpy()
        else:
            total += w * -pc_mean
    return total
