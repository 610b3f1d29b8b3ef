"""The config blocks `rm_training`, `sft`, `budget` and `evaluation` as typed settings, and what
each rule's jobs receive of them.

One dataclass per block, one field per key, with the key's help and its default (the schema's,
workflow/schemas/config.schema.yaml; tests/test_settings.py checks that they agree; a key the
schema requires has no default here). config/README.md documents every field.

A rule's params carry only the keys its job reads, so Snakemake's params trigger re-runs only the
jobs that use what changed: `RMTraining.job` gives one RM's training settings (its sheet row's
training columns and the `rm_training` keys of its kind, never `description`), `SFT.params`
leaves out the checkpoint-selection keys of `select: last`, `Budget.rollout` the keys a rollout
reads. Params are plain dicts (`params()`, rebuilt in the job with `from_params`): Snakemake
records a param by its repr only for builtin types, and silently leaves any other object, a
dataclass included, out of its change detection.

Nothing here imports torch: the workflow reads this module while it parses the config.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass, replace

from rmroute.testbed import DOMAINS

__all__ = ["Budget", "Evaluation", "GenerativeRMTraining", "RMJob", "RMTraining", "SFT", "SETTINGS_BLOCKS",
           "CLASSIFIER_LOSSES", "GENERATIVE_LOSSES", "RM_SCORING_COLUMNS", "settings_defaults"]

CLASSIFIER_LOSSES = ("bt", "bsr")  # sheet `loss` of a sequence-classifier RM
GENERATIVE_LOSSES = ("lm",)  # sheet `loss` of a generative (causal-LM) RM
# The sheet columns scoring reads (rmroute.stages.load_pool), plus the resolved `path`: the pool
# params of rm_behaviour and train_iteration. Training columns reach scoring through the trained
# RM itself (an input), `init` likewise, and `description` is a note for people.
RM_SCORING_COLUMNS = ("rm_id", "source", "loss", "chat_template", "max_length", "dtype", "batch_size",
                      "trust_remote_code", "path")


def _help(text: str, default):
    return field(default=default, metadata={"help": text})


def _required(text: str):
    """A key the schema requires: no default."""
    return field(metadata={"help": text})


def _from_block(cls, block: Mapping):
    """`cls` from a config block (nested blocks become their dataclass; lists become tuples)."""
    values = {}
    for f in fields(cls):
        if f.name not in block:
            continue
        value = block[f.name]
        sub = _nested(cls, f.name)
        if sub is not None and isinstance(value, Mapping):
            value = _from_block(sub, value)
        elif isinstance(value, list):
            value = tuple(value)
        elif isinstance(value, Mapping):
            value = dict(value)
        values[f.name] = value
    if unknown := set(block) - set(values):
        raise ValueError(f"{cls.__name__}: unknown key(s) {sorted(unknown)}; valid: {[f.name for f in fields(cls)]}")
    return cls(**values)


def _nested(cls, name: str):
    """The dataclass of field `name` of `cls`, or None."""
    return {"generative": GenerativeRMTraining}.get(name) if cls is RMTraining else None


def _plain(value):
    """Builtins only (tuples as lists, as the config gives them): a param Snakemake can compare."""
    if is_dataclass(value):
        return {k: _plain(v) for k, v in asdict(value).items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


# ---------------------------------------------------------------- rm_training


@dataclass(frozen=True, kw_only=True)
class GenerativeRMTraining:
    """`rm_training.generative`: training of the generative RMs (sheet rows with loss lm)."""

    steps: int = _help("fine-tuning steps of each generative RM (TRL SFTTrainer on the chosen responses)", 400)
    batch_size: int = _help("chosen responses per step", 64)
    lr: float = _help("learning rate, constant after a 5% warm-up", 0.002)


@dataclass(frozen=True, kw_only=True)
class RMTraining:
    """`rm_training`: the pairs the testbed RMs train on, and how each kind of RM trains."""

    samples_per_prompt: int = _help("SFT-policy samples per prompt from which one gold-labelled pair is built "
                                    "(rule rm_pairs)", 4)
    temperature: float = _help("sampling temperature of those samples (rule rm_pairs)", 1.0)
    steps: int = _required("classifier RM training steps (loss bt or bsr)")
    batch_size: int = _required("pairs per classifier RM training step")
    lr: float = _required("classifier RM learning rate (cosine schedule after a 5% warm-up)")
    bsr_coef: float = _help("lambda of BSR, lambda * (mean of all 2B rewards in the batch)^2 (loss bsr only)", 0.001)
    bsr_batch_scale: bool = _help("multiply lambda by the per-device batch size B, as the BSR authors' released "
                                  "trainer does; false = the formula as printed in the paper (loss bsr only)", True)
    new_layers: int = _help("identity-initialised decoder layers stacked on a classifier's init backbone", 0)
    freeze_init: bool = _help("train only a classifier's new layers, final norm and head", False)
    generative: GenerativeRMTraining = field(default_factory=GenerativeRMTraining,
                                             metadata={"help": "training of the generative RMs (loss lm)"})

    @classmethod
    def from_config(cls, block: Mapping) -> RMTraining:
        return _from_block(cls, block)

    def job(self, row: Mapping, loss: str | None = None) -> RMJob:
        """What training the RM of sheet row `row` reads: the row's training columns and this
        block's keys of its kind (`loss`, default the row's: the BSR comparison trains a row's data
        with either loss). A generative RM reads `generative`; a classifier `steps`, `batch_size`,
        `lr`, `new_layers` and `freeze_init`, plus `bsr_coef` and `bsr_batch_scale` with loss bsr."""
        loss = loss or row["loss"]
        data = dict(loss=loss, domain_mix=str(row["domain_mix"]), n_pairs=int(row["n_pairs"]),
                    label_noise=float(row["label_noise"]), max_length=int(row["max_length"]))
        if loss in GENERATIVE_LOSSES:
            lm = self.generative
            return RMJob(**data, steps=lm.steps, batch_size=lm.batch_size, lr=lm.lr)
        if loss not in CLASSIFIER_LOSSES:
            raise ValueError(f"rm_pool loss {loss!r}: expected one of {CLASSIFIER_LOSSES + GENERATIVE_LOSSES}")
        bsr = dict(bsr_coef=self.bsr_coef, bsr_batch_scale=self.bsr_batch_scale) if loss == "bsr" else {}
        return RMJob(**data, steps=self.steps, batch_size=self.batch_size, lr=self.lr, new_layers=self.new_layers,
                     freeze_init=self.freeze_init, **bsr)


@dataclass(frozen=True, kw_only=True)
class RMJob:
    """What one RM's training reads (rules train_rm and bsr_rm), built by `RMTraining.job`. A key
    that is not of the RM's kind is None and left out of `params()`."""

    loss: str = _required("the kind of RM: bt | bsr (classifier) | lm (generative); the sheet's loss column")
    domain_mix: str = _required("the sheet's domain_mix: domains of the training pairs and their weights")
    n_pairs: int = _required("the sheet's n_pairs: training pairs drawn with the mix")
    label_noise: float = _required("the sheet's label_noise: share of training pairs with chosen and rejected swapped")
    max_length: int = _required("the sheet's max_length: tokens of a training text (a classifier drops longer pairs, "
                                "a generative RM stops with an error), as scoring keeps that many")
    steps: int = _required("training steps: rm_training.steps, or rm_training.generative.steps for loss lm")
    batch_size: int = _required("pairs (classifier) or chosen responses (generative) per step")
    lr: float = _required("learning rate: rm_training.lr, or rm_training.generative.lr for loss lm")
    new_layers: int | None = _help("rm_training.new_layers (classifiers only)", None)
    freeze_init: bool | None = _help("rm_training.freeze_init (classifiers only)", None)
    bsr_coef: float | None = _help("rm_training.bsr_coef (loss bsr only)", None)
    bsr_batch_scale: bool | None = _help("rm_training.bsr_batch_scale (loss bsr only)", None)

    @property
    def generative(self) -> bool:
        return self.loss in GENERATIVE_LOSSES

    def params(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_params(cls, params: Mapping | RMJob) -> RMJob:
        return params if isinstance(params, RMJob) else cls(**params)


# ---------------------------------------------------------------- sft


@dataclass(frozen=True, kw_only=True)
class SFT:
    """`sft`: the supervised warm start of the policy (rules sft_policy and bsr_response_policy)."""

    steps: int = _required("SFT optimiser steps (0 = use the policy as given); with select band the most steps")
    batch_size: int = _required("examples per SFT step")
    lr: float = _required("peak SFT learning rate, constant after the warm-up")
    warmup_steps: int = _help("linear warm-up steps", 50)
    mix: dict = field(default_factory=lambda: {d: 1.0 for d in DOMAINS},
                      metadata={"help": "domain weights of the SFT examples (if omitted: equal weights)"})
    select: str = _help("band = keep the checkpoint whose worst domain lies deepest inside band, evaluated every "
                        "select_every steps on the select_split prompts; last = the checkpoint after steps", "last")
    select_every: int = _help("SFT steps between two evaluations (select band)", 50)
    select_split: str = _help("held-out prompts the band selection is evaluated on (select band; the job's input)",
                              "router_offline")
    band: tuple = _help("[lo, hi] greedy accuracy every domain should start routed DPO in (select band)", (0.25, 0.75))

    @classmethod
    def from_config(cls, block: Mapping) -> SFT:
        return _from_block(cls, block)

    def params(self) -> dict:
        """What the SFT job reads: `select_every` and `band` only with `select: band`; never
        `select_split`, which names the job's input file."""
        keys = ["steps", "batch_size", "lr", "warmup_steps", "mix", "select"]
        if self.select == "band":
            keys += ["select_every", "band"]
        return {k: _plain(getattr(self, k)) for k in keys}

    @classmethod
    def from_params(cls, params: Mapping | SFT) -> SFT:
        return params if isinstance(params, SFT) else _from_block(cls, params)

    def stopped_at(self, steps: int) -> SFT:
        """The same run stopped after `steps`, keeping its last checkpoint (BSR's response-OOD policy)."""
        return replace(self, steps=steps, select="last")


# ---------------------------------------------------------------- budget and evaluation


@dataclass(frozen=True, kw_only=True)
class Budget:
    """`budget`: the rollout and pair budget, identical for every method."""

    iterations: int = _required("routed-DPO iterations per method and seed")
    prompts_per_iteration: int = _required("prompts per iteration, an equal share per domain, disjoint across iterations")
    batch_prompts: int = _required("prompts per training batch: one optimiser step, one decision of a per-batch router")
    batch_order: str = _help("interleaved | blocked | mixed: how an iteration's prompts become training batches",
                             "interleaved")
    samples_per_prompt: int = _required("policy samples per prompt")
    pairs_per_prompt: int = _required("pairs per prompt; below samples_per_prompt with pair_rule top_vs_next")
    temperature: float = _required("sampling temperature of the rollouts")
    max_new_tokens: int = _required("longest sampled response: of the rollouts, the RM pairs' samples and the BSR groups")

    ROLLOUT_KEYS = ("prompts_per_iteration", "samples_per_prompt", "temperature", "max_new_tokens")

    @classmethod
    def from_config(cls, block: Mapping) -> Budget:
        return _from_block(cls, block)

    def rollout(self) -> dict:
        """The keys a rollout reads (rules rollout_sft and rollout)."""
        return {k: getattr(self, k) for k in self.ROLLOUT_KEYS}


@dataclass(frozen=True, kw_only=True)
class Evaluation:
    """`evaluation`: greedy evaluation on the test split, and on a validation split for choices between methods."""

    max_new_tokens: int = _help("longest greedy answer (evaluate_sft, evaluate; sft_policy with select band)", 24)
    validation_split: str = _help("held-out prompts every policy is also evaluated on; the best single RM is chosen "
                                  "on them", "router_offline")
    log_both_reward_timings: bool = _help("measure every routed batch's pair losses under both reward timings "
                                          "(train_iteration)", True)

    @classmethod
    def from_config(cls, block: Mapping) -> Evaluation:
        return _from_block(cls, block)


SETTINGS_BLOCKS = {"rm_training": RMTraining, "sft": SFT, "budget": Budget, "evaluation": Evaluation}


def settings_defaults(cls) -> dict:
    """{field: default} of the fields of `cls` that have one, as the config would spell them
    (tuples as lists, nested settings as dicts)."""
    out = {}
    for f in fields(cls):
        if f.default is not MISSING:
            out[f.name] = _plain(f.default)
        elif f.default_factory is not MISSING:
            out[f.name] = _plain(f.default_factory())
    return out
