"""The policy's stages: testbed data, SFT, rollouts and greedy evaluation."""

from __future__ import annotations

import copy
import os
import pickle
import queue
import random
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd

from rmroute import models
from rmroute.io import read_jsonl, write_jsonl, write_table
from rmroute.seeding import derive_seed, text_seed
from rmroute.testbed import DOMAINS, TestbedConfig, generate_splits, score_record


def prepare_data(testbed: dict, seed: int, out_dir: str | os.PathLike, hf_data: dict | None = None) -> None:
    """The testbed's splits, generated, or filled from Hugging Face datasets at paper scale."""
    if hf_data:
        from rmroute.hf_data import hf_splits

        splits = {**hf_splits(hf_data, testbed["split_sizes"], testbed.get("ood_size", 0), seed), "facts": []}
    else:
        splits = generate_splits(TestbedConfig(seed=seed, **testbed))
    for name, records in splits.items():
        write_jsonl(records, Path(out_dir) / f"{name}.jsonl")


def band_margin(accuracy: dict[str, float], band: tuple[float, float]) -> float:
    """How deep inside [lo, hi] the worst domain lies (negative when some domain is outside)."""
    lo, hi = band
    return min(min(a - lo, hi - a) for a in accuracy.values())


def train_sft_policy(sft_path: str, policy: dict, sft, seed: int, threads: int, device: str, out_dir: str,
                     val_path: str | None = None, selection_path: str | None = None, max_new_tokens: int = 24,
                     select_worker: bool = False) -> None:
    """Tokenizer + tiny Llama (policy.source = build) or an existing causal LM, then SFT with the
    settings `sft` (`rmroute.settings.SFT`, or its `params()` dict; omitted keys take its defaults).

    With `sft.select: band` the policy is evaluated (greedy, per domain) on the validation prompts
    every `sft.select_every` steps and the checkpoint whose worst domain lies deepest inside
    `sft.band` is kept. Where each domain's accuracy rises during training moves with the
    floating-point details of the machine; choosing the step on held-out prompts keeps every
    domain's starting point in the band on any machine, where a fixed step count does not. The test split is never read here; greedy answers
    are cut at `max_new_tokens`, as in the evaluation.

    With `select_worker` (CPU only) the checkpoints are evaluated in a second process on a spare
    core while training goes on (`SelectionWorker`), instead of pausing training for each: the
    same greedy answers from the same weights, so the same checkpoint is kept, and the selection
    leaves the job's critical path.
    """
    import torch

    from rmroute.settings import SFT
    from rmroute.sft import train_sft

    sft = SFT.from_params(sft)
    models.set_threads(threads)
    models.set_seed(seed)
    records = read_jsonl(sft_path)
    model, tokenizer = models.initial_policy(policy, [r["prompt"] + r["answer"] + r.get("demonstration", "") for r in records], device)
    select = sft.select
    if select == "band" and not val_path:
        raise ValueError("sft.select: band needs validation prompts (val_path)")
    val = read_jsonl(val_path) if select == "band" else []
    rows: list[dict] = []
    best: dict = {"margin": float("-inf"), "step": 0, "state": None}
    band = tuple(sft.band)

    def record(step: int, accuracy: dict[str, float], state) -> None:
        """One evaluated checkpoint, in step order; `state()` gives its weights if it is kept."""
        margin = band_margin(accuracy, band)
        rows.extend({"step": step, "domain": d, "accuracy": a, "margin": margin} for d, a in accuracy.items())
        print(f"SFT step {step}: " + " ".join(f"{d} {a:.3f}" for d, a in accuracy.items()) + f" (margin {margin:+.3f})", flush=True)
        if margin > best["margin"]:  # the earliest checkpoint of the deepest margin
            best.update(margin=margin, step=step, state=state())

    worker = SelectionWorker(tokenizer, val, max_new_tokens, threads) if select == "band" and select_worker and device == "cpu" else None
    last: dict = {"step": None}  # the last step evaluated (or sent to the worker)

    def evaluate(step: int, current) -> None:
        last["step"] = step
        if worker is not None:  # a snapshot to the worker; results come back in step order
            for done in worker.submit(step, current):
                record(*done)
            return
        rng = torch.get_rng_state()  # greedy decoding must not move the training's random stream
        accuracy = validation_accuracy(current, tokenizer, val, max_new_tokens)
        torch.set_rng_state(rng)
        record(step, accuracy, lambda: _snapshot(current))

    if sft.steps > 0:
        every = int(sft.select_every) if select == "band" else 0
        train_sft(model, tokenizer, records, steps=sft.steps, batch_size=sft.batch_size, lr=sft.lr,
                  warmup_steps=sft.warmup_steps, seed=seed, mix=sft.mix, use_cpu=device == "cpu",
                  max_length=int(policy.get("max_length", 256)),
                  eval_every=every, eval_fn=evaluate if every else None)
    if select == "band":
        if last["step"] != sft.steps:
            evaluate(sft.steps, model.eval())
        if worker is not None:
            for done in worker.drain():
                record(*done)
            worker.close()
            # Greedy decoding here would have left the tokenizer's backend in its padded-batch state,
            # which save_pretrained writes into tokenizer.json; leave the same state, so the saved
            # policy has the same bytes whichever process evaluated the checkpoints.
            tokenizer([val[0]["prompt"]], padding=True, add_special_tokens=False)
        model.load_state_dict(best["state"])
        print(f"SFT: kept step {best['step']} of {sft.steps} (worst domain {best['margin']:+.3f} inside the band {band})")
    if selection_path:
        table = pd.DataFrame(rows, columns=["step", "domain", "accuracy", "margin"])
        table["selected"] = table["step"] == best["step"] if select == "band" else False
        write_table(table, selection_path)
    models.save_atomic(model.eval(), tokenizer, out_dir)


