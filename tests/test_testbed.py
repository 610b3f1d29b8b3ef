"""The testbed's checkers grade answers the way a reader would, and its splits are disjoint,
reproducible from the seed, balanced, and solved exactly by their own gold answers."""

from __future__ import annotations

import random
import re
import statistics

import pytest

from rmroute import testbed
from rmroute.testbed import (
    DOMAINS,
    OOD_SPLIT,
    SPLITS,
    check_arith,
    check_choice,
    check_instruct,
    check_yesno,
    corrupt_answer,
    generate_splits,
    gold_score,
    score_record,
)

ALL_SPLITS = (*SPLITS, OOD_SPLIT)
OPTIONS = ["red", "blue", "green", "yellow"]  # gold " blue" is option B


def small_config(seed: int = 0) -> testbed.TestbedConfig:
    return testbed.TestbedConfig(seed=seed, n_entities=40, ood_size=20,
                         split_sizes={"sft": 200, "rm_train": 40, "router_offline": 40, "rollout": 40, "test": 200})


@pytest.fixture(scope="module")
def splits() -> dict[str, list[dict]]:
    return generate_splits(small_config())


# ---------------------------------------------------------------- arithmetic


@pytest.mark.parametrize("response", [" 12", "12", "   12  \n", "Final answer: 12", "The answer is 12.", "12.",
                                      "12 apples", "I think 11, no, 12"])
def test_arith_accepts_the_number_however_written(response):
    assert check_arith(response, " 12") == 1.0


@pytest.mark.parametrize("response, gold", [("-3", " -3"), (" The answer is -3.", "-3"), ("1,200", " 1200"),
                                            ("Final answer: 1,200.", "1200")])
def test_arith_negative_numbers_and_thousands_separators(response, gold):
    assert check_arith(response, gold) == 1.0


@pytest.mark.parametrize("response", ["", "twelve", " 13", "12 or 13", "-12", " 3"])
def test_arith_rejects_other_numbers(response):
    assert check_arith(response, " 12") == 0.0


# ---------------------------------------------------------------- multiple choice


@pytest.mark.parametrize("response", [" blue", "Blue", "blue.", "BLUE", "The answer is blue", "Final answer: blue"])
def test_choice_by_text(response):
    assert check_choice(response, " blue") == 1.0
    assert check_choice(response, " blue", OPTIONS) == 1.0


@pytest.mark.parametrize("response", ["B", " B", "(B)", "B) blue", "B.", "Final answer: B", "The answer is (B)"])
def test_choice_by_letter_with_options(response):
    assert check_choice(response, " blue", OPTIONS) == 1.0


@pytest.mark.parametrize("response", ["A", "(A)", "C) green", "Final answer: D", " red", "green.", "", "   ",
                                      "E", "bluegreen"])
def test_choice_wrong_letter_other_option_or_nothing_scores_zero(response):
    assert check_choice(response, " blue", OPTIONS) == 0.0


def test_choice_letter_needs_the_options():
    assert check_choice("B", " blue") == 0.0


def test_choice_letter_names_the_option_not_a_fixed_text():
    assert check_choice("(A)", " blue", ["blue", "red", "green", "yellow"]) == 1.0
    assert check_choice("(B)", " blue", ["blue", "red", "green", "yellow"]) == 0.0


# ---------------------------------------------------------------- yes / no


@pytest.mark.parametrize("response, gold, expected", [
    ("Yes.", " yes", 1.0), ("yes", "yes", 1.0), (" no", " no", 1.0), (" no", " yes", 0.0), ("No.", " no", 1.0),
    ("yes and no", " yes", 1.0), ("yes and no", " no", 0.0),  # the first word counts
    ("Final answer: no", " no", 1.0),
    ("maybe", " yes", 0.0), ("maybe", " no", 0.0), ("", " yes", 0.0), ("yesterday", " yes", 0.0),
    ("nope", " no", 0.0),
])
def test_yesno(response, gold, expected):
    assert check_yesno(response, gold) == expected


# ---------------------------------------------------------------- instructions (graded)

GOLD_WORDS = " star cup hat road"


@pytest.mark.parametrize("response", [" star cup hat road", "star cup hat road.", "Star Cup Hat Road",
                                      "  star  cup hat road \n", "Final answer: star cup hat road"])
def test_instruct_exact_scores_one(response):
    assert check_instruct(response, GOLD_WORDS) == 1.0


def test_instruct_partial_credit():
    swapped = check_instruct(" cup star hat road", GOLD_WORDS)
    assert 0.0 < swapped < 1.0
    assert swapped == pytest.approx(0.5)
    extra = check_instruct(" star cup hat road bell", GOLD_WORDS)
    assert extra == pytest.approx(4 / 5)  # every gold word right, one extra word penalised
    missing = check_instruct(" star cup hat", GOLD_WORDS)
    assert missing == pytest.approx(3 / 4)
    assert check_instruct(" road hat cup star", GOLD_WORDS) == 0.0


@pytest.mark.parametrize("response", ["", "   ", "\n"])
def test_instruct_empty_scores_zero(response):
    assert check_instruct(response, GOLD_WORDS) == 0.0


def test_gold_score_dispatches_by_domain():
    assert gold_score("arith", " 7", " 7") == 1.0
    assert gold_score("facts_mc", "(B)", " blue", OPTIONS) == 1.0
    assert gold_score("facts_yesno", " no", " no") == 1.0
    assert gold_score("instruct", GOLD_WORDS, GOLD_WORDS) == 1.0
    with pytest.raises(ValueError, match="domain"):
        gold_score("poetry", "x", "x")


# ---------------------------------------------------------------- splits


