"""The embedded testbed: generated tasks in four domains whose answers a checker grades exactly.

Each domain is a small analogue of a benchmark the routing papers use (GSM8K, MMLU, StrategyQA,
instruction following). Everything is generated from one seed, so the same config gives the same
prompts, splits and gold answers on any machine; nothing is downloaded.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field

from rmroute.seeding import text_seed

DOMAINS = ("arith", "facts_mc", "facts_yesno", "instruct")
SPLITS = ("sft", "rm_train", "router_offline", "rollout", "test")
OOD_SPLIT = "test_ood"

ATTRIBUTES = {  # the fact base: every entity has one value of each
    "colour": ("red", "blue", "green", "yellow"),
    "city": ("Oslo", "Lima", "Cairo", "Perth"),
    "pet": ("dog", "cat", "owl", "frog"),
}
NAMES = ("Ann", "Ben", "Cal", "Dee", "Eve", "Fin", "Gus", "Hal", "Ivy", "Jo", "Kim", "Lou")
ITEMS = ("apples", "coins", "books", "cards", "shells", "stamps")
WORDS = (
    "sun", "cat", "tree", "boat", "lamp", "rock", "milk", "door", "fish", "bell", "rain", "leaf",
    "star", "cup", "hat", "road", "bird", "coat", "ring", "sand", "wolf", "corn", "kite", "frog",
)
SYLLABLES = ("ka", "lo", "mi", "zu", "re", "po", "ta", "vi", "ne", "su", "bo", "qi", "da", "fe")


@dataclass
class TestbedConfig:
    """Difficulty knobs and split sizes of the testbed (see config/README.md for each key)."""

    __test__ = False  # not a pytest test class, despite the name

    seed: int = 0  # one seed for everything generated
    arith_max_number: int = 20  # operands are drawn from 1..arith_max_number
    arith_two_step_fraction: float = 0.3  # share of problems with two operations (harder)
    ood_arith_max_number: int = 60  # OOD arithmetic uses longer numbers
    n_entities: int = 200  # size of the generated fact base
    yesno_max_number: int = 60  # yes/no counts are drawn from 1..yesno_max_number (test_ood: twice that)
    yesno_max_gap: int = 4  # the two counts of a yes/no question differ by 1..yesno_max_gap
    mc_options: int = 4  # options per multiple-choice question
    careless_rate: float = 0.0  # share of SFT demonstrations that the careless demonstrator wrote
    reverse_min_words: int = 3  # instruction domain: fewest words to reverse
    reverse_max_words: int = 7  # most words to reverse
    split_sizes: dict = field(
        default_factory=lambda: {"sft": 4000, "rm_train": 400, "router_offline": 200, "rollout": 400, "test": 150}
    )  # prompts per domain in each split
    ood_size: int = 100  # prompts per domain in the OOD test split


# ---------------------------------------------------------------- generators
# Each generator returns (prompt, gold answer, meta); prompts end in "A:" and answers start with
# a space so prompt and answer tokenize on a boundary. The fact domains ask about a generated fact
# base that only the SFT data teaches (knowledge, as MMLU and StrategyQA test it): the policy
# learns facts one by one, which gives graded accuracy rather than a single phase change.
# Each generator also returns, in meta["careless"], what a careless demonstrator answers: it takes
# the domain's shortcut (adds every number, names the first option, says yes, repeats the words in
# the given order), which is right only where the shortcut happens to be. A share
# `careless_rate` of the SFT demonstrations (the record's "demonstration") comes from it, as SFT
# data of mixed quality does, so the SFT policy samples both behaviours and preference labels
# decide which one grows; gold answers and every other split are untouched.


def make_fact_base(n_entities: int, rng: random.Random) -> dict[str, dict[str, str]]:
    """Invented entities (2-3 syllable names) with one value per attribute, so no prior knowledge helps."""
    capacity = len(SYLLABLES) ** 2 + len(SYLLABLES) ** 3
    if n_entities > capacity:
        raise ValueError(f"testbed.n_entities: {n_entities} exceeds the {capacity} distinct names the syllables allow")
    names: set[str] = set()
    while len(names) < n_entities:
        names.add("".join(rng.choice(SYLLABLES) for _ in range(rng.choice((2, 3)))))
    return {name: {attr: rng.choice(values) for attr, values in ATTRIBUTES.items()} for name in sorted(names)}


def gen_arith(rng: random.Random, cfg: TestbedConfig, ood: bool) -> tuple[str, str, dict]:
    hi = cfg.ood_arith_max_number if ood else cfg.arith_max_number
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    a, b = rng.randint(1, hi), rng.randint(1, hi)
    if rng.random() < cfg.arith_two_step_fraction:
        c = rng.randint(1, hi)
        a = max(a, c)  # keep the answer non-negative
        answer = a + b - c
        careless = a + b + c  # the careless demonstrator adds every number it reads
        if ood:
            q = f"At first {name} owns {a} {item}. {name} is given {b}, then loses {c}. How many {item} now?"
        else:
            q = f"{name} has {a} {item}, gets {b} more and gives away {c}. How many {item} does {name} have?"
        steps = 2
    elif rng.random() < 0.5:
        answer = careless = a + b
        if ood:
            q = f"At first {name} owns {a} {item}. {name} is given {b}. How many {item} now?"
        else:
            q = f"{name} has {a} {item} and gets {b} more. How many {item} does {name} have?"
        steps = 1
    else:
        a, b = max(a, b), min(a, b)
        answer, careless = a - b, a + b
        if ood:
            q = f"At first {name} owns {a} {item}. {name} loses {b}. How many {item} now?"
        else:
            q = f"{name} has {a} {item} and gives away {b}. How many {item} does {name} have?"
        steps = 1
    return f"Q: {q}\nA:", f" {answer}", {"steps": steps, "careless": f" {careless}"}


def gen_facts_mc(rng: random.Random, cfg: TestbedConfig, facts: dict, ood: bool) -> tuple[str, str, dict]:
    entity = rng.choice(sorted(facts))
    attribute = rng.choice(sorted(ATTRIBUTES))
    truth = facts[entity][attribute]
    options = [truth] + rng.sample([v for v in ATTRIBUTES[attribute] if v != truth], cfg.mc_options - 1)
    rng.shuffle(options)
    listed = " ".join(f"({letter}) {opt}" for letter, opt in zip("ABCDEFGH", options))
    q = f"Pick one. The {entity} has which {attribute}?" if ood else f"Which {attribute} has the {entity}?"
    # The answer is the option's text (a checker also accepts its letter): recall, not letter lookup,
    # is what this domain measures.
    return f"Q: {q} {listed}\nA:", f" {truth}", {"attribute": attribute, "entity": entity, "options": options,
                                                  "careless": f" {options[0]}"}  # careless: the first option


def gen_facts_yesno(rng: random.Random, cfg: TestbedConfig, facts: dict, ood: bool) -> tuple[str, str, dict]:
    """Yes/no over two facts stated in the prompt: does one entity keep more of a thing than another?

    The answer needs an implicit step (compare two numbers read from the prompt), as StrategyQA's
    answers do, and the skill transfers across prompts, so on-policy training can improve it. The
    counts differ by 1..yesno_max_gap, so the tens digit alone often does not decide.
    """
    first, second = rng.sample(sorted(facts), 2)
    item = rng.choice(ITEMS)
    hi = 2 * cfg.yesno_max_number if ood else cfg.yesno_max_number
    gap = rng.randint(1, cfg.yesno_max_gap)
    small = rng.randint(1, hi - gap)
    yes = rng.random() < 0.5  # balanced labels: choose the label first
    a, b = (small + gap, small) if yes else (small, small + gap)
    if ood:
        q = f"The {second} keeps {b} {item}; the {first} keeps {a}. Is it true that the {first} keeps more?"
    else:
        q = f"The {first} has {a} {item} and the {second} has {b} {item}. Does the {first} have more {item}?"
    return f"Q: {q}\nA:", " yes" if yes else " no", {"gap": gap, "careless": " yes"}  # careless: always agrees


def gen_instruct(rng: random.Random, cfg: TestbedConfig, ood: bool) -> tuple[str, str, dict]:
    lo, hi = cfg.reverse_min_words, cfg.reverse_max_words
    if ood:
        lo, hi = hi, hi + 2
    words = rng.sample(WORDS, rng.randint(lo, hi))
    verb = "Say these words backwards" if ood else "Reverse the words"
    # careless: repeats the words in the order given
    return (f"Q: {verb}: {' '.join(words)}\nA:", " " + " ".join(reversed(words)),
            {"n_words": len(words), "careless": " " + " ".join(words)})


# ---------------------------------------------------------------- checkers

_INT = re.compile(r"-?\d+")
_THOUSANDS = re.compile(r"\d{1,3}(?:,\d{3})+")  # "1,234" is one number; "1,2" stays two
_FINAL = re.compile(r"(?:final answer|answer)\s*(?:is|:)?\s*", re.IGNORECASE)


def _strip_answer_prefix(text: str) -> str:
    """Drop a leading 'Final answer:' / 'The answer is' so checkers see only the answer."""
    text = text.strip()
    match = None
    for match in _FINAL.finditer(text):
        pass
    return text[match.end():] if match else text


def check_arith(response: str, gold: str) -> float:
    """1 if the last integer in the response equals the gold number, else 0."""
    numbers = _INT.findall(_THOUSANDS.sub(lambda m: m.group(0).replace(",", ""), response))
    return float(bool(numbers) and int(numbers[-1]) == int(gold))


def check_choice(response: str, gold: str, options: list[str] | None = None) -> float:
    """1 if the answer names the gold option, by its text or, given the options, by its letter
    ("blue", "(B)", "B) blue", "Final answer: B"); a wrong letter or another option scores 0."""
    text = _strip_answer_prefix(response)
    letter = re.match(r"\s*\(?([A-H])\)(?:\s|$)|\s*([A-H])(?:[.)]|\s|$)", text)
    if letter and options:
        index = "ABCDEFGH".index(letter.group(1) or letter.group(2))
        return float(index < len(options) and options[index].lower() == gold.strip().lower())
    words = re.findall(r"[A-Za-z]+", text.lower())
    return float(bool(words) and words[0] == gold.strip().lower())


def check_yesno(response: str, gold: str) -> float:
    """1 if the response's first word is the gold yes/no, else 0."""
    text = _strip_answer_prefix(response).lower()
    match = re.match(r"\s*(yes|no)\b", text)
    return float(bool(match) and match.group(1) == gold.strip().lower())


