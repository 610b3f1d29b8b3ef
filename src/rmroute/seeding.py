"""Every seed derived from another seed, in one place.

A run has the config's `seed` (data, SFT, RMs, offline router) and, per method run, the `<seed>`
wildcard. Each random stream a stage draws from is seeded from one of them here, by a named
scheme, so that streams that must differ do, and a stream that must repeat (the same prompts for
every method) does. The schemes are the formulas the pipeline has always used, kept to the bit:
changing one changes every number downstream of it, so a new stream takes a new scheme.

* `derive_seed(base, index, scheme=...)`: an integer seed, `base·scale + stride·(index + first)`
  (`SCHEMES` gives each scheme's constants and its stream);
* `text_seed(*parts)`: a string seed for `random.Random`, the parts joined by "-" (a string seed
  is hashed with SHA-512, so it does not depend on PYTHONHASHSEED);
* `child_rng(seed)`: a numpy Generator on the first child of `SeedSequence(seed)`, a stream
  apart from `default_rng(seed)`, which other draws seeded by `seed` use.

Seeds used as given, not derived: the routers' generators (`default_rng(seed)`), the labeler's
(`random.Random(seed)`), the SFT mix and RM pair sampling (`random.Random(seed)`), TRL's
`seed`/`data_seed`, and the DPO replay order (`random.Random(args.seed)`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scheme:
    """`base·scale + stride·(index + first)`, and the stream it seeds."""

    scale: int  # multiplies the base seed
    stride: int  # multiplies the index
    first: int  # added to the index (1: index 0 already moves off the base seed)
    stream: str


SCHEMES = {
    "iteration": Scheme(1000, 1, 0, "a method run at iteration `index` (seed·1000 + it): its rollouts' sampling, "
                                    "the DPO trainer, its global seed, RM pool, router and labeler"),
    "r2m_update": Scheme(1000, 1, 0, "the group order of one R2M update, by the update steps taken so far "
                                     "(seed·1000 + step)"),
    "score_noise": Scheme(100_003, 1, 0, "the labeler's Gaussian score noise at optimiser step `index` "
                                         "(seed·100003 + step)"),
    "vllm_request": Scheme(100_003, 1, 0, "vLLM's sampling of prompt `index` of a request list (seed·100003 + i): "
                                          "requests seeded alike would share one random stream"),
    "generate_batch": Scheme(1, 1, 0, "torch's global seed for batch `index` of models.generate (seed + b)"),
    "rm_pairs": Scheme(1, 1, 0, "the pairs drawn from the samples of split `index` (sorted by name) of the "
                                "RM pairs (seed + i)"),
    "rm_pairs_sampling": Scheme(1, 7919, 1, "the SFT policy's samples of split `index` (sorted by name) of the "
                                            "RM pairs (seed + 7919·(i + 1))"),
    "bsr_sampling": Scheme(1, 104729, 1, "the responses of BSR split `index` (seed + 104729·(k + 1))"),
    "r2m_noise": Scheme(1, 1, 1, "R2M's noise-feedback draws, index 0 (seed + 1), apart from its "
                                 "initialisation (seed)"),
}


def derive_seed(base: int, index: int = 0, *, scheme: str) -> int:
    """The seed of stream `scheme` (a key of `SCHEMES`) at `index`, from the seed `base`."""
    try:
        s = SCHEMES[scheme]
    except KeyError:
        raise ValueError(f"seed scheme {scheme!r}: expected one of {sorted(SCHEMES)}") from None
    return int(base) * s.scale + s.stride * (int(index) + s.first)


def text_seed(*parts) -> str:
    """A string seed for `random.Random`: the parts joined by "-" (`text_seed(3, "arith")` is "3-arith")."""
    return "-".join(str(part) for part in parts)


def child_rng(seed: int):
    """A numpy Generator on the first child of `SeedSequence(seed)`: a stream that draws seeded by
    `seed` itself (`default_rng(seed)`) do not share (the routing simulation's stream order)."""
    import numpy as np

    return np.random.default_rng(np.random.SeedSequence(int(seed)).spawn(1)[0])
