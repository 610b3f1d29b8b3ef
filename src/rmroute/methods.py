"""What is compared: a method is a router, a training recipe and overrides (config `methods:` and
`recipes:`), resolved into typed settings, and the one place a router is built from them.

    resolved method = router defaults  <-  recipes[recipe]  <-  the method's own keys

The defaults below are the papers' values; config/README.md documents every field.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np

from rmroute.testbed import DOMAINS

from rmroute.routers.ensemble import COMBINER_NAMES as COMBINES  # ensemble score combinations
from rmroute.routers.registry import router_class, router_names, router_origin


class ConfigError(ValueError):
    """A config or sheet value that cannot work; the message names the field."""


def _help(text: str, default):
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True)
class Recipe:
    """How a method trains the policy on the pairs its router labels (one entry of `recipes:`)."""

    pair_rule: str = _help("top_vs_next (LASeR) | best_vs_worst | random_routed (BayesianRouter)", "top_vs_next")
    tie_threshold: float = _help("random_routed drops pairs whose routed score gap is at most this", 0.0)
    loss: str = _help("dpo_nll = DPO + NLL on the chosen response (LASeR); dpo; nll = the control", "dpo_nll")
    beta: float = _help("DPO inverse temperature", 0.1)
    nll_weight: float = _help("weight of the chosen-response NLL term", 1.0)
    reference: str = _help("previous = the policy entering the iteration (LASeR); sft = fixed SFT policy", "previous")
    lr: float = _help("learning rate of the policy (constant)", 1e-4)
    epochs: float = _help("passes over one iteration's batches; passes after the first replay the labelled pairs", 2.0)
    reward: str = _help("neg_loss = -(training loss) (LASeR); advantage = batch-mean minus pair loss", "neg_loss")
    reward_timing: str = _help("step = the loss of the step that trained the pairs; after_update = re-measured after it",
                               "step")
    normaliser: str = _help("q20/q80 rescaling over all rewards so far with LASeR's rules (quantile-laser), "
                            "BayesianRouter's (quantile-bayesian) or the per-call rule of earlier runs (quantile); "
                            "ema-z = per-RM z-score", "quantile-laser")
    normaliser_scope: str = _help("pooled = one reward history; domain = one per prompt domain", "pooled")
    # Online RL (rmroute.rl, rmroute.stages.online_rl); a dpo recipe ignores these.
    trainer: str = _help("dpo = iterative DPO on routed pairs; grpo | rloo = TRL's online trainer on routed rewards", "dpo")
    signal: str = _help("online trainers' bandit reward: loss (LASeR's -loss, literally) | logp_rank | prior_rank", "prior_rank")
    loss_type: str = _help("GRPO's loss_type (TRL): dapo | bnpo | grpo | dr_grpo", "dapo")
    kl_beta: float = _help("online trainers' KL coefficient (TRL's beta; 0 loads no reference model)", 0.0)

    @property
    def online(self) -> bool:
        """Sampling happens inside the trainer (GRPO, RLOO), not in the rollout rule."""
        return self.trainer != "dpo"


@dataclass(frozen=True)
class Method:
    """A router, its recipe and its hyper-parameters, with the budget keys every method shares."""

    name: str = _help("the method's name in paths and tables", "method")
    router: str = _help("which RM labels each decision: a registered router (rmroute.routers.router_names(): "
                        "the package's and those of `plugins:`)", "random")
    recipe_name: str = _help("name of the recipe under `recipes:`", "laser")
    recipe: Recipe = field(default_factory=Recipe, metadata={"help": "the resolved training recipe"})
    granularity: str = _help("one routing decision per batch, query or candidate pair", "batch")
    rm: str | None = _help("rm_id of the single-RM baseline (router single)", None)
    arm: int | None = _help("pool index of `rm`", None)
    alpha: float = _help("LinUCB exploration weight (LASeR: 0.1)", 0.1)
    gamma: float = _help("Exp3 exploration rate", 0.1)
    lambda0: float = _help("Thompson prior precision (BayesianRouter: 1)", 1.0)
    sigma2: float = _help("Thompson observation noise variance", 1.0)
    prior: str = _help("Thompson prior means: offline RM embeddings, or zero (ablation)", "offline")
    context: str = _help("LinUCB prompt context from the current policy: last_hidden | mean_input_embedding",
                         "last_hidden")
    combine: str = _help("ensemble combination: mean | min | uncertainty | vote", "mean")
    uncertainty_k: float = _help("k of the uncertainty ensemble (mean - k std)", 1.0)
    fused: bool = _help("bayesian-fused ablation: posterior-weighted sum of every RM's z-scores", False)
    noise_sigma: float = _help("Gaussian noise (standard deviation) added to RM scores (robustness test)", 0.0)
    noise_rm: str | None = _help("the rm_id whose scores get the noise; None = every RM's", None)
    rms: tuple = _help("rm_ids of the method's pool in arm order (default: every sheet row but R2M rows; "
                       "RMs that join later come last)", ())
    join: dict = field(default_factory=dict, metadata={
        "help": "rm_id -> the iteration it joins the pool at (add-an-RM experiment); absent = from iteration 1"})
    domains: tuple = _help("the prompt domains the method trains on (its rollouts' other groups are dropped); "
                           "() = every domain", ())
    pairs_per_prompt: int = _help("budget.pairs_per_prompt", 2)
    batch_prompts: int = _help("budget.batch_prompts: prompts per training batch (and per-batch decision)", 16)
    params: dict = field(default_factory=dict, metadata={
        "help": "hyper-parameters a router declares beyond the keys above (a plugin router's), by name"})
    plugin: str | None = _help("the `plugins:` entry that registers the router (filled in; None = the package's)", None)

    @property
    def router_class(self) -> type:
        """The router's registered class: its declarations (context, granularity, learns, ...)."""
        return router_class(self.router, f"methods.{self.name}.router", self.plugin)

    @property
    def learns(self) -> bool:
        return self.router_class.learns

    @property
    def needs_offline_router(self) -> bool:
        """Routers on candidate-pair contexts read the offline router's pair encoder and RM embeddings."""
        return self.router_class.context == "pair"

    def router_options(self) -> dict:
        """The router's declared hyper-parameters with this method's values: a key of its own
        (alpha, gamma, ...), else `params`, else the router's default."""
        own = {f.name for f in fields(self)}
        return {hp: getattr(self, hp) if hp in own else self.params.get(hp, spec.default)
                for hp, spec in self.router_class.hyperparameters.items()}

    def active_rms(self, it: int) -> list[str]:
        """The pool at iteration `it`, in arm order: every RM that has joined by then. Late RMs
        come last in `rms`, so an arm keeps its index once it has joined."""
        return [rm for rm in self.rms if self.join.get(rm, 1) <= it]

    def to_dict(self) -> dict:
        data = asdict(self)
        data["rms"], data["domains"] = list(self.rms), list(self.domains)
        if not self.recipe.online:  # a DPO method's params stay as they were before online trainers existed
            for key in ONLINE_RECIPE_KEYS:
                data["recipe"].pop(key)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Method:
        if not data.get("rms"):
            raise ValueError(f"method {data.get('name')!r}: no `rms` (pool) in the resolved method; resolve it with "
                             "resolve_methods")
        return cls(**{**data, "recipe": Recipe(**data["recipe"]), "rms": tuple(data["rms"]), "join": dict(data.get("join", {})),
                      "domains": tuple(data.get("domains", ())), "params": dict(data.get("params", {}))})