def check_instruct(response: str, gold: str) -> float:
    """Graded 0..1: share of gold word positions matched, penalised for extra words."""
    got = _strip_answer_prefix(response).lower().replace(".", " ").split()
    want = gold.lower().split()
    hits = sum(g == w for g, w in zip(got, want))
    return hits / max(len(want), len(got))


CHECKERS = {"arith": check_arith, "facts_mc": check_choice, "facts_yesno": check_yesno, "instruct": check_instruct}


def gold_score(domain: str, response: str, gold: str, options: list[str] | None = None) -> float:
    """Exact gold score of a response in [0, 1]; the one place correctness is decided."""
    if domain not in CHECKERS:
        raise ValueError(f"unknown domain {domain!r}; expected one of {DOMAINS}")
    if domain == "facts_mc":
        return check_choice(response, gold, options)
    return CHECKERS[domain](response, gold)


def score_record(record: dict, response: str) -> float:
    """Gold score of a response to a testbed record (prompt, answer, options)."""
    return gold_score(record["domain"], response, record["answer"], record.get("options"))


def _attribute_of(value: str) -> str:
    return next(a for a, values in ATTRIBUTES.items() if value.strip() in values)


def corrupt_answer(domain: str, gold: str, rng: random.Random) -> str:
    """A plausible wrong answer, used when every policy sample has the same gold score."""
    if domain == "arith":
        return f" {int(gold) + rng.choice([-2, -1, 1, 2, 10])}"
    if domain == "facts_mc":
        return " " + rng.choice([v for v in ATTRIBUTES[_attribute_of(gold)] if v != gold.strip()])
    if domain == "facts_yesno":
        return " no" if gold.strip() == "yes" else " yes"
    words = gold.split()
    i, j = rng.sample(range(len(words)), 2)
    words[i], words[j] = words[j], words[i]
    return " " + " ".join(words)


