"""Routed rewards inside online RL: one RM per prompt group (or per batch) for TRL's GRPO and RLOO.

TRL's `GRPOTrainer` and `RLOOTrainer` score every completion with every function in
`reward_funcs` and aggregate. `RoutedReward` is one such function that routes instead: for each
prompt group (the `num_generations` completions of one prompt), or for the whole batch with a
per-batch router, the router picks one RM from its current state and only that RM scores the
group. After the optimiser step that trained on those completions, `RoutedReward.callback` (a
`transformers.TrainerCallback`) turns the step into a bandit reward per decision, the method's
normaliser rescales it and the router is updated, before the next batch is generated and routed.

    reward = RoutedReward(pool, method, router, make_normaliser("quantile"), signal="prior_rank")
    trainer = GRPOTrainer(model, reward_funcs=[reward], args=config, train_dataset=prompts,
                          callbacks=[reward.callback])

The bandit reward (`signal`) is a design decision, because LASeR's rule (minus the training
loss) does not carry over literally (docs/online_rl.md measures each against gold):

* `loss`: LASeR's rule applied literally, minus the group's policy-gradient loss in the step,
  computed from TRL's advantage and loss formulas (`step_loss`; a test holds it to TRL's logged
  loss). With one update per generation the importance ratio is 1, so a completion's per-token
  loss is its advantage, negated: group-centred advantages make the group's loss measure how
  completion length co-varies with the RM's scores (loss types `dapo`, `bnpo`, `dr_grpo`), and
  it is exactly zero for `grpo`'s per-sequence mean and for RLOO.
* `logp_rank`: whether the step's update agrees with the RM: the rank correlation, within each
  group, between the RM's scores and the change of the completions' mean token log-probability
  over the step. Partly circular: the step itself raises the log-probability of the completions
  this RM scored high.
* `prior_rank`: LASeR's idea carried over rather than its formula (its -loss is low where the
  chosen response is already likely under the policy): the rank correlation, within each group,
  between the RM's scores and the completions' mean token log-probability under the policy that
  sampled them. It is delivered after the step like the others, and reads no gold.

Every decision is logged in the DPO path's schema (`rows`): arm, `router_updates`, `step`, raw
and normalised bandit reward, RM calls, seconds; with `log_all_signals` the other signals' raw
rewards too (`bandit_reward_raw_<signal>`, analysis only), for `report.reward_validity`.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from rmroute.gold import ranking_counts
from rmroute.online import MIXED_DOMAIN, RouterLearner, ScoreCache, _top_gap

SIGNALS = ("loss", "logp_rank", "prior_rank")
TRAINERS = ("grpo", "rloo")
LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")  # GRPO loss types whose policy-gradient part is -advantage per token


def trainer_kind(args) -> str:
    """`grpo` or `rloo` from a TRL config (`GRPOConfig`, `RLOOConfig` or a subclass)."""
    names = [c.__name__ for c in type(args).__mro__]
    if "GRPOConfig" in names:
        return "grpo"
    if "RLOOConfig" in names:
        return "rloo"
    raise TypeError(f"RoutedReward runs inside TRL's GRPOTrainer or RLOOTrainer, not with {type(args).__name__}")


def advantages(rewards, num_generations: int, trainer: str, *, scale_rewards: str = "group",
               normalize_advantages: bool = False) -> np.ndarray:
    """The advantages TRL computes from one reward function's rewards (weight 1), in generation
    order (groups of `num_generations` consecutive completions): GRPO's group-centred rewards
    scaled by the group's (`group`) or the batch's (`batch`) standard deviation or not at all
    (`none`); RLOO's reward minus the mean of the group's other rewards, optionally standardised
    over the batch. Standard deviations are unbiased, with TRL's 1e-4 added."""
    r = np.asarray(rewards, dtype=np.float64)
    if r.size % num_generations:
        raise ValueError(f"{r.size} rewards are not whole groups of num_generations={num_generations}")
    grouped = r.reshape(-1, num_generations)
    if trainer == "grpo":
        centred = (grouped - grouped.mean(1, keepdims=True)).reshape(-1)
        if scale_rewards == "group":
            return centred / (np.repeat(grouped.std(1, ddof=1), num_generations) + 1e-4)
        if scale_rewards == "batch":
            return centred / (r.std(ddof=1) + 1e-4)
        if scale_rewards == "none":
            return centred
        raise ValueError(f"scale_rewards {scale_rewards!r}: expected group, batch or none")
    if trainer == "rloo":
        baseline = (grouped.sum(1, keepdims=True) - grouped) / (num_generations - 1)
        a = (grouped - baseline).reshape(-1)
        return (a - a.mean()) / (a.std(ddof=1) + 1e-4) if normalize_advantages else a
    raise ValueError(f"trainer {trainer!r}: expected one of {TRAINERS}")