RECIPE_KEYS = tuple(f.name for f in fields(Recipe))
ONLINE_RECIPE_KEYS = ("trainer", "signal", "loss_type", "kl_beta")
METHOD_KEYS = tuple(f.name for f in fields(Method) if f.name not in ("name", "recipe", "recipe_name", "arm", "plugin",
                                                                      "pairs_per_prompt", "batch_prompts"))

BASELINE_SEPARATOR = "@"  # "<baseline>@<recipe>": a baseline's name says which recipe trained it


def baseline_specs(config: dict, rm_ids: list[str]) -> dict[str, dict]:
    """The methods the `baselines:` block stands for: each listed baseline once per recipe, named
    `<baseline>@<recipe>` so a table shows the recipe, with the recipe set, so that a routed method
    is compared with baselines trained exactly as it is. Baselines: `single` (every RM of `rm_ids`,
    one method each, named by its rm_id), `random`, `oracle`, `ensemble-<combine>` and any router
    name (e.g. `linucb`: LASeR's router under another recipe). An item `{name: {key: value}}`
    overrides method keys of that baseline (its bandit reward, say), never the recipe's training."""
    out = {}
    for recipe, names in (config.get("baselines") or {}).items():
        where = f"baselines.{recipe}"
        if recipe not in config["recipes"]:
            raise ConfigError(f"{where}: {recipe!r} is not defined under recipes ({sorted(config['recipes'])})")
        for item in names:
            # An item is a name, or {name: overrides}: e.g. a router's own bandit reward under another recipe.
            baseline, overrides = next(iter(item.items())) if isinstance(item, dict) else (item, {})
            if baseline == "single":
                specs = {rm: {"router": "single", "rm": rm} for rm in rm_ids}
            elif baseline.startswith("ensemble-"):
                combine = baseline.removeprefix("ensemble-")
                if combine not in COMBINES:
                    raise ConfigError(f"{where}: {baseline!r} combines by {combine!r}; expected one of "
                                      f"{[f'ensemble-{c}' for c in COMBINES]}")
                specs = {baseline: {"router": "ensemble", "combine": combine}}
            elif baseline in router_names():
                specs = {baseline: {"router": baseline}}
            else:
                raise ConfigError(f"{where}: {baseline!r} is not a baseline; expected 'single', 'ensemble-<combine>' "
                                  f"or a router of {list(router_names())}")
            # The schema keeps "@" out of the names under `methods:`, so these never collide with them.
            out.update({f"{name}{BASELINE_SEPARATOR}{recipe}": {**spec, **overrides, "recipe": recipe}
                        for name, spec in specs.items()})
    return out


