"""What every reward-model router looks like, and what they share.

The `Router` protocol, input checks, argmax with seeded tie-breaking, generator state helpers,
and saving a router's state without pickle (safetensors + JSON).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from safetensors.numpy import load_file, save_file

_ARRAY_TAG = "__array__"  # marks, in the JSON sidecar, a value stored in the safetensors file


@runtime_checkable
class Router(Protocol):
    """Picks one reward model (arm) per context row and learns from bandit rewards.

    Constructed as `Router(n_arms, dim, seed, **hyper_parameters)`. Rewards reach `update` already
    normalised (quantile-rescaled or z-scored); routers never normalise them.
    """

    n_arms: int
    dim: int

    def select(self, contexts: np.ndarray) -> np.ndarray:
        """(B, dim) float contexts -> (B,) int64 arm indices in [0, n_arms)."""
        ...

    def update(self, contexts: np.ndarray, chosen: np.ndarray, rewards: np.ndarray) -> None:
        """Learn from the reward of arm `chosen[i]` on `contexts[i]`."""
        ...

    def state_dict(self) -> dict:
        """Everything needed to continue identically: arrays, scalars, lists, strings, dicts."""
        ...

    def load_state_dict(self, state: dict) -> None: ...


# ---------------------------------------------------------------- input checks


def check_sizes(n_arms: int, dim: int) -> tuple[int, int]:
    """(n_arms, dim) as plain ints, or raise naming the bad one."""
    if not isinstance(n_arms, (int, np.integer)) or n_arms < 1:
        raise ValueError(f"n_arms must be a positive integer, got {n_arms!r}")
    if not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    return int(n_arms), int(dim)


def check_finite(name: str, values: np.ndarray) -> None:
    if not np.all(np.isfinite(values)):
        bad = values[~np.isfinite(values)].ravel()[0]
        raise ValueError(f"{name} must be finite, found {bad!r}")


def check_contexts(contexts: Any, dim: int, name: str = "contexts") -> np.ndarray:
    """Return `contexts` as a float64 (B, dim) array, or raise naming the bad shape or value."""
    array = np.asarray(contexts)
    if array.ndim != 2 or array.shape[1] != dim:
        raise ValueError(f"{name} must have shape (B, {dim}), got {array.shape}")
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise ValueError(f"{name} must be real numbers, got dtype {array.dtype}")
    array = array.astype(np.float64)
    check_finite(name, array)
    return array


def check_rows(name: str, values: Any, n_rows: int) -> np.ndarray:
    """Return `values` as a finite float64 (n_rows,) array, or raise naming the problem."""
    array = np.asarray(values)
    if array.shape != (n_rows,):
        raise ValueError(f"{name} must have shape ({n_rows},), got {array.shape}")
    if not np.issubdtype(array.dtype, np.number) and array.dtype != np.bool_:
        raise ValueError(f"{name} must be numbers, got dtype {array.dtype}")
    array = array.astype(np.float64)
    check_finite(name, array)
    return array


def check_update(
    contexts: Any, chosen: Any, rewards: Any, n_arms: int, dim: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate the three arguments of `Router.update`; returns (contexts, chosen, rewards)."""
    contexts = check_contexts(contexts, dim)
    arms = np.asarray(chosen)
    if arms.shape != (len(contexts),):
        raise ValueError(f"chosen must have shape ({len(contexts)},), got {arms.shape}")
    if arms.size and not np.issubdtype(arms.dtype, np.integer):
        raise ValueError(f"chosen must hold integer arm indices, got dtype {arms.dtype}")
    arms = arms.astype(np.int64)
    if arms.size and (arms.min() < 0 or arms.max() >= n_arms):
        bad = arms[(arms < 0) | (arms >= n_arms)][0]
        raise ValueError(f"chosen must lie in [0, {n_arms}), found {bad}")
    return contexts, arms, check_rows("rewards", rewards, len(contexts))


# ---------------------------------------------------------------- shared mechanics