def step_loss(adv, lengths, trainer: str, loss_type: str = "dapo", max_completion_length: int | None = None) -> float:
    """The policy-gradient loss of one optimiser step on these completions (advantages `adv`,
    completion lengths in tokens), with one update per generation (importance ratio 1, so no
    clipping): TRL's `policy_loss`. Applied to one group's completions, it is the loss the step
    would have had on that group alone."""
    a, n = np.asarray(adv, dtype=np.float64), np.asarray(lengths, dtype=np.float64)
    if trainer == "rloo" or loss_type == "grpo":
        return float(-a.mean())  # RLOO's per-sequence loss; GRPO's per-sequence token mean
    if loss_type in ("dapo", "bnpo"):
        return float(-(a * n).sum() / max(n.sum(), 1.0))
    if loss_type == "dr_grpo":
        if not max_completion_length:
            raise ValueError("loss_type dr_grpo needs max_completion_length")
        return float(-(a * n).sum() / (len(a) * max_completion_length))
    raise ValueError(f"loss_type {loss_type!r}: the loss signal supports {LOSS_TYPES}")


def spearman(a, b) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN for fewer than 2 points or a constant side."""
    from scipy import stats

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


def completion_logps(model, tokenizer, prompts: list[str], completion_ids: list[list[int]], batch_size: int = 64) -> np.ndarray:
    """Each completion's mean token log-probability given its prompt under `model` (no gradient);
    the prompt is tokenised as TRL's online trainers do (no special tokens added)."""
    import torch

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = np.zeros(len(prompts))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(prompts), batch_size):
                ps = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts[start : start + batch_size]]
                cs = [list(c) for c in completion_ids[start : start + batch_size]]
                seqs = [p + c for p, c in zip(ps, cs)]
                width = max(len(s) for s in seqs)
                ids = torch.full((len(seqs), width), pad, dtype=torch.long)
                mask = torch.zeros((len(seqs), width), dtype=torch.long)
                for i, s in enumerate(seqs):
                    ids[i, : len(s)] = torch.tensor(s)
                    mask[i, : len(s)] = 1
                logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
                logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:].to(device).unsqueeze(-1)).squeeze(-1)
                for i, (p, c) in enumerate(zip(ps, cs)):
                    span = logp[i, len(p) - 1 : len(p) - 1 + len(c)]
                    out[start + i] = float(span.mean()) if len(c) else float("nan")
    finally:
        model.train(was_training)
    return out


def _texts(items) -> list[str]:
    """TRL's prompts or completions as text: plain strings, or the last message's content of
    conversational ones."""
    return [item if isinstance(item, str) else item[-1]["content"] for item in items]