def test_split_sizes(splits):
    cfg = small_config()
    for split in ALL_SPLITS:
        want = cfg.ood_size if split == OOD_SPLIT else cfg.split_sizes[split]
        for domain in DOMAINS:
            assert sum(r["domain"] == domain for r in splits[split]) == want, (split, domain)


def test_splits_are_pairwise_disjoint(splits):
    prompts = {split: {r["prompt"] for r in splits[split]} for split in ALL_SPLITS}
    for split in ALL_SPLITS:
        assert len(prompts[split]) == len(splits[split]), f"{split} repeats a prompt"
    for i, a in enumerate(ALL_SPLITS):
        for b in ALL_SPLITS[i + 1 :]:
            assert not prompts[a] & prompts[b], f"{a} and {b} share prompts"
    ids = [r["id"] for split in ALL_SPLITS for r in splits[split]]
    assert len(set(ids)) == len(ids)


def test_same_seed_same_splits_other_seed_other_splits(splits):
    again = generate_splits(small_config(seed=0))
    other = generate_splits(small_config(seed=1))
    for split in (*ALL_SPLITS, "facts"):
        assert again[split] == splits[split], split
    for split in ALL_SPLITS:
        assert [r["prompt"] for r in other[split]] != [r["prompt"] for r in splits[split]], split
    assert other["facts"] != splits["facts"]


@pytest.mark.parametrize("seed", [0, 1])
def test_yesno_labels_are_balanced_in_test(seed):
    test = generate_splits(small_config(seed))["test"]
    share_yes = statistics.mean(r["answer"] == " yes" for r in test if r["domain"] == "facts_yesno")
    assert 0.4 <= share_yes <= 0.6, share_yes


def test_yesno_questions_compare_two_stated_counts(splits):
    pattern = re.compile(r"The (\w+) has (\d+) (\w+) and the (\w+) has (\d+) \3\. Does the \1 have more \3\?")
    for record in splits["test"] + splits["rollout"]:
        if record["domain"] != "facts_yesno":
            continue
        first, a, _, second, b = pattern.search(record["prompt"]).groups()
        a, b = int(a), int(b)
        assert first != second and 1 <= min(a, b) and max(a, b) <= 60 and 1 <= abs(a - b) <= 4, record
        assert record["answer"] == (" yes" if a > b else " no"), record
    ood = [r for r in splits["test_ood"] if r["domain"] == "facts_yesno"]
    assert ood and all("Is it true that" in r["prompt"] for r in ood)


def test_gold_answers_score_one_and_corrupted_answers_less(splits):
    rng = random.Random(0)
    for split in ALL_SPLITS:
        for record in splits[split]:
            assert score_record(record, record["answer"]) == 1.0, record
            wrong = corrupt_answer(record["domain"], record["answer"], rng)
            assert score_record(record, wrong) < 1.0, (record, wrong)


def test_choice_records_carry_their_options(splits):
    for record in splits["test"]:
        if record["domain"] == "facts_mc":
            assert record["answer"].strip() in record["options"]
            letter = "ABCDEFGH"[record["options"].index(record["answer"].strip())]
            assert score_record(record, f"({letter})") == 1.0
        else:
            assert record["options"] is None


def test_too_small_prompt_space_is_reported():
    cfg = testbed.TestbedConfig(seed=0, n_entities=4, ood_size=2,
                        split_sizes={"sft": 400, "rm_train": 2, "router_offline": 2, "rollout": 2, "test": 2})
    with pytest.raises(ValueError, match="split_sizes"):
        generate_splits(cfg)


def test_arith_reads_thousands_separators_but_not_lists():
    assert check_arith("The total is 1,234.", "1234") == 1.0
    assert check_arith("1,2", "12") == 0.0  # two numbers, the last is 2


# ---------------------------------------------------------------- careless demonstrations


def _careless_splits(rate: float) -> dict[str, list[dict]]:
    cfg = small_config()
    cfg.careless_rate = rate
    return generate_splits(cfg)


def test_careless_rate_changes_only_the_sft_demonstrations(splits):
    careless = _careless_splits(0.5)
    for split in ALL_SPLITS:
        strip = [{k: v for k, v in r.items() if k != "demonstration"} for r in careless[split]]
        assert strip == [{k: v for k, v in r.items() if k != "demonstration"} for r in splits[split]]
        assert ("demonstration" in careless[split][0]) == (split == "sft")
    assert all(r["demonstration"] == r["answer"] for r in splits["sft"])  # rate 0: every demonstration is gold


def test_careless_demonstrator_takes_each_domains_shortcut():
    every = _careless_splits(1.0)["sft"]
    for r in every:
        prompt, demo = r["prompt"], r["demonstration"]
        if r["domain"] == "arith":
            assert int(demo) == sum(int(n) for n in re.findall(r"\d+", prompt))
        elif r["domain"] == "facts_mc":
            assert demo.strip() == r["options"][0]
        elif r["domain"] == "facts_yesno":
            assert demo == " yes"
        else:
            assert demo.strip() == prompt.removesuffix("\nA:").rsplit(": ", 1)[1]
    # The shortcut is right only where it happens to coincide with the gold answer, so it is a
    # behaviour preference labels can tell apart from the careful one.
    right = {d: statistics.mean(score_record(r, r["demonstration"]) for r in every if r["domain"] == d) for d in DOMAINS}
    assert 0.2 < right["arith"] < 0.6 and 0.1 < right["facts_mc"] < 0.45
    assert 0.35 < right["facts_yesno"] < 0.65 and right["instruct"] < 0.3


def test_careless_share_follows_the_rate():
    sft = _careless_splits(0.3)["sft"]
    shortcut = [r for r in sft if r["domain"] == "instruct"]  # repeating never equals reversing (no palindromes)
    share = statistics.mean(r["demonstration"] != r["answer"] for r in shortcut)
    assert 0.2 < share < 0.4
