"""Routed DPO: TRL's DPOTrainer with the router inside the training loop.

Each optimiser step trains on one training batch, labelled just before the step by a
`RoutedLabeler` from the router's current state; the per-pair losses of that step, taken from the
same forward pass that made the gradient, are fed back to the router before the next batch is
labelled. TRL computes the loss; this module only reads its per-pair parts back.

Losses by recipe name:
* `dpo_nll`: sigmoid DPO + w·NLL on the chosen response (LASeR's loss for reasoning tasks; TRL's
  `loss_type=["sigmoid", "sft"]`, whose "sft" term is the chosen NLL pooled over the batch's tokens);
* `dpo`: plain sigmoid DPO (BayesianRouter);
* `nll`: NLL on the chosen response alone, the control that says how much of a gain the
  preference term brings.
Log-probs are summed over the response, as in both papers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import TrainerCallback
from trl import DPOConfig, DPOTrainer
from trl.trainer.dpo_trainer import DataCollatorForPreference

from rmroute.methods import Recipe
from rmroute.models import trainer_settings
from rmroute.rewards.r2m import R2MRewardModel

LOSSES = {"dpo_nll": ["sigmoid", "sft"], "dpo": ["sigmoid"], "nll": ["sft"]}
REWARD_TIMINGS = ("step", "after_update")


def loss_spec(recipe: Recipe) -> tuple[list[str], list[float]]:
    """TRL loss types and weights of a recipe."""
    if recipe.loss not in LOSSES:
        raise ValueError(f"recipe loss {recipe.loss!r}: expected one of {sorted(LOSSES)}")
    types = LOSSES[recipe.loss]
    return types, [1.0 if t == "sigmoid" else float(recipe.nll_weight) for t in types]


@dataclass
class RoutedDPOConfig(DPOConfig):
    """TRL's DPOConfig with the two recipe settings that only `RoutedDPOTrainer` reads, so that the
    config `routed_dpo_config` builds from a recipe carries all of it to the trainer."""

    epochs: float = field(default=1.0, metadata={"help": "passes over the routed batches; later passes replay the "
                                                         "labelled pairs (RoutedDPOTrainer)"})
    reward_timing: str = field(default="step", metadata={"help": "step | after_update: which loss rewards the router "
                                                                 "(RoutedDPOTrainer)"})


def routed_dpo_config(output_dir: str, recipe: Recipe, *, seed: int, max_length: int, use_cpu: bool = True,
                      **overrides) -> RoutedDPOConfig:
    """The DPOConfig of a routed run: the recipe's loss, β and learning rate (constant), one
    training batch per optimiser step, batches in the order they were routed, and the recipe's
    `epochs` and `reward_timing`, which `RoutedDPOTrainer` takes from it."""
    types, weights = loss_spec(recipe)
    settings = dict(
        output_dir=output_dir, beta=float(recipe.beta), loss_type=types, loss_weights=weights,
        learning_rate=float(recipe.lr), lr_scheduler_type="constant", max_length=max_length, logging_steps=1,
        disable_dropout=True, epochs=float(recipe.epochs), reward_timing=recipe.reward_timing,
        **trainer_settings(use_cpu, seed),
    )
    return RoutedDPOConfig(**{**settings, **overrides})


def pair_losses(policy_logps: torch.Tensor, ref_logps: torch.Tensor, completion_mask: torch.Tensor,
                loss_types: list[str], loss_weights: list[float], beta: float) -> dict[str, np.ndarray]:
    """Each pair's part of the loss TRL optimised, from one forward pass.

    `policy_logps`, `ref_logps`: (2B, T) per-token log-probs as TRL's fused LM head returns them
    (zero outside the completion; rows are [chosen..., rejected...]); `completion_mask`: (2B, T+1)
    as the collator builds it. Returns per pair `dpo` (sigmoid DPO loss), `nll` (the chosen
    response's mean token NLL), `tokens` (its completion tokens) and `total`, the pair's share of
    the batch loss: `w_dpo·dpo + w_nll·nll·tokens·B/ΣTokens`, so that the mean of `total` over the
    batch is the loss TRL computed (its NLL term pools tokens over the batch).
    """
    shift_mask = completion_mask[..., 1:].to(policy_logps.dtype)
    seq_len = shift_mask.size(1)
    policy_logps, ref_logps = policy_logps[:, -seq_len:].double(), ref_logps[:, -seq_len:].double()
    chosen, rejected = policy_logps.sum(1).chunk(2)
    ref_chosen, ref_rejected = ref_logps.sum(1).chunk(2)
    dpo = -F.logsigmoid(beta * ((chosen - ref_chosen) - (rejected - ref_rejected)))
    chosen_mask = shift_mask.double().chunk(2)[0]
    tokens = chosen_mask.sum(1)
    nll_sum = -(policy_logps.chunk(2)[0] * chosen_mask).sum(1)
    total = torch.zeros_like(dpo)
    for loss_type, weight in zip(loss_types, loss_weights, strict=True):
        if loss_type == "sigmoid":
            total += weight * dpo
        elif loss_type == "sft":
            total += weight * nll_sum * len(nll_sum) / tokens.sum().clamp(min=1)
        else:
            raise ValueError(f"per-pair losses of TRL loss type {loss_type!r} are not decomposed; use sigmoid or sft")
    as_numpy = lambda t: t.detach().cpu().numpy()  # noqa: E731
    return {"dpo": as_numpy(dpo), "nll": as_numpy(nll_sum / tokens.clamp(min=1)), "tokens": as_numpy(tokens),
            "total": as_numpy(total)}


def prepare_text_pairs(pairs: list[dict], processing_class, eos_token: str, max_length: int | None,
                       truncation_mode: str, cache: dict[str, list[int]] | None = None) -> tuple[list[dict], list[int]]:
    """Plain-text preference pairs as TRL's DPOTrainer prepares them (`_prepare_dataset`): EOS
    appended to each completion, prompt and prompt + completion tokenised with TRL's `_tokenize`,
    the completion starting where the two diverge, and, under keep_start truncation, a pair whose
    prompt alone fills `max_length` dropped. Returns (examples with prompt_ids / chosen_ids /
    rejected_ids, the index of each kept pair). `cache` keeps token ids of texts seen before."""
    from trl.data_utils import _tokenize, common_prefix_length

    cache = {} if cache is None else cache

    def ids(text: str) -> list[int]:
        if text not in cache:
            cache[text] = _tokenize(processing_class, text)["input_ids"]
        return cache[text]

    examples, kept = [], []
    for i, pair in enumerate(pairs):
        chosen, rejected = (c if c.endswith(eos_token) else c + eos_token for c in (pair["chosen"], pair["rejected"]))
        prompt_ids, with_chosen, with_rejected = ids(pair["prompt"]), ids(pair["prompt"] + chosen), ids(pair["prompt"] + rejected)
        n = min(common_prefix_length(prompt_ids, with_chosen), common_prefix_length(prompt_ids, with_rejected))
        if max_length is not None and truncation_mode == "keep_start" and n >= max_length:
            continue
        examples.append({"prompt_ids": prompt_ids[:n], "chosen_ids": with_chosen[n:], "rejected_ids": with_rejected[n:]})
        kept.append(i)
    return examples, kept


def _slot_collator(examples: list[dict]) -> dict:
    return {"slot": torch.tensor([e["slot"] for e in examples])}


class _RouterFeedback(TrainerCallback):
    """After each optimiser step (and before the next batch is routed), the step's losses go back
    to the router and the pool's R2M members train on the step's groups."""

    def __init__(self, trainer: RoutedDPOTrainer):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer.feed_back()


class RoutedDPOTrainer(DPOTrainer):
    """DPOTrainer whose training batches are routed one at a time by `labeler`.

    Args:
        labeler: a `rmroute.online.RoutedLabeler` (router, normaliser, RM pool).
        batches: the iteration's training batches, each a list of prompt groups
            (`{"id", "prompt", "responses", ...}`), in training order.
        epochs: passes over the batches. The first pass routes each batch and feeds its losses
            back; later passes (a fraction allowed) re-train on the pairs already labelled, in a
            seeded order, without routing, bandit updates or R2M updates. Unset (None): `args.epochs`,
            the recipe's with `routed_dpo_config`, else 1.
        reward_timing: `step` (the papers'): the bandit reward comes from the loss of the step
            that trained the pairs; `after_update`: from the pairs' loss re-measured right after
            that step (one extra forward pass of the policy per batch). Unset (None):
            `args.reward_timing`, the recipe's with `routed_dpo_config`, else `step`.
        log_both_timings: measure both timings on every routed batch and log the one the router
            does not use as `loss_<timing>` / `bandit_reward_raw_<timing>` (for the
            reward-validity table; one extra forward pass per batch under `step`).
        Everything else is passed to DPOTrainer (model, ref_model, args, processing_class, ...);
        `train_dataset` and `data_collator` are built here.

    R2M members of the pool (`rmroute.rewards.r2m.R2MRewardModel`) get their optimisation phase
    after every routed step, as the paper's RM follows every policy step: each trains on the
    step's groups it scored whole, with the hidden states of the policy that step updated, so the
    next batch is scored with its new weights and ω(t) (a no-op under `update_every: iteration`).

    After `train()`, `step_log` holds one dict per optimiser step (batch, routed, pairs, loss,
    and `loss_check`, the gap between TRL's loss and the mean of the per-pair losses).
    """

    def __init__(self, *, labeler, batches: list[list[dict]], epochs: float | None = None, reward_timing: str | None = None,
                 log_both_timings: bool = False, **kwargs):
        args = kwargs["args"]
        # An argument given here wins; otherwise the config's (the recipe's, from routed_dpo_config).
        epochs = getattr(args, "epochs", 1.0) if epochs is None else epochs
        reward_timing = getattr(args, "reward_timing", "step") if reward_timing is None else reward_timing
        if reward_timing not in REWARD_TIMINGS:
            raise ValueError(f"reward_timing {reward_timing!r}: expected one of {REWARD_TIMINGS}")
        if epochs < 1:
            raise ValueError(f"epochs must be at least 1 (every batch is routed once), got {epochs}")
        if args.gradient_accumulation_steps != 1:
            raise ValueError("RoutedDPOTrainer trains one routed batch per optimiser step: gradient_accumulation_steps must be 1")
        self.labeler, self.batches, self.reward_timing = labeler, batches, reward_timing
        self.log_both_timings = log_both_timings
        n = len(batches)
        replay_rng = random.Random(args.seed)
        replays = []
        while len(replays) < round((epochs - 1) * n):
            replays += replay_rng.sample(range(n), n)
        self.schedule = [(b, True) for b in range(n)] + [(b, False) for b in replays[: round((epochs - 1) * n)]]
        # One slot per optimiser step; the slot names the batch, which is routed only when its step
        # comes (the dataloader fetches slots ahead, never pairs).
        args.per_device_train_batch_size = 1
        args.max_steps = len(self.schedule)
        args.remove_unused_columns = False
        args.train_sampling_strategy = "sequential"
        kwargs.update(train_dataset=Dataset.from_dict({"slot": list(range(len(self.schedule)))}),
                      data_collator=_slot_collator)
        super().__init__(**kwargs)
        self.pair_collator = DataCollatorForPreference(pad_token_id=self._tokenizer.pad_token_id, max_length=args.max_length,
                                                       truncation_mode=args.truncation_mode,
                                                       pad_to_multiple_of=args.pad_to_multiple_of)
        self.add_callback(_RouterFeedback(self))
        self.labelled: dict[int, list[dict]] = {}
        self._token_ids: dict[str, list[int]] = {}  # text -> token ids, shared by every step
        self.step_log: list[dict] = []
        self._current: dict | None = None

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        # The slot dataset is not text; a routed batch's pairs are prepared by TRL as usual.
        if "slot" in dataset.column_names:
            return dataset
        return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

    def _tokenize(self, pairs: list[dict]) -> tuple[dict | None, np.ndarray]:
        """TRL's preprocessing and collation of one batch's pairs; (inputs, index of each kept pair).

        Text pairs take `prepare_text_pairs`, TRL's tokenisation of a plain-text preference row
        without a `datasets.map` per step (which cost about a quarter of a tiny model's step; a
        test holds both to the same token ids); chat-formatted pairs go through TRL's own dataset
        preparation."""
        if not pairs:
            return None, np.zeros(0, dtype=np.int64)
        if all(isinstance(p["prompt"], str) for p in pairs):
            examples, kept = prepare_text_pairs(pairs, self.processing_class, self._tokenizer.eos_token, self.args.max_length,
                                                self.args.truncation_mode, self._token_ids)
        else:
            rows = [{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"], "index": i} for i, p in enumerate(pairs)]
            prepared = self._prepare_dataset(Dataset.from_list(rows), self.processing_class, self.args, "routed batch")
            kept = list(prepared["index"])
            examples = [{k: row[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for row in prepared]
        if not kept:
            return None, np.zeros(0, dtype=np.int64)
        return self.pair_collator(examples), np.asarray(kept, dtype=np.int64)

    def training_step(self, model, inputs, num_items_in_batch=None):
        slot = int(inputs["slot"][0])
        batch, routed = self.schedule[slot]
        if routed:
            pairs = self.labeler.label(self.batches[batch], step=self.state.global_step)
            self.labelled[batch] = pairs
        else:
            pairs = self.labelled[batch]
        collated, kept = self._tokenize(pairs)
        self._current = {"batch": batch, "routed": routed, "pairs": pairs, "inputs": collated, "kept": kept,
                         "losses": None, "ref_logps": None, "step": self.state.global_step}
        if collated is None:
            # Nothing to train on: no backward, so every gradient stays None and the optimiser
            # leaves the weights (and its moments) untouched.
            self.step_log.append({"step": self.state.global_step, "batch": batch, "routed": routed, "pairs": 0,
                                  "loss": float("nan"), "loss_check": 0.0})
            return torch.zeros((), device=self.args.device)
        return super().training_step(model, collated, num_items_in_batch)

    def _compute_loss(self, model, inputs, return_outputs):
        if not self.model.training or self._current is None:
            return super()._compute_loss(model, inputs, return_outputs)
        captured: list[tuple[bool, torch.Tensor]] = []

        def keep(module, args, kwargs, output):
            captured.append((torch.is_grad_enabled(), output.log_probs.detach()))

        # The policy forward runs with gradients, the reference forward (a separate model, or the
        # policy with its adapter disabled) without: that tells the two captures apart.
        modules = {id(m): m for m in (model, self.ref_model) if m is not None}
        handles = [m.register_forward_hook(keep, with_kwargs=True) for m in modules.values()]
        try:
            result = super()._compute_loss(model, inputs, return_outputs)
        finally:
            for handle in handles:
                handle.remove()
        loss = result[0] if return_outputs else result
        policy = [lp for grad, lp in captured if grad]
        reference = [lp for grad, lp in captured if not grad]
        if len(policy) != 1 or len(reference) != 1:
            raise RuntimeError(f"expected one policy and one reference forward pass, saw {len(policy)} and {len(reference)}")
        parts = pair_losses(policy[0], reference[0], inputs["completion_mask"], self.loss_types, self.loss_weights, self.beta)
        check = abs(float(parts["total"].mean()) - float(loss.detach()))
        # TRL reduces in the log-probs' dtype; in bf16 or fp16 its sums round far more than ours.
        tolerance = 1e-4 if policy[0].dtype in (torch.float32, torch.float64) else 2e-2
        if check > tolerance * max(1.0, abs(float(loss.detach()))):
            raise RuntimeError(f"per-pair losses average {parts['total'].mean():.6f}, but TRL optimised {float(loss):.6f}; "
                               "the decomposition no longer matches TRL's loss")
        self._current.update(losses=parts, ref_logps=reference[0])
        self.step_log.append({"step": self.state.global_step, "batch": self._current["batch"], "routed": self._current["routed"],
                              "pairs": len(self._current["kept"]), "loss": float(loss.detach()), "loss_check": check})
        return result

    @torch.no_grad()
    def _remeasure(self, current: dict) -> dict[str, np.ndarray]:
        """The batch's per-pair losses under the policy just updated (reward_timing: after_update)."""
        inputs = self._prepare_inputs(current["inputs"])
        model_kwargs = {k: v for k, v in inputs.items() if k not in ("completion_mask", "ref_chosen_logps", "ref_rejected_logps")}
        labels = inputs["input_ids"].masked_fill(inputs["completion_mask"] == 0, -100)
        logps = self.model(**model_kwargs, use_cache=False, labels=labels, fused_lm_head=True).log_probs
        return pair_losses(logps, current["ref_logps"], inputs["completion_mask"], self.loss_types, self.loss_weights, self.beta)

    def feed_back(self) -> None:
        """The last routed batch's per-pair losses to the labeler (router update), then the R2M
        members' update on its groups. A replay labels nothing, so it gives R2M no new own
        scores to learn from and updates neither."""
        current, self._current = self._current, None
        if current is None or not current["routed"]:
            return
        timings = {"step": np.full(len(current["pairs"]), np.nan)}
        if self.reward_timing == "after_update" or self.log_both_timings:
            timings["after_update"] = np.full(len(current["pairs"]), np.nan)
        if current["inputs"] is not None:
            timings["step"][current["kept"]] = current["losses"]["total"]
            if "after_update" in timings:
                timings["after_update"][current["kept"]] = self._remeasure(current)["total"]
        primary = timings.pop(self.reward_timing)
        self.labeler.feedback(primary, also=timings)
        for rm in self.labeler.pool:
            if isinstance(rm, R2MRewardModel):
                rm.after_step(self.model, self._tokenizer, self.batches[current["batch"]], current["step"])