def _check_online(method: Method, where: str, budget: dict) -> None:
    """What an online recipe (`trainer: grpo | rloo`) cannot run, as a ConfigError naming the field."""
    recipe = method.recipe
    if method.granularity == "pair" or method.needs_offline_router:
        raise ConfigError(f"{where}.router: under recipe trainer {recipe.trainer!r} a decision covers a prompt group "
                          f"or a batch; router {method.router!r} routes candidate pairs")
    if method.join:
        raise ConfigError(f"{where}.join: online trainers take a fixed pool")
    if method.router == "ensemble" and method.combine == "normalize_then_sum" and recipe.trainer != "grpo":
        raise ConfigError(f"{where}.combine: normalize_then_sum is GRPOTrainer's aggregation; trainer {recipe.trainer!r} has none")
    if budget["samples_per_prompt"] < 2:
        raise ConfigError(f"budget.samples_per_prompt: online trainers compare a prompt's completions, so at least 2, "
                          f"got {budget['samples_per_prompt']}")
    if (budget["prompts_per_iteration"] // len(DOMAINS)) % budget["batch_prompts"]:
        raise ConfigError(f"budget.batch_prompts: an online step trains one full batch; {budget['batch_prompts']} must divide "
                          f"each domain's share of budget.prompts_per_iteration ({budget['prompts_per_iteration']})")


def resolve_methods(config: dict, rm_ids: list[str], opt_in: tuple[str, ...] = ()) -> dict[str, Method]:
    """Every method of the config (`methods:`, then those `baselines:` stands for) with its recipe,
    budget and router parameters filled in, or a ConfigError naming the field that cannot work.
    `opt_in` are rm_ids a method's pool holds only when the method names them (R2M rows: they
    train inside the loop of every method that holds them)."""
    out = {}
    budget = config["budget"]
    iterations = budget["iterations"]
    static_rms = [r for r in rm_ids if r not in opt_in]
    for name, spec in {**config["methods"], **baseline_specs(config, static_rms)}.items():
        where = f"methods.{name}"
        router = spec.get("router")
        try:
            declared = router_class(str(router), f"{where}.router")
        except ValueError as error:
            raise ConfigError(str(error)) from None
        unknown = sorted(set(spec.get("params") or {}) - set(declared.hyperparameters))
        if unknown:
            raise ConfigError(f"{where}.params: router {router!r} declares no hyper-parameter {unknown}; it declares "
                              f"{sorted(declared.hyperparameters) or 'none'}")
        recipe_name = spec.get("recipe", declared.recipe)
        if recipe_name not in config["recipes"]:
            raise ConfigError(f"{where}.recipe: {recipe_name!r} is not defined under recipes ({sorted(config['recipes'])})")
        recipe = Recipe(**{**config["recipes"][recipe_name], **{k: v for k, v in spec.items() if k in RECIPE_KEYS}})
        own = {k: v for k, v in spec.items() if k in METHOD_KEYS}
        method = Method(name=name, recipe_name=recipe_name, recipe=recipe, pairs_per_prompt=budget["pairs_per_prompt"],
                        plugin=router_origin(router),
                        batch_prompts=budget["batch_prompts"], **{"granularity": declared.granularity, **own})
        rms = list(spec.get("rms", [r for r in rm_ids if r not in opt_in]))
        for rm in rms:
            if rm not in rm_ids:
                raise ConfigError(f"{where}.rms: {rm!r} is not an rm_id of the RM sheet ({rm_ids})")
        if len(set(rms)) != len(rms) or not rms:
            raise ConfigError(f"{where}.rms: needs at least one RM and no repeats, got {rms}")
        if router == "single":
            if spec.get("rm") not in rm_ids:
                raise ConfigError(f"{where}.rm: {spec.get('rm')!r} is not an rm_id of the RM sheet ({rm_ids})")
            if spec["rm"] not in rms:
                rms.append(spec["rm"])
        elif "rm" in spec:
            raise ConfigError(f"{where}.rm: only router 'single' takes an rm (router is {router!r})")
        join = dict(spec.get("join", {}))
        for rm, first in join.items():
            if rm not in rms:
                raise ConfigError(f"{where}.join: {rm!r} is not in the method's pool ({rms})")
            if not 2 <= int(first) <= iterations:
                raise ConfigError(f"{where}.join.{rm}: iteration {first} must lie in [2, budget.iterations={iterations}]")
        if join and not declared.extendable:
            extendable = [n for n in router_names() if router_class(n).extendable]
            raise ConfigError(f"{where}.join: router {router!r} cannot take an RM mid-run; use one of {extendable}")
        if join and len(join) == len(rms):
            raise ConfigError(f"{where}.join: every RM of the pool joins late; iteration 1 would have none")
        if join and method.recipe.normaliser == "ema-z":
            raise ConfigError(f"{where}.join: needs normaliser 'quantile', 'quantile-laser' or 'quantile-bayesian' "
                              f"(shared by all arms), got {method.recipe.normaliser!r}")
        domains = spec.get("domains")
        if domains is not None and (not domains or len(set(domains)) != len(domains)
                                    or any(d not in DOMAINS for d in domains)):
            raise ConfigError(f"{where}.domains: {domains!r} must be distinct domain names from {list(DOMAINS)}, "
                              "at least one (leave the key out for every domain)")
        if spec.get("noise_rm") is not None and spec["noise_rm"] not in rms:
            raise ConfigError(f"{where}.noise_rm: {spec['noise_rm']!r} is not in the method's pool ({rms})")
        rms = [r for r in rms if r not in join] + sorted(join, key=lambda r: (int(join[r]), rms.index(r)))
        method = replace(method, rms=tuple(rms), join={r: int(v) for r, v in join.items()}, domains=tuple(domains or ()))
        if router == "single":
            method = replace(method, arm=rms.index(spec["rm"]))
        if method.granularity not in declared.granularities:
            pair_routers = [n for n in router_names() if "pair" in router_class(n).granularities]
            hint = f"; per-pair routing needs one of {pair_routers}" if method.granularity == "pair" else ""
            raise ConfigError(f"{where}.granularity: router {router!r} routes per {' | '.join(declared.granularities)}, "
                              f"not {method.granularity!r}{hint}")
        if recipe.online:
            _check_online(method, where, budget)
            out[name] = method
            continue
        if method.granularity == "pair" and recipe.pair_rule != "random_routed":
            raise ConfigError(f"{where}.pair_rule: per-pair routing needs pair_rule 'random_routed', got {recipe.pair_rule!r}")
        if method.pairs_per_prompt >= budget["samples_per_prompt"] and recipe.pair_rule == "top_vs_next":
            raise ConfigError(
                f"budget.pairs_per_prompt: top_vs_next pairs the top sample with the next P, so P must be below "
                f"budget.samples_per_prompt ({budget['samples_per_prompt']}), got {method.pairs_per_prompt}")
        out[name] = method
    return out


def build_router(method: Method, n_arms: int, dim: int, seed: int, prior: np.ndarray | None = None):
    """The method's router over `n_arms` RMs with `dim`-dimensional contexts, built from its
    registered class: `from_method` where the class defines one (a router whose arguments are
    not plain hyper-parameters), else `cls(n_arms, dim, seed, **method.router_options())`.
    `prior` is the offline router's (n_arms, dim) RM embeddings, needed by pair-context routers."""
    cls = method.router_class
    if cls.context == "pair" and prior is None:
        raise ValueError(f"method {method.name!r}: router {method.router!r} needs the offline router's RM embeddings (prior)")
    if hasattr(cls, "from_method"):
        return cls.from_method(method, n_arms, dim, seed, prior)
    return cls(n_arms, dim, seed, **method.router_options())
