"""Paper-scale data: the testbed's four domains filled from Hugging Face datasets instead.

Each domain names a dataset (`datasets.load_dataset` by hub name, or a local file through the
`json`/`csv`/`parquet` builders) and the fields that hold the question, the answer and, for
multiple choice, the options. Records come out in the testbed's own format, so every later stage
(RM pairs, routing, checkers, evaluation) is the same code at both scales:
arith ~ GSM8K (number after '####'), facts_mc ~ MMLU (options + answer index or letter),
facts_yesno ~ StrategyQA (boolean answer), instruct ~ any prompt/reference pair.
"""

from __future__ import annotations

import random
import re

from rmroute.seeding import text_seed
from rmroute.testbed import DOMAINS, OOD_SPLIT, SPLITS

KINDS = {"arith": "number", "facts_mc": "choice", "facts_yesno": "yesno", "instruct": "text"}


def _answer(kind: str, row: dict, spec: dict, options: list[str] | None) -> str:
    value = row[spec["answer_field"]]
    if kind == "number":
        match = re.search(spec.get("answer_regex", r"####\s*(-?[\d,\.]+)"), str(value))
        if not match:
            raise ValueError(f"hf_data: answer {str(value)[:60]!r} does not match answer_regex {spec.get('answer_regex')!r}")
        return " " + match.group(1).replace(",", "").rstrip(".")
    if kind == "choice":
        index = "ABCDEFGH".index(value.strip().upper()) if isinstance(value, str) else int(value)
        return " " + options[index]
    if kind == "yesno":
        truth = value if isinstance(value, bool) else str(value).strip().lower() in ("true", "yes", "1")
        return " yes" if truth else " no"
    return " " + str(value).strip()


def to_record(domain: str, row: dict, spec: dict, rid: str) -> dict:
    """One dataset row as a testbed record: prompt 'Q: ...\\nA:', answer with a leading space."""
    kind = KINDS[domain]
    question = str(row[spec["question_field"]]).strip()
    options = None
    if kind == "choice":
        options = [str(o).strip() for o in row[spec["choices_field"]]]
        question += " " + " ".join(f"({letter}) {o}" for letter, o in zip("ABCDEFGH", options))
    return {"id": rid, "domain": domain, "prompt": f"Q: {question}\nA:", "answer": _answer(kind, row, spec, options),
            "options": options, "meta": "{}"}


def _load(spec: dict, split: str):
    from datasets import load_dataset

    kwargs = {"split": split}
    if spec.get("data_files"):
        kwargs["data_files"] = spec["data_files"]
    return load_dataset(spec["path"], spec.get("name"), **kwargs)


def hf_splits(domains: dict[str, dict], split_sizes: dict[str, int], ood_size: int, seed: int) -> dict[str, list[dict]]:
    """The testbed's splits from datasets: the training splits are disjoint slices of each
    dataset's `split` (shuffled by seed), `test` comes from its `test_split`, `test_ood` from
    `ood_split` when given (else empty)."""
    unknown = sorted(set(domains) - set(DOMAINS))
    if unknown:
        raise ValueError(f"hf_data: unknown domain(s) {unknown}; the domains are {list(DOMAINS)}")
    out: dict[str, list[dict]] = {name: [] for name in (*SPLITS, OOD_SPLIT)}
    for domain, spec in domains.items():
        unique = {str(r[spec["question_field"]]): r for r in _load(spec, spec.get("split", "train"))}
        rows = list(unique.values())  # a repeated question would leak across the disjoint slices
        random.Random(text_seed(seed, domain)).shuffle(rows)
        start = 0
        for split in ("sft", "rm_train", "router_offline", "rollout"):
            take = rows[start : start + split_sizes[split]]
            start += len(take)
            out[split] += [to_record(domain, r, spec, f"{split}-{domain}-{i:05d}") for i, r in enumerate(take)]
        for split, key, size in (("test", "test_split", split_sizes["test"]), (OOD_SPLIT, "ood_split", ood_size)):
            if spec.get(key):
                rows = list(_load(spec, spec[key]))[:size]
                out[split] += [to_record(domain, r, spec, f"{split}-{domain}-{i:05d}") for i, r in enumerate(rows)]
    return out
