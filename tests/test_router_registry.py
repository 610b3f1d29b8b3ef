"""A router is one file: a class declares what the pipeline needs to know (its context,
granularity, whether it learns or can take an RM mid-run, its hyper-parameters) and registers
itself; nothing in the package names it. The toy routers below live in this test file only."""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from rmroute.config import ConfigError, load_config
from rmroute.methods import Method, Recipe, build_router, resolve_methods
from rmroute.online import RoutedLabeler, route_batches
from rmroute.routers import Hyper, make_normaliser, register_router, router_class, router_names
from rmroute.routers.base import check_contexts, check_update

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
ANSWERS = [" yes", " no", " maybe", " later"]


@register_router
class GreedyMeanRouter:
    """Picks the arm with the highest mean reward so far (ties: lowest index), after trying each
    arm `warmup` times. Context-free, per batch or per query; learns; cannot grow its pool."""

    name = "toy-greedy"
    context = "none"
    granularity = "batch"
    granularities = ("batch", "query")
    learns = True
    hyperparameters = {"warmup": Hyper(1, "times each arm is tried before greedy picks")}

    def __init__(self, n_arms: int, dim: int, seed: int = 0, warmup: int = 1):
        self.n_arms, self.dim, self.warmup = n_arms, dim, int(warmup)
        self.total, self.count = np.zeros(n_arms), np.zeros(n_arms)

    def select(self, contexts):
        contexts = check_contexts(contexts, self.dim)
        untried = np.flatnonzero(self.count < self.warmup)
        arm = int(untried[0]) if len(untried) else int(np.argmax(self.total / np.maximum(self.count, 1)))
        return np.full(len(contexts), arm, dtype=np.int64)

    def update(self, contexts, chosen, rewards):
        check_update(contexts, chosen, rewards, self.n_arms, self.dim)
        np.add.at(self.total, chosen, rewards)
        np.add.at(self.count, chosen, 1)

    def state_dict(self):
        return {"router": self.name, "n_arms": self.n_arms, "dim": self.dim, "total": self.total.tolist(),
                "count": self.count.tolist()}

    def load_state_dict(self, state):
        self.total, self.count = np.array(state["total"]), np.array(state["count"])


@register_router
class ContextSpyRouter:
    """A contextual router under a name the package has never heard of: it records its contexts."""

    name = "toy-context"
    context = "prompt"
    granularity = "query"
    granularities = ("query",)
    seen: list = []

    def __init__(self, n_arms: int, dim: int, seed: int = 0):
        self.n_arms, self.dim = n_arms, dim

    def select(self, contexts):
        ContextSpyRouter.seen.append(np.array(contexts))
        return np.zeros(len(contexts), dtype=np.int64)

    def update(self, contexts, chosen, rewards):
        pass

    def state_dict(self):
        return {"router": self.name, "n_arms": self.n_arms, "dim": self.dim}

    def load_state_dict(self, state):
        pass


class RankRM:
    """A stub RM ranking the answers in a fixed order (first = best)."""

    def __init__(self, rm_id: str, order: list[str]):
        self.rm_id, self.order = rm_id, order

    def score(self, prompts, responses):
        return [float(len(self.order) - self.order.index(r)) for r in responses]


def groups(n: int) -> list[dict]:
    rng = np.random.default_rng(0)
    return [{"id": f"q{i}", "domain": "d", "prompt": f"Q: item {i}?\nA:", "responses": list(rng.permutation(ANSWERS)),
             "gold": None} for i in range(n)]


def config_with(methods: dict, **extra) -> dict:
    config = copy.deepcopy(DEFAULT_CONFIG)
    config["methods"], config["baselines"] = methods, {}
    config.pop("claims", None)
    config.update(extra)
    return config


def test_the_registry_holds_the_packages_routers_with_their_declarations():
    assert {"single", "random", "ensemble", "oracle", "linucb", "exp3", "thompson", "offline-only"} <= set(router_names())
    linucb, thompson, oracle = router_class("linucb"), router_class("thompson"), router_class("oracle")
    assert (linucb.context, linucb.granularity, linucb.learns, linucb.extendable) == ("prompt", "batch", True, True)
    assert (thompson.context, thompson.granularity, thompson.recipe) == ("pair", "pair", "bayesian")
    assert oracle.scores_every_rm and oracle.needs_gold and not linucb.needs_gold
    assert set(linucb.hyperparameters) == {"alpha"}


def test_a_toy_router_resolves_builds_and_learns_through_the_labeler():
    methods = resolve_methods(config_with({"toy": {"router": "toy-greedy", "params": {"warmup": 2}}}),
                              ["rm_good", "rm_bad"])
    method = methods["toy"]
    assert method.learns and method.granularity == "batch" and method.recipe_name == "laser"
    router = build_router(method, 2, 1, seed=0)
    assert isinstance(router, GreedyMeanRouter) and router.warmup == 2  # its declared hyper-parameter arrived
    pool = [RankRM("rm_good", ANSWERS), RankRM("rm_bad", ANSWERS[::-1])]
    labeler = RoutedLabeler(pool, method, router, make_normaliser("quantile"), seed=0)
    for step in range(10):
        pairs = labeler.label(groups(4), step)
        # The good RM's pairs train with a lower loss: the toy's rewards favour it.
        labeler.feedback(np.array([0.1 if labeler.rows[-1]["arm"] == 0 else 2.0] * len(pairs)))
    arms = [row["arm"] for row in labeler.rows[::4]]
    assert arms[:4] == [0, 0, 1, 1]  # two warm-up tries of each arm
    assert set(arms[4:]) == {0} and labeler.updates == 10


