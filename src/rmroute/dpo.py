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

from rmroute.models import trainer_settings

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


def _completion_logps(model, tokenizer, prompts: list[str], completions: list[str], batch_size: int = 64):
    """Summed and mean log-prob of each completion (+EOS) given its prompt, tokenized as TRL does."""
    device = next(model.parameters()).device
    summed, mean = [], []
    eos = tokenizer.eos_token
    for i in range(0, len(prompts), batch_size):
        ps, cs = prompts[i : i + batch_size], completions[i : i + batch_size]
        p_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in ps]
        f_ids = [tokenizer(p + c + eos, add_special_tokens=False)["input_ids"] for p, c in zip(ps, cs)]
        width = max(len(f) for f in f_ids)
        ids = torch.full((len(f_ids), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        comp = torch.zeros_like(ids)
        for j, (p, f) in enumerate(zip(p_ids, f_ids)):
            start = width - len(f)  # left padding, as the policy sees prompts at generation
            ids[j, start:] = torch.tensor(f)
            mask[j, start:] = 1
            n_prompt = next((k for k, (a, b) in enumerate(zip(p, f)) if a != b), min(len(p), len(f)))
            comp[j, start + n_prompt :] = 1
        ids, mask, comp = ids.to(device), mask.to(device), comp.to(device)
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids).logits[:, :-1].float()
        token_logps = torch.gather(F.log_softmax(logits, -1), 2, ids[:, 1:, None]).squeeze(-1)
        cmask = comp[:, 1:].float()
        s = (token_logps * cmask).sum(-1)
        summed.append(s.cpu())
        mean.append((s / cmask.sum(-1).clamp(min=1)).cpu())
    return torch.cat(summed).numpy(), torch.cat(mean).numpy()


@torch.no_grad()
def pair_losses(policy, reference, tokenizer, pairs: list[dict], recipe: dict) -> np.ndarray:
    """Per-pair value of the recipe's training loss (the same terms and weights as train_dpo)."""
    if not pairs:
        return np.zeros(0)
    prompts = [p["prompt"] for p in pairs]
    pc, pc_mean = _completion_logps(policy, tokenizer, prompts, [p["chosen"] for p in pairs])
    pr, _ = _completion_logps(policy, tokenizer, prompts, [p["rejected"] for p in pairs])
    rc, _ = _completion_logps(reference, tokenizer, prompts, [p["chosen"] for p in pairs])
    rr, _ = _completion_logps(reference, tokenizer, prompts, [p["rejected"] for p in pairs])
    types, weights = loss_spec(recipe)
    total = np.zeros(len(pairs))
    for t, w in zip(types, weights):
        if t == "sigmoid":
            margin = float(recipe["beta"]) * ((pc - rc) - (pr - rr))
            total += w * -F.logsigmoid(torch.from_numpy(margin)).numpy()
        else:
            total += w * -pc_mean
    return total