def _snapshot(model) -> dict:
    """A copy of the model's weights as they are now."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def validation_accuracy(policy, tokenizer, records: list[dict], max_new_tokens: int) -> dict[str, float]:
    """Greedy accuracy per domain of `policy` on `records` (the SFT band selection's measure)."""
    from rmroute.evaluate import evaluation_table, greedy_outputs

    table = evaluation_table(records, greedy_outputs(policy, tokenizer, records, max_new_tokens), None)
    return dict(zip(table["domain"], table["value"].astype(float)))


def _selection_worker_main() -> None:
    """The worker process of `SelectionWorker` (`python -c`): read the model and the evaluation's
    settings, then one snapshot at a time from stdin (pickles), and write each snapshot's
    `(step, accuracy)` to stdout, in order; a None ends it. Anything else it prints goes to stderr."""
    results = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # progress bars and prints: to the job's log, never into the result stream
    source = os.fdopen(0, "rb")
    model, tokenizer, records, max_new_tokens, threads = pickle.load(source)
    models.set_threads(threads)
    model.eval()
    while (job := pickle.load(source)) is not None:
        step, state = job
        model.load_state_dict(state)
        pickle.dump((step, validation_accuracy(model, tokenizer, records, max_new_tokens)), results)
        results.flush()


class SelectionWorker:
    """SFT checkpoints evaluated greedily in a second process while training goes on.

    `submit(step, model)` sends a copy of the weights and keeps it until its result is back (at
    most `pending` at a time: a full queue waits for the oldest result, so memory stays bounded);
    it returns the results that are back, each as `(step, accuracy, state)`, in step order, with
    `state()` the weights of that step. `drain()` waits for every result. The worker (a fresh
    interpreter, so nothing of the calling script runs again in it) holds a copy of the model,
    loads each snapshot's weights into it and runs the same greedy decoding with the same thread
    count, so its answers are those the training process would give.
    """

    def __init__(self, tokenizer, records: list[dict], max_new_tokens: int, threads: int, pending: int = 2):
        self._args = (tokenizer, records, max_new_tokens, threads)
        self._pending: dict[int, dict] = {}
        self._order: list[int] = []
        self._limit = max(1, pending)
        self._process = None

    def _start(self, model) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-c", "from rmroute.stages.policy import _selection_worker_main; _selection_worker_main()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._results: queue.Queue = queue.Queue()

        def read() -> None:  # the worker's answers, as they come
            try:
                while True:
                    self._results.put(pickle.load(self._process.stdout))
            except (EOFError, OSError) as error:
                self._results.put(error)

        threading.Thread(target=read, daemon=True).start()
        self._send((copy.deepcopy(model).cpu().eval(), *self._args))

    def _send(self, message) -> None:
        pickle.dump(message, self._process.stdin)
        self._process.stdin.flush()

    def _collect(self, block: bool) -> list:
        done = []
        while self._order:
            try:
                answer = self._results.get(timeout=600) if block else self._results.get_nowait()
            except queue.Empty:
                if block:
                    raise RuntimeError("the SFT selection worker sent no result for 10 minutes") from None
                break
            if isinstance(answer, Exception):
                raise RuntimeError(f"the SFT selection worker stopped (exit code {self._process.poll()}); "
                                   "its traceback is in the job's log") from answer
            step, accuracy = answer
            if step != self._order[0]:
                raise RuntimeError(f"SFT selection worker answered step {step}, expected {self._order[0]}")
            self._order.pop(0)
            state = self._pending.pop(step)
            done.append((step, accuracy, lambda state=state: state))
            block = block and len(self._order) > self._limit
        return done

    def submit(self, step: int, model) -> list:
        if self._process is None:
            self._start(model)
        state = _snapshot(model)
        self._pending[step] = state
        self._order.append(step)
        self._send((step, state))
        return self._collect(block=len(self._order) > self._limit)

    def drain(self) -> list:
        done = []
        while self._order:
            done += self._collect(block=True)
        return done

    def close(self) -> None:
        if self._process is not None:
            self._send(None)
            self._process.stdin.close()
            try:
                self._process.wait(timeout=60)
            except Exception:
                self._process.kill()
            self._process = None


def evaluate_policy(policy_dir: str, test_path: str, max_new_tokens: int, threads: int, device: str,
                    out_tsv: str, sft_outputs: str | None = None, out_outputs: str | None = None) -> pd.DataFrame:
    """Greedy test accuracy per domain (+ win rate vs SFT when SFT outputs are given)."""
    return evaluate_policies([policy_dir], test_path, max_new_tokens, threads, device, [out_tsv], sft_outputs=sft_outputs,
                             out_outputs=[out_outputs] if out_outputs else None)[0]


def evaluate_policies(policy_dirs: list[str], test_path: str, max_new_tokens: int, threads: int, device: str,
                      out_tsvs: list[str], sft_outputs: str | None = None,
                      out_outputs: list[str] | None = None, validation_path: str | None = None,
                      out_validation_tsvs: list[str] | None = None) -> list[pd.DataFrame]:
    """`evaluate_policy` for several policies in one process (one run's iterations): the test
    split, the SFT outputs and the libraries are loaded once instead of once per policy.

    With `validation_path`, each loaded policy is also evaluated greedily on those prompts
    (accuracy per domain, the same table layout without win rates) into `out_validation_tsvs`:
    the accuracy that choices such as the best single RM are made on, never the test split's."""
    from rmroute.evaluate import evaluation_table, greedy_outputs

    if len(policy_dirs) != len(out_tsvs):
        raise ValueError(f"{len(policy_dirs)} policies but {len(out_tsvs)} output tables")
    if (validation_path is None) != (out_validation_tsvs is None):
        raise ValueError(f"validation_path ({validation_path!r}) and out_validation_tsvs ({out_validation_tsvs!r}) "
                         "go together")
    if out_validation_tsvs is not None and len(out_validation_tsvs) != len(policy_dirs):
        raise ValueError(f"{len(policy_dirs)} policies but {len(out_validation_tsvs)} validation tables")
    models.set_threads(threads)
    records = read_jsonl(test_path)
    validation = read_jsonl(validation_path) if validation_path else None
    base = [r["output"] for r in read_jsonl(sft_outputs)] if sft_outputs else None
    tables = []
    for i, (policy_dir, out_tsv) in enumerate(zip(policy_dirs, out_tsvs)):
        policy, tokenizer = models.load_policy(policy_dir, device=device), models.load_tokenizer(policy_dir)
        outputs = greedy_outputs(policy, tokenizer, records, max_new_tokens)
        tables.append(evaluation_table(records, outputs, base))
        write_table(tables[-1], out_tsv)
        if out_outputs:
            write_jsonl([{"id": r["id"], "output": o} for r, o in zip(records, outputs)], out_outputs[i])
        if validation is not None:
            write_table(evaluation_table(validation, greedy_outputs(policy, tokenizer, validation, max_new_tokens), None),
                        out_validation_tsvs[i])
    return tables


def of_domains(rows: list[dict], domains) -> list[dict]:
    """The rows (prompts or rollout groups) of `domains`, a method's `domains`; empty or None = every domain."""
    return [r for r in rows if not domains or r["domain"] in domains]


def iteration_prompts(records: list[dict], prompts_per_iteration: int, seed: int, it: int) -> list[dict]:
    """The prompts of iteration `it` for run seed `seed`: equal share per domain, disjoint across
    iterations, the same for every method (so methods are compared on the same prompts)."""
    per_domain = prompts_per_iteration // len(DOMAINS)
    chosen = []
    for domain in DOMAINS:
        pool = sorted((r for r in records if r["domain"] == domain), key=lambda r: r["id"])
        random.Random(text_seed(seed, domain)).shuffle(pool)
        chosen += pool[(it - 1) * per_domain : it * per_domain]
    return chosen


def rollout(policy_dir: str, rollout_path: str, budget: dict, seed: int, it: int, threads: int, device: str, out_path: str,
            backend: dict | None = None, domains: list[str] | None = None) -> None:
    """n samples per prompt from the current policy, with their gold scores (analysis only).

    `budget` needs prompts_per_iteration, samples_per_prompt, temperature and max_new_tokens;
    `backend` is the config's `rollout:` block (rmroute.backends): transformers or vLLM sampling.
    `domains` (a method's `domains`) keeps only those domains' prompts; empty or None = every domain."""
    from rmroute import backends

    models.set_threads(threads)
    records = iteration_prompts(read_jsonl(rollout_path), budget["prompts_per_iteration"], seed, it)
    records = of_domains(records, domains)
    prompts = [r["prompt"] for r in records]
    sampling = dict(n=budget["samples_per_prompt"], temperature=budget["temperature"], max_new_tokens=budget["max_new_tokens"],
                    seed=derive_seed(seed, it, scheme="iteration"))
    if backends.settings(backend)["backend"] == "vllm":
        samples = backends.vllm_generate(policy_dir, prompts, block=backend, **sampling)
    else:
        samples = models.generate(models.load_policy(policy_dir, device=device), models.load_tokenizer(policy_dir), prompts,
                                  progress=True, **sampling)
    write_jsonl([{**r, "responses": group, "gold": [score_record(r, s) for s in group]} for r, group in zip(records, samples)],
                out_path)
