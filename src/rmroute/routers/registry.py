"""The router registry: what the rest of RMRoute knows about a router, declared by the router.

A router is one class in one file. It declares, as class attributes, everything the pipeline
used to look up by name:

    name            the name a method's `router:` key uses
    context         what it routes on: "none" (context-free), "prompt" (the current policy's
                    prompt embeddings, LASeR) or "pair" (the offline router's candidate-pair
                    vectors, BayesianRouter; brings the offline router into the DAG)
    granularity     its default decision unit: "batch", "query" or "pair"
    granularities   the units it can route (default: its own granularity only)
    learns          whether bandit rewards update it
    extendable      whether it can take an RM mid-run (it then has `add_arms`)
    scores_every_rm True for the baselines that read every RM's scores (ensemble, oracle):
                    they decide from those scores, not from a context
    needs_gold      True for the oracle alone: it reads gold labels (analysis only)
    picks_per_decision  False for routers whose choice never varies (one fixed RM) or that pick
                    no RM (ensembles): no selection share to plot
    recipe          the recipe a method with this router trains with by default
    hyperparameters {name: Hyper(default, help)}: what `methods.<m>.params` may set

and is registered with `@register_router`. The package's own routers register when
`rmroute.routers` is imported, which any import of this module does first. `build(n_arms, dim, seed, options, prior)` builds one;
the default calls `cls(n_arms, dim, seed, **options)`. A router outside the package is a
`plugins:` entry of the config (a module name or a .py path) whose classes register themselves
on import: docs/routers.md shows one end to end.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONTEXTS = ("none", "prompt", "pair")
GRANULARITIES = ("batch", "query", "pair")


@dataclass(frozen=True)
class Hyper:
    """One router hyper-parameter: its default and what it does (shown in docs and errors)."""

    default: Any
    help: str


_REGISTRY: dict[str, type] = {}
_ORIGIN: dict[str, str] = {}  # router name -> the plugin entry that registered it (absolute path or module)

_DECLARED = {  # attribute -> its default when a router class leaves it out
    "context": "none", "granularity": "batch", "granularities": None, "learns": False, "extendable": False,
    "scores_every_rm": False, "needs_gold": False, "picks_per_decision": True, "recipe": "laser", "hyperparameters": {},
}


def register_router(cls: type) -> type:
    """Class decorator: make `cls` a router the config can name (`router: <cls.name>`).

    Checks the declarations at import time, so a mistyped one fails where it is written."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__qualname__}: a router class declares its `name` (the config's router: value)")
    for attr, default in _DECLARED.items():
        if not hasattr(cls, attr):
            setattr(cls, attr, default)
    if cls.context not in CONTEXTS:
        raise TypeError(f"router {name!r}: context {cls.context!r} is not one of {CONTEXTS}")
    if cls.granularities is None:
        cls.granularities = (cls.granularity,)
    cls.granularities = tuple(cls.granularities)
    bad = [g for g in (cls.granularity, *cls.granularities) if g not in GRANULARITIES]
    if bad or cls.granularity not in cls.granularities:
        raise TypeError(f"router {name!r}: granularity {cls.granularity!r} must be one of granularities "
                        f"{cls.granularities}, each of {GRANULARITIES}")
    if cls.context == "pair" and cls.granularities != ("pair",):
        raise TypeError(f"router {name!r}: a pair-context router routes candidate pairs only (granularities ('pair',))")
    if cls.extendable and not cls.scores_every_rm and not callable(getattr(cls, "add_arms", None)):
        raise TypeError(f"router {name!r}: extendable routers implement add_arms(n, prior_means=None)")
    for hp, spec in cls.hyperparameters.items():
        if not isinstance(spec, Hyper):
            raise TypeError(f"router {name!r}: hyperparameters[{hp!r}] must be a Hyper(default, help)")
    if name in _REGISTRY and _REGISTRY[name] is not cls and _REGISTRY[name].__qualname__ != cls.__qualname__:
        raise ValueError(f"router {name!r} is already registered by {_REGISTRY[name].__module__}.{_REGISTRY[name].__qualname__}")
    _REGISTRY[name] = cls
    return cls


def router_class(name: str, where: str = "router", plugin: str | None = None) -> type:
    """The registered class of router `name`, or a ValueError naming `where` and the choices.
    `plugin` (a method's record of where its router came from) is imported first when the name
    is not registered yet in this process: a job builds a plugin router without the config."""
    if name not in _REGISTRY and plugin:
        load_plugins([plugin])
    if name not in _REGISTRY:
        raise ValueError(f"{where}: {name!r} is not a registered router; registered: {', '.join(router_names())} "
                         "(a router of your own: a `plugins:` entry, see docs/routers.md)")
    return _REGISTRY[name]


def router_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def routers_where(**declared: Any) -> tuple[str, ...]:
    """Names of the registered routers whose declarations match, e.g. `routers_where(learns=True)`."""
    return tuple(n for n, c in _REGISTRY.items() if all(getattr(c, k) == v for k, v in declared.items()))


def router_origin(name: str) -> str | None:
    """The plugin entry (absolute .py path or module name) that registered router `name`; None
    for the package's own routers."""
    return _ORIGIN.get(name)


def load_plugins(entries: list[str] | tuple[str, ...], root: str | Path = ".") -> None:
    """Import each plugin (a module name, or a .py path relative to `root`) so that its routers
    register. A path is imported under a name derived from its location, so two plugins may
    share a file name and a plugin imported twice registers once."""
    for entry in entries or ():
        before = set(_REGISTRY)
        if str(entry).endswith(".py"):
            path = (Path(entry) if Path(entry).is_absolute() else Path(root) / entry).resolve()
            if not path.is_file():
                raise ValueError(f"plugins: {entry!r} is not a file (relative paths start at {Path(root).resolve()})")
            origin = str(path)
            module = "rmroute_plugin_" + "".join(c if c.isalnum() else "_" for c in origin)
            if module in sys.modules:
                continue
            spec = importlib.util.spec_from_file_location(module, path)
            loaded = importlib.util.module_from_spec(spec)
            sys.modules[module] = loaded
            try:
                spec.loader.exec_module(loaded)
            except Exception:
                del sys.modules[module]
                raise
        else:
            origin = str(entry)
            try:
                importlib.import_module(origin)
            except ImportError as error:
                raise ValueError(f"plugins: cannot import {entry!r} ({error}); give a module on the Python path "
                                 "or a .py file path") from error
        for name in set(_REGISTRY) - before:
            _ORIGIN[name] = origin
