"""rmroute.seeding: every derived seed equals the formula the pipeline used before it had one place,
so no stream, and no number downstream of it, moved."""

from __future__ import annotations

import random

import numpy as np
import pytest

from rmroute.seeding import SCHEMES, child_rng, derive_seed, text_seed

OLD = {  # scheme -> the formula it replaced, inline at its call site
    "iteration": lambda seed, i: seed * 1000 + i,  # stages.rollout, stages.train_iteration (run_seed)
    "r2m_update": lambda seed, i: seed * 1000 + i,  # R2M.update's group order
    "score_noise": lambda seed, i: seed * 100003 + i,  # RoutedLabeler.label's ScoreCache
    "vllm_request": lambda seed, i: seed * 100_003 + i,  # backends.prompt_seeds
    "generate_batch": lambda seed, i: seed + i,  # models.generate: seed, then += 1 per batch
    "rm_pairs": lambda seed, i: seed + i,  # stages.build_rm_pairs' pairing
    "rm_pairs_sampling": lambda seed, i: seed + 7919 * (i + 1),  # stages.build_rm_pairs' sampling
    "bsr_sampling": lambda seed, i: seed + 104729 * (i + 1),  # stages.bsr_groups
    "r2m_noise": lambda seed, i: seed + 1,  # R2M's noise generator (index 0 only)
}


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_every_scheme_keeps_its_old_formula(scheme):
    indices = [0] if scheme == "r2m_noise" else [0, 1, 2, 7, 31]
    for seed in (0, 1, 3, 42, 2024, np.int64(5)):
        for i in indices:
            got = derive_seed(seed, i, scheme=scheme)
            assert got == OLD[scheme](int(seed), i) and type(got) is int


def test_an_unknown_scheme_is_refused():
    with pytest.raises(ValueError, match="seed scheme 'nope'"):
        derive_seed(0, 1, scheme="nope")


def test_text_seeds_are_the_old_strings_and_streams():
    seed, it, domain = 3, 2, "arith"
    assert text_seed(seed, domain) == f"{seed}-{domain}"  # stages.iteration_prompts, hf_data
    assert text_seed(seed, it) == f"{seed}-{it}"  # train_iteration's batch order seed
    assert text_seed("batches", text_seed(seed, it)) == "batches-3-2"  # online.training_batches
    assert text_seed("batches", np.int64(4)) == f"batches-{np.int64(4)}"  # the routing simulation's int seeds
    assert text_seed(seed, "careless") == "3-careless" and text_seed(seed, domain, "test") == "3-arith-test"  # testbed
    assert random.Random(text_seed(seed, domain)).random() == random.Random(f"{seed}-{domain}").random()


def test_child_rng_is_the_first_spawned_stream():
    old = np.random.default_rng(np.random.SeedSequence(7).spawn(1)[0]).permutation(50)
    assert np.array_equal(child_rng(7).permutation(50), old)
    assert not np.array_equal(child_rng(7).permutation(50), np.random.default_rng(7).permutation(50))