# ---------------------------------------------------------------- splits


def generate_splits(cfg: TestbedConfig) -> dict[str, list[dict]]:
    """All splits as lists of records {id, domain, prompt, answer, meta}; prompts never repeat across splits."""
    facts = make_fact_base(cfg.n_entities, random.Random(cfg.seed))
    rng = random.Random()

    def draw(domain: str, ood: bool) -> tuple[str, str, dict]:
        if domain == "arith":
            return gen_arith(rng, cfg, ood)
        if domain == "facts_mc":
            return gen_facts_mc(rng, cfg, facts, ood)
        if domain == "facts_yesno":
            return gen_facts_yesno(rng, cfg, facts, ood)
        return gen_instruct(rng, cfg, ood)

    seen: set[str] = set()
    out: dict[str, list[dict]] = {name: [] for name in (*SPLITS, OOD_SPLIT)}
    demonstrator = random.Random(text_seed(cfg.seed, "careless"))
    # Held-out splits are drawn first so that the large SFT split cannot exhaust small prompt spaces
    # of the evaluation sets; SFT then takes what is left, deduplicated.
    order = ["test", "rollout", "router_offline", "rm_train", "sft"]
    for domain in DOMAINS:
        for split in [OOD_SPLIT, *order]:
            want = cfg.ood_size if split == OOD_SPLIT else cfg.split_sizes[split]
            # One stream per (domain, split): resizing one split leaves the others' draws as they were.
            rng.seed(text_seed(cfg.seed, domain, split))
            drawn, tries = 0, 0
            while drawn < want:
                tries += 1
                if tries > 50 * want + 1000:
                    raise ValueError(
                        f"testbed: cannot draw {want} distinct {domain!r} prompts for split {split!r}; "
                        "lower testbed.split_sizes or raise the domain's difficulty knobs"
                    )
                prompt, answer, meta = draw(domain, split == OOD_SPLIT)
                if prompt in seen:
                    continue
                seen.add(prompt)
                rid = f"{split}-{domain}-{drawn:05d}"
                careless = meta.pop("careless")
                record = {"id": rid, "domain": domain, "prompt": prompt, "answer": answer,
                          "options": meta.pop("options", None), "meta": json.dumps(meta)}
                if split == "sft":
                    # Who wrote this demonstration is drawn from its own stream, so the rate leaves
                    # the prompts of every split as they were.
                    record["demonstration"] = careless if demonstrator.random() < cfg.careless_rate else answer
                out[split].append(record)
                drawn += 1
    out["facts"] = [{"entity": e, **attrs} for e, attrs in facts.items()]
    return out
