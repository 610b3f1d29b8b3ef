"""LoRA for the policy's DPO updates, through `peft`: the adapter config from the `lora:` block,
the policy wrapped (a fresh adapter, or the previous iteration's adapter trained on), the DPO
reference, and checkpoints saved as an adapter or merged, both reloadable with `load_policy`.

Checkpoints: `save: adapter` writes only the adapter (`adapter_config.json` names the base model,
the SFT policy, and every iteration trains the same adapter on); `save: merged` folds the adapter
into the weights and writes a plain checkpoint (the next iteration puts a fresh adapter on it).

References (TRL's DPOTrainer): when the reference is the policy entering the iteration (recipe
`reference: previous`, and `sft` at iteration 1), the trainer gets `ref_model=None` and keeps a
frozen copy of the adapter the policy entered with (TRL's "ref" adapter), so no second model is
loaded; a fresh adapter makes that copy exactly the base model. A reference the policy did not
enter with (`sft` from iteration 2 on) is loaded from its checkpoint and frozen.
"""

from __future__ import annotations

import os
from pathlib import Path

from rmroute import models
from rmroute.models import ADAPTER_FILE, adapter_base, is_adapter  # noqa: F401 (this module's API; models reads them too)

REFERENCE_ADAPTER = "ref"  # the name TRL's DPOTrainer gives its frozen copy of the policy's adapter
DEFAULTS = {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"], "save": "adapter"}
SAVE_MODES = ("adapter", "merged")


def settings(block: dict) -> dict:
    """The `lora:` block with its defaults filled in."""
    out = {**DEFAULTS, **block}
    if out["save"] not in SAVE_MODES:
        raise ValueError(f"lora.save: {out['save']!r}; expected one of {SAVE_MODES}")
    return out


def lora_config(block: dict):
    """A peft LoraConfig for a causal LM from the `lora:` block."""
    from peft import LoraConfig

    s = settings(block)
    return LoraConfig(r=int(s["r"]), lora_alpha=float(s["alpha"]), lora_dropout=float(s["dropout"]),
                      target_modules=list(s["target_modules"]), bias="none", task_type="CAUSAL_LM")


def load_policy(path: str | os.PathLike, *, dtype: str = "float32", device: str = "auto", trainable: bool = False):
    """An adapter checkpoint on its base model: a PeftModel whose adapter trains (`trainable`), or,
    for sampling and scoring, the adapter merged into the weights (`models.load_adapter_policy`;
    `models.load_policy` reads adapter checkpoints through it without importing this module)."""
    return models.load_adapter_policy(path, dtype=dtype, device=device, trainable=trainable)


def wrap_policy(policy_dir: str | os.PathLike, block: dict, *, dtype: str = "float32", device: str = "auto"):
    """The policy entering a DPO iteration, with a trainable adapter: the adapter of an adapter
    checkpoint trained on, or a fresh one on full weights. A saved adapter whose rank, alpha or
    target modules differ from the block is refused (the block changed between iterations)."""
    from peft import get_peft_model

    wanted = lora_config(block)
    if is_adapter(policy_dir):
        policy = load_policy(policy_dir, dtype=dtype, device=device, trainable=True)
        saved = policy.peft_config["default"]
        for key, name in (("r", "r"), ("lora_alpha", "alpha"), ("target_modules", "target_modules")):
            have, want = getattr(saved, key), getattr(wanted, key)
            if (set(have) if key == "target_modules" else have) != (set(want) if key == "target_modules" else want):
                raise ValueError(f"lora.{name}: {want!r}, but the adapter at {str(policy_dir)!r} was trained with {have!r}")
        return policy
    base = models.load_policy(policy_dir, dtype=dtype, device=device)
    return get_peft_model(base, wanted).train()


def dpo_reference(policy_dir: str | os.PathLike, reference_dir: str | os.PathLike, *, dtype: str = "float32",
                  device: str = "auto"):
    """The `ref_model` for TRL's DPOTrainer with a LoRA policy: None when the reference is the
    policy entering the iteration (TRL then freezes a copy of the entering adapter), else the
    reference checkpoint (full or adapter), loaded for inference."""
    if Path(policy_dir).resolve() == Path(reference_dir).resolve():
        return None
    return models.load_policy(reference_dir, dtype=dtype, device=device)


def save_policy(policy, tokenizer, out_dir: str | os.PathLike, save: str):
    """Write the trained policy through save_pretrained into a temporary directory renamed into
    place: the adapter alone (`adapter`) or the adapter merged into the weights (`merged`). The
    trainer's reference adapter is dropped first. Returns the model that was saved (merging
    replaces the PeftModel by its merged base model)."""
    if save not in SAVE_MODES:
        raise ValueError(f"lora.save: {save!r}; expected one of {SAVE_MODES}")
    if REFERENCE_ADAPTER in policy.peft_config:
        policy.delete_adapter(REFERENCE_ADAPTER)
    model = policy.merge_and_unload() if save == "merged" else policy
    models.save_atomic(model, tokenizer, out_dir)
    return model


def trainable_fraction(model) -> float:
    """Share of the parameters that train (for the log: about 0.1-1% with LoRA)."""
    total = sum(p.numel() for p in model.parameters())
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trained / max(total, 1)
