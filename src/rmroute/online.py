"""Routing inside the training loop, one training batch at a time.

For each batch: the router selects from its *current* state (one RM per batch, per query or per
candidate pair), only the selected RM scores, and the method's pair rule builds the DPO pairs.
After the optimiser step that trained on them, the per-pair losses of that step become bandit
rewards, the normaliser rescales them from past and current rewards only, and the router is
updated before the next batch is labelled.

`RoutedLabeler` is that routing step as a library object (`label(groups) -> pairs`, then
`feedback(losses)`), usable in any training loop; `rmroute.dpo.RoutedDPOTrainer` drives it from
TRL's DPOTrainer. `training_batches` orders an iteration's prompts into batches, the same way for
every method. Ensembles and the oracle score with every RM; their calls are counted like any
other. Gold scores travel with the rollouts for the decision log only: no router but the oracle
reads them.
"""

from __future__ import annotations

import random
import time
from typing import Callable

import numpy as np

from rmroute.gold import gold_agreement, ranking_agreement, ranking_counts  # noqa: F401  (re-exported)
from rmroute.methods import Method, build_router
from rmroute.pairs import build_pairs, candidate_pairs, random_routed
from rmroute.seeding import derive_seed, text_seed

BATCH_ORDERS = ("interleaved", "blocked", "mixed")
MIXED_DOMAIN = "mixed"  # the reward-history domain of a per-batch decision over prompts of several domains


def training_batches(groups: list[dict], batch_prompts: int, order: str, seed: str | int) -> list[list[int]]:
    """Indices of `groups` cut into training batches of `batch_prompts` prompts.

    * `interleaved` (default): each domain's prompts, in file order, cut into single-domain
      batches; the batches are then taken round-robin over the domains, in a seeded order of the
      domains each round (the analogue of LASeR's per-dataset batches, without long blocks of one
      domain);
    * `blocked`: batches in file order (the rollout file holds one domain after another);
    * `mixed`: a seeded shuffle of all prompts, cut into batches across domains (the hard case
      for a per-batch router).
    The order depends only on the groups and `seed`, never on the method.
    """
    if order not in BATCH_ORDERS:
        raise ValueError(f"batch_order {order!r}: expected one of {BATCH_ORDERS}")
    if batch_prompts < 1:
        raise ValueError(f"batch_prompts must be at least 1, got {batch_prompts}")
    rng = random.Random(text_seed("batches", seed))

    def cut(indices: list[int]) -> list[list[int]]:
        return [indices[i : i + batch_prompts] for i in range(0, len(indices), batch_prompts)]

    if order == "blocked":
        return cut(list(range(len(groups))))
    if order == "mixed":
        indices = list(range(len(groups)))
        rng.shuffle(indices)
        return cut(indices)
    by_domain: dict[str, list[list[int]]] = {}
    for i, group in enumerate(groups):
        by_domain.setdefault(group.get("domain", ""), []).append(i)
    queues = {domain: cut(indices) for domain, indices in by_domain.items()}
    batches = []
    while any(queues.values()):
        domains = [d for d in sorted(queues) if queues[d]]
        rng.shuffle(domains)
        batches += [queues[d].pop(0) for d in domains]
    return batches


class ScoreCache:
    """Scores each (RM, prompt, response) once and counts the calls per RM.

    `noise_sigma` > 0 adds Gaussian noise to every score a method sees (LASeR's robustness test),
    or only to the scores of arm `noisy_arm` when given.
    """

    def __init__(self, pool, noise_sigma: float = 0.0, seed: int = 0, noisy_arm: int | None = None):
        self.pool = pool
        self.cache: dict[tuple[int, int, int], float] = {}
        self.noise_sigma = noise_sigma
        self.noisy_arm = noisy_arm
        self.noise = np.random.default_rng(seed)

    def score(self, k: int, groups: list[dict], wanted: list[tuple[int, int]]) -> int:
        """Score the (group, response) indices `wanted` with RM k; returns the RM calls made."""
        todo = list(dict.fromkeys((g, i) for g, i in wanted if (k, g, i) not in self.cache))
        if not todo:
            return 0
        values = self.pool[k].score([groups[g]["prompt"] for g, _ in todo], [groups[g]["responses"][i] for g, i in todo])
        if self.noise_sigma > 0 and self.noisy_arm in (None, k):
            values = np.asarray(values) + self.noise.normal(0.0, self.noise_sigma, len(values))
        for (g, i), v in zip(todo, values):
            self.cache[(k, g, i)] = float(v)
        return len(todo)

    def get(self, k: int, g: int, i: int) -> float:
        return self.cache[(k, g, i)]