def argmax_random_ties(scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Row-wise argmax of a (B, K) array, exact ties broken uniformly at random.

    One uniform draw per entry is taken on every call, tie or not, so the number of draws (and
    hence every later random choice) does not depend on the values.
    """
    noise = rng.random(scores.shape)
    is_max = scores == scores.max(axis=1, keepdims=True)
    return np.argmax(np.where(is_max, noise, -1.0), axis=1).astype(np.int64)


def rng_state(rng: np.random.Generator) -> dict:
    """The generator's bit_generator state: a dict of strings and (big) ints, JSON-safe."""
    return rng.bit_generator.state


def set_rng_state(rng: np.random.Generator, state: dict) -> None:
    rng.bit_generator.state = state


def check_state_header(state: dict, router: str, n_arms: int, dim: int) -> None:
    """Refuse a state saved by another router kind or for another pool size or context size."""
    expected = {"router": router, "n_arms": n_arms, "dim": dim}
    for key, value in expected.items():
        if key not in state:
            raise ValueError(f"state has no {key!r} entry; expected {key}={value!r}")
        if state[key] != value:
            raise ValueError(f"state[{key!r}] is {state[key]!r}, this router has {key}={value!r}")


def state_array(state: dict, key: str, shape: tuple[int, ...]) -> np.ndarray:
    """A float64 copy of `state[key]`, checked against the shape this router needs."""
    array = np.array(state[key], dtype=np.float64)
    if array.shape != shape:
        raise ValueError(f"state[{key!r}] must have shape {shape}, got {array.shape}")
    return array


# ---------------------------------------------------------------- saving without pickle


def _state_paths(path: str | Path) -> tuple[Path, Path]:
    path = Path(path)
    return path.with_suffix(".safetensors"), path.with_suffix(".json")


def save_state(path: str | Path, state: dict) -> None:
    """Write `state` as `<path>.safetensors` (every numpy array) and `<path>.json` (the rest).

    Arrays are keyed by their place in the nested state ("arms/0/A"); the JSON holds the same
    nesting with `{"__array__": key}` where an array was. Any suffix on `path` is replaced.
    """
    if not isinstance(state, dict):
        raise ValueError(f"state must be a dict, got {type(state).__name__}")
    arrays: dict[str, np.ndarray] = {}

    def encode(value: Any, where: list[str]) -> Any:
        place = "/".join(where)
        if isinstance(value, np.ndarray):
            if value.dtype.kind not in "biuf":
                raise ValueError(f"state[{place}] has dtype {value.dtype}; only bool, int, float")
            if place in arrays:
                raise ValueError(f"state key path {place!r} is used twice; rename a key")
            arrays[place] = np.ascontiguousarray(value)
            return {_ARRAY_TAG: place}
        if isinstance(value, dict):
            for key in value:
                if not isinstance(key, str) or key == _ARRAY_TAG:
                    raise ValueError(f"state[{place}] has key {key!r}; keys must be strings, not {_ARRAY_TAG!r}")
            return {key: encode(item, where + [key]) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [encode(item, where + [str(i)]) for i, item in enumerate(value)]
        if isinstance(value, np.generic):
            return value.item()
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise ValueError(f"state[{place}] has type {type(value).__name__}; save arrays, scalars, lists, strings, dicts")

    document = {"format": "rmroute-state", "version": 1, "state": encode(state, [])}
    tensor_path, json_path = _state_paths(path)
    tensor_path.parent.mkdir(parents=True, exist_ok=True)
    save_file(arrays, str(tensor_path))
    json_path.write_text(json.dumps(document, indent=1))


def load_state(path: str | Path) -> dict:
    """Read back what `save_state(path, state)` wrote."""
    tensor_path, json_path = _state_paths(path)
    document = json.loads(json_path.read_text())
    if document.get("format") != "rmroute-state":
        raise ValueError(f"{json_path} is not an rmroute state file (format={document.get('format')!r})")
    arrays = load_file(str(tensor_path))

    def decode(value: Any) -> Any:
        if isinstance(value, dict):
            if set(value) == {_ARRAY_TAG}:
                return np.array(arrays[value[_ARRAY_TAG]])
            return {key: decode(item) for key, item in value.items()}
        if isinstance(value, list):
            return [decode(item) for item in value]
        return value

    return decode(document["state"])