class RoutedReward(RouterLearner):
    """A reward function for TRL's GRPOTrainer / RLOOTrainer that routes each prompt group (or
    batch) to one RM of `pool` and learns from the training step which RM to trust.

    Args:
        pool: reward models, each with `rm_id` and `score(prompts, responses) -> list[float]`
            (e.g. `rmroute.rewards.pool.RewardModel`); the list order is the arm order.
        method: the resolved method (`rmroute.methods.Method`): router, granularity (`batch` or
            `query`; a query is one prompt group), score noise.
        router: the method's router; None builds it for the routers that read every RM's scores
            (ensembles, oracle: every RM scores every completion).
        normaliser: rescales raw bandit rewards (`rmroute.routers.make_normaliser`).
        signal: the bandit reward, one of `SIGNALS` (see the module's docstring).
        log_all_signals: also compute and log the other signals' raw rewards (analysis only; the
            log-probability signals cost one forward pass of the policy each).
        prompt_context: `prompts -> (n, d)` contexts for routers that declare `context = "prompt"`
            (LinUCB), from the current policy.
        gold: `(prompts, completions, **columns) -> scores`, for the decision log's gold agreement
            and the oracle only (analysis: no other router reads it).
        seed: seeds score noise.
        updates: router updates already received (carried over from an earlier run).

    TRL passes the prompts and completions of a generation batch, each prompt's `num_generations`
    completions consecutive, with the dataset's other columns (`id` and `domain` are logged when
    present). Decisions are made only after `callback` has fed the last step back.
    """

    __name__ = "routed_reward"  # TRL names a reward function's logs by its __name__

    def __init__(self, pool: list, method, router=None, normaliser=None, *, signal: str = "prior_rank",
                 log_all_signals: bool = False, prompt_context: Callable[[list[str]], np.ndarray] | None = None,
                 gold: Callable[..., list[float]] | None = None, seed: int = 0, updates: int = 0):
        from transformers import TrainerCallback

        from rmroute.methods import build_router

        if signal not in SIGNALS:
            raise ValueError(f"signal {signal!r}: expected one of {SIGNALS}")
        if method.granularity not in ("batch", "query"):
            raise ValueError(f"method {method.name!r}: granularity {method.granularity!r} has no meaning for online RL "
                             "(a decision covers a prompt group or a batch); use batch or query")
        declared = method.router_class
        if router is None and declared.scores_every_rm:
            router = build_router(method, len(pool), 1, seed)
        if router is None:
            raise ValueError(f"method {method.name!r} (router {method.router!r}) needs a router object")
        if declared.context == "prompt" and prompt_context is None:
            raise ValueError(f"method {method.name!r}: router {method.router!r} routes on prompt contexts and needs prompt_context")
        if declared.needs_gold and gold is None:
            raise ValueError(f"method {method.name!r}: the oracle needs gold")
        self.pool, self.method, self.router, self.normaliser = pool, method, router, normaliser
        self.declared, self.signal, self.log_all_signals = declared, signal, log_all_signals
        self.prompt_context, self.gold, self.noise_seed = prompt_context, gold, seed
        self.updates = int(updates)
        self.rows: list[dict] = []
        self.events: list[tuple[str, int]] = []  # ("route" | "feedback", step), in call order
        self._pending: dict | None = None
        self._model = self._tokenizer = self._args = None
        self.num_generations: int | None = None
        owner = self

        class _Feedback(TrainerCallback):
            """Feeds each optimiser step back to the router before the next batch is generated."""

            def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
                owner.bind(args, model, processing_class)

            def on_step_end(self, args, state, control, model=None, **kwargs):
                owner.feedback(state.global_step - 1)

        self.callback = _Feedback()

    def bind(self, args, model, tokenizer) -> None:
        """The trainer's config, policy and tokenizer (the callback's `on_train_begin`). Checks
        that one generation batch trains exactly one optimiser step, so a step's feedback reaches
        the router before the next decision."""
        kind = trainer_kind(args)
        spg = getattr(args, "steps_per_generation", None) or args.gradient_accumulation_steps
        if spg != args.gradient_accumulation_steps or getattr(args, "num_iterations", 1) != 1:
            raise ValueError("RoutedReward needs one optimiser step per generation batch: steps_per_generation "
                             f"({spg}) must equal gradient_accumulation_steps ({args.gradient_accumulation_steps}) "
                             f"and num_iterations ({getattr(args, 'num_iterations', 1)}) must be 1")
        if getattr(args, "world_size", 1) != 1:
            raise ValueError("RoutedReward routes in one process; run the trainer on one process")
        if self.signal == "loss" and kind == "grpo" and args.loss_type not in LOSS_TYPES:
            raise ValueError(f"signal 'loss' supports GRPO loss_type {LOSS_TYPES}, not {args.loss_type!r}")
        if kind == "grpo" and getattr(args, "multi_objective_aggregation", "sum_then_normalize") != "sum_then_normalize" \
                and self.signal == "loss":
            raise ValueError("signal 'loss' computes advantages as TRL's sum_then_normalize does")
        self._args, self._model, self._tokenizer, self.kind = args, model, tokenizer, kind
        self.num_generations = int(args.num_generations)

    # ------------------------------------------------------------ routing (TRL calls this)

    def __call__(self, prompts, completions, completion_ids=None, trainer_state=None, **columns) -> list[float]:
        for name in ("log_extra", "log_metric", "environments"):
            columns.pop(name, None)
        if self.num_generations is None:
            raise RuntimeError("RoutedReward is not bound to a trainer: pass callbacks=[reward.callback] to the trainer")
        if self._pending is not None:
            raise RuntimeError("RoutedReward called twice without feedback: the router would decide without the last step's reward")
        step = int(trainer_state.global_step) if trainer_state is not None else len(self.events)
        self.events.append(("route", step))
        G = self.num_generations
        if len(prompts) % G:
            raise ValueError(f"{len(prompts)} completions are not whole groups of num_generations={G}")
        texts, prompt_texts = _texts(completions), _texts(prompts)
        gold = list(self.gold(prompts=prompt_texts, completions=texts, **columns)) if self.gold is not None else None
        groups = []
        for g in range(len(prompts) // G):
            idx = list(range(g * G, (g + 1) * G))
            if len({prompt_texts[i] for i in idx}) != 1:
                raise ValueError(f"completions {idx[0]}..{idx[-1]} are not one prompt's group: TRL's generation order changed?")
            column = lambda key: columns[key][idx[0]] if key in columns and columns[key] is not None else None  # noqa: E731
            groups.append({"id": column("id") if column("id") is not None else f"s{step}:{g}", "domain": column("domain"),
                           "prompt": prompt_texts[idx[0]], "responses": [texts[i] for i in idx],
                           "gold": None if gold is None else [float(gold[i]) for i in idx], "index": idx})
        from rmroute.seeding import derive_seed

        names, noise_rm = [rm.rm_id for rm in self.pool], self.method.noise_rm
        noisy = None if noise_rm is None else names.index(noise_rm) if noise_rm in names else -1
        cache = ScoreCache(self.pool, self.method.noise_sigma, derive_seed(self.noise_seed, step, scheme="score_noise"), noisy)
        start = time.perf_counter()
        arms, contexts, calls = self._route(groups, cache, observe=self._observe)
        seconds = (time.perf_counter() - start) / len(groups)
        rewards = np.zeros(len(prompts))
        decisions: list[dict] = []
        for g, group in enumerate(groups):
            scores, k, rm_name = self._routed_scores(g, group, arms, cache)
            group["scores"] = scores
            rewards[group["index"]] = scores
            if self.method.granularity == "batch" and arms is not None:
                if not decisions:
                    decisions.append({"context": contexts[0], "arm": k, "groups": [], "rows": []})
                decision, decision_id = decisions[0], f"s{step}"
            else:
                decision = {"context": None if contexts is None else contexts[g], "arm": k, "groups": [], "rows": []}
                decisions.append(decision)
                decision_id = f"s{step}:{group['id']}"
            agree, total = ranking_counts(scores, group["gold"]) if group["gold"] is not None else (float("nan"), 0)
            domain = group["domain"]
            decision["domain"] = domain if decision.get("domain", domain) == domain else MIXED_DOMAIN
            decision["groups"].append(g)
            decision["rows"].append(len(self.rows))
            self.rows.append({
                "decision_id": decision_id, "step": step, "router_updates": self.updates, "rm": rm_name, "arm": k,
                "reward_signal": self.signal, "score_gap": _top_gap(scores), "route_seconds": seconds,
                "rm_calls": calls if g == 0 else 0, "bandit_reward_raw": float("nan"), "bandit_reward_norm": float("nan"),
                "loss": float("nan"), "gold_pairs": total, "gold_pairs_agree": agree, "query_id": group["id"],
                "domain": domain, "n_completions": G,
                # The RM's pairwise ranking agreement with gold on this group (analysis only).
                "n_pairs": total, "gold_agreement": agree / total if total else float("nan"),
            })
        wanted = {self.signal} | (set(SIGNALS) if self.log_all_signals else set())
        lengths = [len(c) for c in completion_ids] if completion_ids is not None else [len(t) for t in texts]
        before = None
        if wanted & {"logp_rank", "prior_rank"}:
            if completion_ids is None:
                raise ValueError(f"signals {sorted(wanted & {'logp_rank', 'prior_rank'})} need completion_ids")
            before = completion_logps(self._model, self._tokenizer, prompt_texts, completion_ids)
        self._pending = {"step": step, "groups": groups, "decisions": decisions, "rewards": rewards, "lengths": lengths,
                         "prompts": prompt_texts, "completion_ids": completion_ids, "before": before, "wanted": wanted}
        return rewards.tolist()

    def _observe(self, k: int, groups: list[dict]) -> None:
        """An RM that reads the policy (R2M: `observe`) gets the sampling policy's hidden states
        of the groups it is about to score."""
        observe = getattr(self.pool[k], "observe", None)
        if observe is not None:
            observe(self._model, self._tokenizer, groups)

    # ------------------------------------------------------------ feedback (the callback calls this)

    def feedback(self, step: int) -> np.ndarray:
        """Bandit rewards from optimiser step `step`, which trained on the last routed batch:
        each decision's raw reward by `signal`, rescaled by the normaliser in decision order, then
        one router update. Ensembles and the oracle learn nothing (their rewards are logged)."""
        if self._pending is None:
            raise RuntimeError(f"step {step} ended without a routed batch: is RoutedReward in the trainer's reward_funcs?")
        pending, self._pending = self._pending, None
        if pending["step"] != step:
            raise RuntimeError(f"the batch routed at step {pending['step']} was fed back after step {step}")
        self.events.append(("feedback", step))
        values = self._signals(pending)
        # An RM that learns inside the loop (R2M, `update_every: step`) trains on this step's
        # groups it scored, with the hidden states of the policy this step produced.
        for rm in self.pool:
            if hasattr(rm, "after_step"):
                rm.after_step(self._model, self._tokenizer, pending["groups"], step)
        rewarded, raw = [], []
        for decision in pending["decisions"]:
            for name, per_group in values.items():
                mine = [per_group[g] for g in decision["groups"]] if name != "loss" else [self._decision_loss(pending, decision)]
                finite = [v for v in mine if np.isfinite(v)]
                value = float(np.mean(finite)) if finite else float("nan")
                suffix = "" if name == self.signal else f"_{name}"
                for r in decision["rows"]:
                    self.rows[r][f"bandit_reward_raw{suffix}"] = value
                    if name == "loss":
                        self.rows[r][f"loss{suffix}"] = -value
                if name == self.signal and np.isfinite(value):
                    rewarded.append(decision)
                    raw.append(value)
        return self._learn(rewarded, raw)

    def _signals(self, pending: dict) -> dict[str, list[float]]:
        """Per group, the raw reward of each wanted signal (`loss` is per decision: `_decision_loss`)."""
        out: dict[str, list[float]] = {}
        groups = pending["groups"]
        if "loss" in pending["wanted"]:
            args = self._args
            pending["advantages"] = advantages(pending["rewards"], self.num_generations, self.kind,
                                               scale_rewards=getattr(args, "scale_rewards", "group"),
                                               normalize_advantages=getattr(args, "normalize_advantages", False))
            out["loss"] = []
        if "prior_rank" in pending["wanted"]:
            out["prior_rank"] = [spearman(g["scores"], pending["before"][g["index"]]) for g in groups]
        if "logp_rank" in pending["wanted"]:
            after = completion_logps(self._model, self._tokenizer, pending["prompts"], pending["completion_ids"])
            delta = after - pending["before"]
            out["logp_rank"] = [spearman(g["scores"], delta[g["index"]]) for g in groups]
        return out

    def _decision_loss(self, pending: dict, decision: dict) -> float:
        """Minus the policy-gradient loss of the step on the decision's groups (LASeR's -loss)."""
        idx = [i for g in decision["groups"] for i in pending["groups"][g]["index"]]
        args = self._args
        loss = step_loss(pending["advantages"][idx], np.asarray(pending["lengths"])[idx], self.kind,
                         getattr(args, "loss_type", "dapo"), getattr(args, "max_completion_length", None))
        return -loss


class RMReward:
    """One RM of a pool as a plain TRL reward function (every completion scored): the building
    block of the ensemble baselines, e.g. `reward_funcs=[RMReward(rm) for rm in pool]` with
    `multi_objective_aggregation="normalize_then_sum"` (TRL's GDPO-style aggregation). Counts its calls."""

    def __init__(self, rm):
        self.rm, self.__name__, self.calls = rm, f"rm:{rm.rm_id}", 0

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        texts = _texts(completions)
        self.calls += len(texts)
        return [float(v) for v in self.rm.score(_texts(prompts), texts)]