def _top_gap(scores: list[float]) -> float:
    top = sorted(scores, reverse=True)
    return float(top[0] - top[1]) if len(top) > 1 else 0.0


class RouterLearner:
    """What the DPO path's `RoutedLabeler` and the online trainers' `rmroute.rl.RoutedReward`
    share: routing and scoring one batch's decisions, one learning step from the rewarded decisions
    of a training step, and the state an iteration continues from. Subclasses hold `pool`,
    `method`, `router`, `normaliser`, `declared` (the router's class), `prompt_context`, `rows`
    (the decision log) and `updates`."""

    def _learn(self, rewarded: list[dict], raw: list[float]) -> np.ndarray:
        """Rescale the raw rewards of `rewarded` (decisions with `arm`, `context`, `domain` and
        their log `rows`) in decision order, log them, and update the router once. Ensembles and
        the oracle learn nothing: their raw rewards are logged only. Returns the rescaled rewards."""
        if not rewarded or self.normaliser is None or self.declared.scores_every_rm:
            return np.zeros(0)
        arms = np.array([d["arm"] for d in rewarded], dtype=np.int64)
        norm = self.normaliser(np.array(raw), arms, domains=[d["domain"] for d in rewarded])
        for decision, value in zip(rewarded, norm):
            for r in decision["rows"]:
                self.rows[r]["bandit_reward_norm"] = float(value)
        self.router.update(np.stack([np.asarray(d["context"], dtype=np.float64) for d in rewarded]), arms, norm)
        self.updates += 1
        return norm

    def _route(self, groups: list[dict], cache: ScoreCache, observe: Callable[[int, list[dict]], None] | None = None):
        """One batch's routing decisions and scoring, per batch or per query: (arms, one per
        decision, or None where every RM scores; the decisions' contexts, or None; RM calls made).
        Only the picked RM scores a decision's groups; `observe(k, groups)` runs before RM k scores
        them (an RM that reads the policy takes its states then)."""
        def everyone(members):
            return [(g, i) for g in members for i in range(len(groups[g]["responses"]))]

        if self.declared.scores_every_rm:
            if observe is not None:
                for k in range(len(self.pool)):
                    observe(k, groups)
            return None, None, sum(cache.score(k, groups, everyone(range(len(groups)))) for k in range(len(self.pool)))
        contexts = self._group_contexts(groups)
        arms = self.router.select(contexts)
        calls = 0
        for row, arm in enumerate(arms):
            members = range(len(groups)) if self.method.granularity == "batch" else [row]
            if observe is not None:
                observe(int(arm), [groups[g] for g in members])
            calls += cache.score(int(arm), groups, everyone(members))
        return arms, contexts, calls

    def _group_contexts(self, groups: list[dict]) -> np.ndarray:
        """One context row per decision: the batch's mean prompt embedding (per batch) or each
        prompt's (per query) from the current policy for a prompt-context router (LinUCB); a
        constant for context-free routers."""
        rows = 1 if self.method.granularity == "batch" else len(groups)
        if self.declared.context != "prompt":
            return np.zeros((rows, int(getattr(self.router, "dim", 1))))
        contexts = np.asarray(self.prompt_context([g["prompt"] for g in groups]), dtype=np.float64)
        return contexts.mean(axis=0, keepdims=True) if rows == 1 else contexts

    def _routed_scores(self, g: int, group: dict, arms, cache: ScoreCache) -> tuple[list[float], int, str]:
        """Group g's scores after routing (`_route`): its decision's RM's, an ensemble's combined
        scores (arm -1), or the oracle's pick (the RM whose ranking agrees best with gold, analysis
        only); with the arm and the name logged."""
        n, names = len(group["responses"]), [rm.rm_id for rm in self.pool]
        if arms is not None:
            k = int(arms[0] if self.method.granularity == "batch" else arms[g])
            return [cache.get(k, g, i) for i in range(n)], k, names[k]
        matrix = np.array([[cache.get(k, g, i) for i in range(n)] for k in range(len(self.pool))])
        if not self.declared.needs_gold:  # an ensemble: one combined score per response
            return self.router.scores(matrix).tolist(), -1, f"{self.method.router}:{self.method.combine}"
        agreement = np.array([[ranking_agreement(list(row), group["gold"]) for row in matrix]])
        k = int(self.router.select(np.zeros((1, self.router.dim)), correct=agreement)[0])
        return matrix[k].tolist(), k, names[k]

    def state_dict(self) -> dict:
        """Router, normaliser and update count: what the next iteration continues from."""
        return {"router": self.router.state_dict() if self.router is not None else {},
                "normaliser": self.normaliser.state_dict() if self.normaliser is not None else {},
                "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        if self.router is not None:
            self.router.load_state_dict(state["router"])
        if self.normaliser is not None:
            self.normaliser.load_state_dict(state["normaliser"])
        self.updates = int(state.get("updates", 0))


class RoutedLabeler(RouterLearner):
    """Labels training batches with the RM its router picks, and learns from the training loss.

    Args:
        pool: reward models, each with `rm_id` and `score(prompts, responses) -> list[float]`
            (e.g. `rmroute.rewards.pool.RewardModel`); the list order is the arm order.
        method: the resolved method (router, granularity, recipe, budget keys).
        router: the method's router (`rmroute.methods.build_router`); None builds it for the
            routers that read every RM's scores (ensemble, oracle), which need no context.
        normaliser: rescales raw bandit rewards (`rmroute.routers.make_normaliser`).
        prompt_context: `prompts -> (B, d)` contexts from the *current* policy, for routers that
            declare `context = "prompt"` (LinUCB).
        pair_context: `(group, candidate pairs) -> (n, d)` contexts of candidate pairs, for
            per-pair routing (Thompson: the offline router's pair vectors).
        seed: seeds the pair rule's draws, the oracle's ties and score noise.
        updates: router updates already received (carried over from earlier iterations).

    A group is one prompt's samples: `{"id", "prompt", "responses", ...}`, with `domain` and the
    analysis-only `gold` scores when known. Call `label(groups, step)` for a batch, train on the
    pairs it returns, then `feedback(losses)` with one loss per returned pair (NaN for a pair that
    was not trained on) before labelling the next batch.
    """

    def __init__(self, pool: list, method: Method, router=None, normaliser=None, *,
                 prompt_context: Callable[[list[str]], np.ndarray] | None = None,
                 pair_context: Callable[[dict, list[tuple[int, int]]], np.ndarray] | None = None,
                 seed: int = 0, updates: int = 0):
        declared = method.router_class  # what the router reads and whether it learns, as its class declares
        if router is None and declared.scores_every_rm:
            router = build_router(method, len(pool), 1, seed)
        if router is None:
            raise ValueError(f"method {method.name!r} (router {method.router!r}) needs a router object")
        if declared.context == "prompt" and prompt_context is None:
            raise ValueError(f"method {method.name!r}: router {method.router!r} routes on prompt contexts and needs "
                             "prompt_context (the current policy's prompt embeddings)")
        if method.granularity == "pair" and pair_context is None:
            raise ValueError(f"method {method.name!r}: per-pair routing needs pair_context")
        self.pool, self.method, self.router, self.normaliser = pool, method, router, normaliser
        self.declared = declared
        self.prompt_context, self.pair_context = prompt_context, pair_context
        self.rng = random.Random(seed)
        self.noise_seed = seed
        self.updates = int(updates)
        self.rows: list[dict] = []  # the decision log, one row per decision and query
        self._pending: dict | None = None

    # ------------------------------------------------------------ labelling

    def label(self, groups: list[dict], step: int = 0) -> list[dict]:
        """Route one training batch and return its DPO pairs (`prompt`, `chosen`, `rejected`, ...).

        Every decision is made from the router's current state and logged with the number of
        updates the router had received (`router_updates`) and the optimiser `step` whose loss
        will reward it.
        """
        if self._pending is not None:
            raise RuntimeError("label() called twice without feedback(): the router would decide without the last step's reward")
        names, noise_rm = [rm.rm_id for rm in self.pool], self.method.noise_rm
        noisy = None if noise_rm is None else names.index(noise_rm) if noise_rm in names else -1  # -1: not joined yet
        noise_seed = derive_seed(self.noise_seed, step, scheme="score_noise")
        cache = ScoreCache(self.pool, self.method.noise_sigma, noise_seed, noisy)
        pairs: list[dict] = []
        decisions: list[dict] = []  # context, arm, the pairs and log rows each produced
        if self.method.granularity == "pair":
            self._label_pairs(groups, step, cache, pairs, decisions)
        else:
            self._label_groups(groups, step, cache, pairs, decisions)
        self._pending = {"pairs": pairs, "decisions": decisions, "step": step}
        return pairs

    def _emit(self, group: dict, built: list[tuple[int, int]], decision: dict, row: dict, pairs: list[dict]) -> None:
        gold = group.get("gold")
        # The domain whose reward history rescales the decision's reward (normaliser_scope: domain).
        domain = group.get("domain")
        decision["domain"] = domain if decision.get("domain", domain) == domain else MIXED_DOMAIN
        for w, lo in built:
            decision["pairs"].append(len(pairs))
            pairs.append({
                "prompt_id": group["id"], "domain": group.get("domain"), "prompt": group["prompt"],
                "chosen": group["responses"][w], "rejected": group["responses"][lo], "decision_id": row["decision_id"],
                "chosen_gold": None if gold is None else gold[w], "rejected_gold": None if gold is None else gold[lo],
            })
        row.update(query_id=group["id"], domain=group.get("domain"), n_pairs=len(built),
                   gold_agreement=gold_agreement(gold, built))
        decision["rows"].append(len(self.rows))
        self.rows.append(row)

    def _row(self, decision_id: str, step: int, rm: str, arm: int, gap: float, seconds: float, calls: int) -> dict:
        return {"decision_id": decision_id, "step": step, "router_updates": self.updates, "rm": rm, "arm": arm,
                "reward_timing": self.method.recipe.reward_timing,
                "score_gap": gap, "route_seconds": seconds, "rm_calls": calls,
                "bandit_reward_raw": float("nan"), "bandit_reward_norm": float("nan"), "loss": float("nan"),
                "gold_pairs": 0, "gold_pairs_agree": float("nan")}

    def _label_groups(self, groups, step, cache, pairs, decisions) -> None:
        """One decision per batch or per query (everything but per-pair routing)."""
        method = self.method
        start = time.perf_counter()
        arms, contexts, calls = self._route(groups, cache)
        seconds = (time.perf_counter() - start) / len(groups)
        batch_decision = None
        for g, group in enumerate(groups):
            scores, k, rm_name = self._routed_scores(g, group, arms, cache)
            if method.recipe.pair_rule == "random_routed":  # BayesianRouter's rule with one RM's scores for the group
                pair_scores = {(a, b): (scores[a], scores[b]) for a, b in candidate_pairs(n)}
                built = random_routed(group["responses"], pair_scores, method.pairs_per_prompt, method.recipe.tie_threshold, self.rng)
            else:
                built = build_pairs(method.recipe.pair_rule, group["responses"], scores, method.pairs_per_prompt)
            if method.granularity == "batch" and arms is not None:
                if batch_decision is None:
                    batch_decision = {"context": contexts[0], "arm": k, "pairs": [], "rows": []}
                    decisions.append(batch_decision)
                decision, decision_id = batch_decision, f"s{step}"
            else:
                decision = {"context": None if contexts is None else contexts[g], "arm": k, "pairs": [], "rows": []}
                decisions.append(decision)
                decision_id = f"s{step}:{group['id']}"
            # The batch's RM calls are logged on its first row, so their sum over rows is the cost.
            row = self._row(decision_id, step, rm_name, k, _top_gap(scores), seconds, calls if g == 0 else 0)
            # The RM's gold pair accuracy on this group (analysis only: no router reads it).
            agree, total = ranking_counts(scores, group["gold"]) if group.get("gold") is not None else (float("nan"), 0)
            row.update(gold_pairs=total, gold_pairs_agree=agree)
            self._emit(group, built, decision, row, pairs)

    def _label_pairs(self, groups, step, cache, pairs, decisions) -> None:
        """One decision per candidate pair (BayesianRouter): each pair is routed on its own context."""
        names = [rm.rm_id for rm in self.pool]
        for g, group in enumerate(groups):
            cands = candidate_pairs(len(group["responses"]))
            start = time.perf_counter()
            contexts = np.asarray(self.pair_context(group, cands), dtype=np.float64)
            if self.method.fused:
                pair_scores, arms, calls = _fused_pair_scores(cache, groups, g, cands, self.router.mean_scores(contexts))
            else:
                arms = self.router.select(contexts)
                calls = 0
                for k in np.unique(arms):
                    chosen = [c for c, arm in zip(cands, arms) if arm == k]
                    calls += cache.score(int(k), groups, [(g, i) for pair in chosen for i in pair])
                pair_scores = {(a, b): (cache.get(int(k), g, a), cache.get(int(k), g, b)) for (a, b), k in zip(cands, arms)}
            built = random_routed(group["responses"], pair_scores, self.method.pairs_per_prompt,
                                  self.method.recipe.tie_threshold, self.rng)
            seconds = (time.perf_counter() - start) / max(1, len(cands))
            for j, ((a, b), k) in enumerate(zip(cands, arms)):
                mine = [p for p in built if set(p) == {a, b}]
                sa, sb = pair_scores[(a, b)]
                decision = {"context": contexts[j], "arm": int(k), "pairs": [], "rows": []}
                decisions.append(decision)
                row = self._row(f"s{step}:{group['id']}:{a}-{b}", step, names[int(k)], int(k), abs(sa - sb), seconds,
                                calls if j == 0 else 0)
                self._emit(group, mine, decision, row, pairs)

    # ------------------------------------------------------------ feedback

    def feedback(self, losses, also: dict | None = None) -> np.ndarray:
        """Bandit feedback from the losses of the step that trained the last labelled batch.

        `losses[i]` is pair i's share of that step's training loss (NaN if it was not trained on).
        neg_loss (LASeR): a decision's reward is minus the mean loss of its pairs (for a per-batch
        decision, minus the step's loss); advantage (BayesianRouter): the batch's mean pair loss
        minus the pair's. Decisions without a trained pair get no reward and no update. `also`
        maps a name to other per-pair losses of the same pairs (e.g. `after_update`: re-measured
        after the step), whose rewards are logged as `loss_<name>` and `bandit_reward_raw_<name>`
        for analysis and never reach the router. The normaliser rescales the rewards in decision
        order, each with its decision's prompt domain (`mixed` for a batch over several domains),
        which a per-domain normaliser keys its history on. Returns the normalised rewards of the
        rewarded decisions.
        """
        if self._pending is None:
            raise RuntimeError("feedback() without a labelled batch: call label() first")
        pending, self._pending = self._pending, None
        n = len(pending["pairs"])
        losses = np.asarray(losses, dtype=np.float64)
        if losses.shape != (n,):
            raise ValueError(f"losses must have one value per labelled pair ({n}), got shape {losses.shape}")
        rewarded, raw = self._rewards(pending["decisions"], losses, "")
        for name, other in (also or {}).items():
            other = np.asarray(other, dtype=np.float64)
            if other.shape != (n,):
                raise ValueError(f"also[{name!r}] must have one value per labelled pair ({n}), got shape {other.shape}")
            self._rewards(pending["decisions"], other, f"_{name}")
        return self._learn(rewarded, raw)

    def _rewards(self, decisions: list[dict], losses: np.ndarray, suffix: str) -> tuple[list[dict], list[float]]:
        """Each decision's raw reward from per-pair losses, logged as `loss<suffix>` and
        `bandit_reward_raw<suffix>`; returns (the rewarded decisions, their rewards)."""
        reward = self.method.recipe.reward
        if reward not in ("neg_loss", "advantage"):
            raise ValueError(f"reward {reward!r}: expected 'neg_loss' or 'advantage'")
        trained = np.isfinite(losses)
        values = -losses if reward == "neg_loss" else (losses[trained].mean() - losses if trained.any() else losses)
        rewarded, raw = [], []
        for decision in decisions:
            mine = [p for p in decision["pairs"] if trained[p]]
            value = float(values[mine].mean()) if mine else float("nan")
            for r in decision["rows"]:
                self.rows[r][f"loss{suffix}"] = float(losses[mine].mean()) if mine else float("nan")
                self.rows[r][f"bandit_reward_raw{suffix}"] = value
            if mine:
                rewarded.append(decision)
                raw.append(value)
        return rewarded, raw



def route_batches(groups: list[dict], method: Method, pool: list, router=None, *,
                  prompt_context: Callable[[list[str]], np.ndarray] | None = None,
                  pair_context: Callable[[dict, list[tuple[int, int]]], np.ndarray] | None = None,
                  seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Route and score `groups` in batches of `method.batch_prompts`, with no training in between
    (every loss NaN, so no router learns): the cost of routing and scoring alone, for benchmarks
    and tests. Returns (pairs, decision log rows)."""
    labeler = RoutedLabeler(pool, method, router, None, prompt_context=prompt_context, pair_context=pair_context, seed=seed)
    pairs = []
    for step, start in enumerate(range(0, len(groups), method.batch_prompts)):
        batch = labeler.label(groups[start : start + method.batch_prompts], step=step)
        labeler.feedback(np.full(len(batch), np.nan))
        pairs += batch
    return pairs, labeler.rows


def _fused_pair_scores(cache: ScoreCache, groups: list[dict], g: int, cands: list, mean_scores: np.ndarray):
    """BayesianRouter's weighted-score fusion ablation: every RM scores, and each candidate pair is
    judged by the RMs' z-scored rewards weighted by softmax of the router's posterior-mean scores.
    The arm credited with the decision is the highest-weighted RM."""
    n = len(groups[g]["responses"])
    k_arms = mean_scores.shape[1]
    calls = sum(cache.score(k, groups, [(g, i) for i in range(n)]) for k in range(k_arms))
    z = np.array([[cache.get(k, g, i) for i in range(n)] for k in range(k_arms)])
    z = (z - z.mean(1, keepdims=True)) / np.where(z.std(1, keepdims=True) > 0, z.std(1, keepdims=True), 1.0)
    weights = np.exp(mean_scores - mean_scores.max(1, keepdims=True))
    weights /= weights.sum(1, keepdims=True)
    scores = {(a, b): (float(w @ z[:, a]), float(w @ z[:, b])) for (a, b), w in zip(cands, weights)}
    return scores, weights.argmax(1), calls