def test_a_contextual_router_gets_real_prompt_contexts_whatever_its_name():
    method = Method(name="spy", router="toy-context", granularity="query", batch_prompts=4)
    ContextSpyRouter.seen.clear()
    embed = lambda prompts: np.array([[len(p), 1.0] for p in prompts])  # noqa: E731
    route_batches(groups(8), method, [RankRM("a", ANSWERS)], ContextSpyRouter(1, 2), prompt_context=embed)
    seen = np.concatenate(ContextSpyRouter.seen)
    assert seen.shape == (8, 2) and np.all(seen[:, 0] > 0)  # the prompt contexts, never zeros
    with pytest.raises(ValueError, match="prompt_context"):
        RoutedLabeler([RankRM("a", ANSWERS)], method, ContextSpyRouter(1, 2))


@pytest.mark.parametrize("spec, match", [
    ({"router": "nope"}, r"methods\.bad\.router: 'nope' is not a registered router; registered: .*toy-greedy"),
    ({"router": "toy-greedy", "params": {"temperature": 2}}, r"methods\.bad\.params: .*declares no hyper-parameter \['temperature'\]"),
    ({"router": "toy-greedy", "granularity": "pair"}, r"methods\.bad\.granularity: router 'toy-greedy' routes per batch \| query"),
    ({"router": "toy-greedy", "join": {"rm_arith_mc": 2}}, r"methods\.bad\.join: router 'toy-greedy' cannot take an RM mid-run"),
])
def test_bad_router_settings_name_the_field(project: Path, spec, match):
    with pytest.raises(ConfigError, match=match):
        load_config(config_with({"bad": spec}), project)


def test_a_malformed_declaration_fails_where_it_is_written():
    with pytest.raises(TypeError, match="context"):
        register_router(type("Bad", (), {"name": "toy-bad", "context": "image"}))
    with pytest.raises(TypeError, match="add_arms"):
        register_router(type("Bad", (), {"name": "toy-bad2", "extendable": True, "select": lambda self, c: c}))


PLUGIN = textwrap.dedent('''
    """A router of the user's own, outside the package (config `plugins:`)."""
    import numpy as np

    from rmroute.routers import Hyper, register_router
    from rmroute.routers.simple import RandomRouter


    @register_router
    class SecondArmRouter(RandomRouter):
        name = "plugin-second"
        hyperparameters = {"which": Hyper(1, "the arm it always picks")}

        def __init__(self, n_arms, dim, seed=0, which=1):
            super().__init__(n_arms, dim, seed)
            self.which = which

        def select(self, contexts):
            return np.full(len(contexts), self.which, dtype=np.int64)
''')


def test_a_plugin_router_is_named_in_the_config_and_rebuilt_in_a_job_process(tmp_path: Path, project: Path):
    plugin = tmp_path / "my_router.py"
    plugin.write_text(PLUGIN)
    _, _, methods = load_config(config_with({"mine": {"router": "plugin-second", "params": {"which": 0}}},
                                            plugins=[str(plugin)]), project)
    method = methods["mine"]
    assert method.plugin == str(plugin.resolve())
    # A job gets the method as a dict; its process has never imported the plugin.
    code = ("import json, sys; from rmroute.methods import Method, build_router; "
            "m = Method.from_dict(json.loads(sys.argv[1])); r = build_router(m, 3, 1, 0); "
            "print(type(r).__name__, r.select([[0.0]])[0])")
    import json

    run = subprocess.run([sys.executable, "-c", code, json.dumps(method.to_dict())], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["SecondArmRouter", "0"]


def test_a_missing_plugin_names_the_field(project: Path):
    with pytest.raises(ConfigError, match=r"plugins: 'nowhere/router\.py' is not a file"):
        load_config(config_with({"laser": {"router": "linucb"}}, plugins=["nowhere/router.py"]), project)


@pytest.mark.workflow
def test_the_test_dag_plans_a_plugin_routers_method(tmp_path: Path):
    plugin = tmp_path / "my_router.py"
    plugin.write_text(PLUGIN)
    config = yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text())
    config["plugins"] = [str(plugin)]
    config["methods"]["mine"] = {"router": "plugin-second"}
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    snakemake = Path(sys.executable).with_name("snakemake")
    run = subprocess.run([str(snakemake), "-n", "--cores", "1", "--configfile", str(configfile)], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-3000:]
    assert "runs/mine/" in output  # the plugin router's method is trained like any other
