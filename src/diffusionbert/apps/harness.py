"""Any diffusionbert model in EleutherAI's lm-evaluation-harness (``diffusionbert lm-eval``).

:class:`DiffusionBertLM` is the harness's ``LM`` for every registered family, registered under the name
``diffusionbert`` when this module is imported. Its three requests:

* ``loglikelihood(context, continuation)``: minus the NLL bound of the continuation given the clean context,
  the bound ``diffusionbert evaluate`` reports (:func:`~diffusionbert.training.bound.nll_bound`), so the exact
  log-likelihood for a family with one (the AR baseline) and the negative ELBO, estimated by Monte Carlo,
  for a diffusion. The continuation is scored as the rest of the text, its end (``[SEP]``) included, as
  ``evaluate`` scores a target. A model trained on pairs reads the context as its source; one trained on
  plain texts keeps the context's tokens unmasked before the continuation (a prefix), where its family can
  condition on one (it can write after a prompt, or its likelihood is exact, which a causal model has for
  any prefix). ``is_greedy`` is exact for an exact likelihood (every continuation token, and the end, is
  the model's argmax given what precedes it) and False for a diffusion, whose bound is not a product of
  per-token choices and whose greedy text depends on the decoder: no honest "greedy" exists to compare to.
* ``loglikelihood_rolling(text)``: minus the bound of the whole text, as ``evaluate`` scores a line of a
  text file (cut to the model's positions, with a warning, as there).
* ``generate_until(context, gen_kwargs)``: the model's pipeline with its saved decoding, the context its
  source (pairs) or prompt (plain texts), the text cut at the first of ``until``; ``max_gen_toks`` shortens
  the generated positions (a diffusion model decodes a window of fixed length; it is never lengthened).

Monte Carlo: each request's bound is the mean of ``mc_draws`` draws of t and x_t, seeded with ``seed`` per
request (a request scores the same whatever its batch or order), taken as :data:`DRAW_GROUPS` network calls
on a batch of ``mc_draws / DRAW_GROUPS`` copies of its sequence. The copies of a call draw their times
stratified (``nll_bound(stratified=True)``: an evenly spaced grid with one random offset, for every family
but the Gaussian Diffusion-LM, whose steps stay independent), so the T-step chains cover their steps, RADD
its mask counts and the continuous-time families their times evenly, which lowers the variance of the
estimate at the same draws. The standard error of each estimate (from the spread of its independent calls)
is kept in :attr:`DiffusionBertLM.stderrs` and logged.
"""

from __future__ import annotations

import logging
import math
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import torch
from lm_eval.api.instance import Instance
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from rich.progress import track
from torch import Tensor

from ..checkpoint import load_model_dir
from ..config import DecodingConfig
from ..data import collate, tokenize_dataset
from ..diffusion.objectives import Objective
from ..errors import ConfigError, DataError, invalid_choice
from ..evaluation.conditional import mbr_select
from ..methods import objective_from_config
from ..sampling import pipeline_for
from ..sampling.pipelines import Conditioning
from ..training.bound import nll_bound
from ..utils.runtime import default_device
from .plans import discussion_section

log = logging.getLogger(__name__)

DRAW_GROUPS = 2
"""Network calls per loglikelihood request, each on ``mc_draws / DRAW_GROUPS`` stratified copies: the fewest
that leave a spread between independent estimates to measure their standard error."""
MODEL_ARGS = (
    "checkpoint",
    "mc_draws",
    "stratified",
    "seed",
    "progress",
    "batch_size",
    "max_batch_size",
    "device",
)
"""The model arguments :class:`DiffusionBertLM` takes (``--model-args k=v,...``; the last three the harness's
own ``--batch_size``/``--device``)."""


@dataclass(frozen=True)
class Score:
    """A request's NLL (bound) in nats, its Monte Carlo standard error (0 when exact) and whether the
    continuation is the model's greedy choice."""

    nats: float
    stderr: float
    greedy: bool


@register_model("diffusionbert")
class DiffusionBertLM(LM):
    """A diffusionbert model directory as the harness's ``LM`` (module doc).

    Args:
        checkpoint: the model directory (a run's ``final/`` or a checkpoint).
        mc_draws: Monte Carlo draws of the bound per request, an even number (ignored by an exact likelihood).
        stratified: draw the copies of a call stratified (default); false draws them independently, as
            training does (to measure what stratifying gains).
        seed: seed of every request's draws (default: the model's decoding seed).
        progress: show a progress bar per request type.
        batch_size: sources decoded per batch by ``generate_until`` (default: the model's decoding's).
        max_batch_size: accepted for the harness and unused.
        device: ``cpu``, ``cuda`` or ``cuda:N`` (default CUDA when present).

    Raises:
        ConfigError: an unknown argument or a value of the wrong kind (one line).
        CheckpointError: the checkpoint is missing or unreadable.
    """

    def __init__(
        self,
        checkpoint: object = None,
        mc_draws: object = 32,
        stratified: object = True,
        seed: object = None,
        progress: object = True,
        batch_size: object = None,
        max_batch_size: object = None,
        device: object = None,
        **unknown: object,
    ) -> None:
        super().__init__()
        if unknown:
            raise invalid_choice("model_args", next(iter(unknown)), MODEL_ARGS)
        if checkpoint is None or checkpoint == "":
            raise ConfigError("model_args: checkpoint=DIR is missing (the model directory to evaluate)")
        self.mc_draws = _integer("mc_draws", mc_draws, "an even integer >= 2")
        if self.mc_draws < DRAW_GROUPS or self.mc_draws % DRAW_GROUPS:
            raise ConfigError(f"mc_draws={mc_draws!r} is not valid; allowed: an even integer >= 2")
        for name, flag in (("progress", progress), ("stratified", stratified)):
            if not isinstance(flag, bool):
                raise ConfigError(f"{name}={flag!r} is not valid; allowed: true, false")
        self.stratified = bool(stratified)
        self.progress = progress
        self.loaded = load_model_dir(str(checkpoint), device=default_device(_optional_str(device)))
        decoding = self.loaded.decoding
        self.seed = decoding.seed if seed is None else _integer("seed", seed, "an integer >= 0")
        self.batch_size = (
            decoding.batch_size
            if batch_size in (None, "auto")
            else _integer("batch_size", batch_size, "an integer >= 1 or auto")
        )
        if self.batch_size < 1 or self.seed < 0:
            raise ConfigError(
                f"batch_size={batch_size!r}, seed={seed!r}: allowed: batch_size >= 1, seed >= 0"
            )
        self.pipe = pipeline_for(self.loaded)
        self.objective = objective_from_config(
            self.loaded.diffusion_cfg, self.loaded.tokenizer.mask_token_id, self.loaded.token_counts
        )
        self.stderrs: list[float] = []
        """The Monte Carlo standard error (nats) of every loglikelihood estimate so far, in request order."""

    # ------------------------------------------------------------------------------------- the requests

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        """Minus the NLL bound of each continuation given its clean context, and whether it is greedy."""
        pairs = [(str(context), str(continuation)) for context, continuation in (r.args for r in requests)]
        scores = self._score(self._conditioned_rows(pairs), "loglikelihood")
        return [(-s.nats, s.greedy) for s in scores]

    def loglikelihood_rolling(self, requests: list[Instance]) -> list[float]:
        """Minus the NLL bound of each whole text, as ``diffusionbert evaluate`` scores a line of a file."""
        if self.loaded.trained_on_pairs:
            raise ConfigError(
                f"{self.loaded.directory} was trained on source/target pairs: it scores a text given a source; "
                "allowed: loglikelihood tasks (a context and a continuation), not loglikelihood_rolling"
            )
        texts = datasets.Dataset.from_dict({"text": [str(r.args[0]) for r in requests]})
        rows = self._tokenized(texts, "texts")
        return [-s.nats for s in self._score(rows, "loglikelihood_rolling")]

    def generate_until(self, requests: list[Instance]) -> list[str]:
        """The model's own decoding of each context, cut at the first of its ``until`` strings: a pair
        model's sources decoded together in batches of ``batch_size`` (as ``generate`` decodes a file), a
        prompted model's contexts one at a time (each its own length)."""
        paired = bool(self.loaded.trained_on_pairs)
        if not paired and "prompt" not in self.pipe.modes:
            raise ConfigError(
                f"{self.loaded.directory} ({self.loaded.method.name}) cannot continue a context: it generates "
                f"from {', '.join(self.pipe.modes) or 'nothing'}; allowed: a model trained on pairs, or one "
                "whose family writes after a prompt"
            )
        calls = [(str(context), dict(gen_kwargs)) for context, gen_kwargs in (r.args for r in requests)]
        if paired:
            return self._generate_sources(calls)
        return [
            self._generate_prompt(context, gen_kwargs)
            for context, gen_kwargs in track(calls, description="generate_until", disable=not self.progress)
        ]

    # -------------------------------------------------------------------------------------- the bound

    def _conditioned_rows(self, pairs: list[tuple[str, str]]) -> list[dict[str, Any]]:
        """Tokenised rows (``input_ids``, ``noise_start``, ``n_words``) of continuations given contexts: a
        pair model's source/target rows, as ``evaluate`` reads pairs; else ``[CLS] context continuation
        [SEP]`` with only the continuation and its end noised, the context cut from its start to fit."""
        if self.loaded.trained_on_pairs:
            sources = datasets.Dataset.from_dict(
                {"source": [c for c, _ in pairs], "target": [t for _, t in pairs]}
            )
            return self._tokenized(sources, "requests")
        method = self.loaded.method
        if any(c for c, _ in pairs) and not (method.exact_likelihood or "prompt" in self.pipe.modes):
            raise ConfigError(
                f"{self.loaded.directory} ({method.name}) was trained on plain texts and cannot condition on a "
                "context; allowed: requests with an empty context"
            )
        tokenizer, limit = self.loaded.tokenizer, self.loaded.model.max_input_length
        rows = []
        for context, continuation in pairs:
            head = tokenizer(context, add_special_tokens=False)["input_ids"]
            tail = tokenizer(continuation, add_special_tokens=False)["input_ids"]
            room = limit - len(tail) - 2
            if room < 0:
                raise DataError(
                    f"a continuation of {len(tail)} tokens does not fit the model's {limit} positions "
                    f"({continuation[:40]!r}...)"
                )
            head = head[max(len(head) - room, 0) :]
            ids = [tokenizer.cls_token_id, *head, *tail, tokenizer.sep_token_id]
            rows.append(
                {"input_ids": ids, "noise_start": 1 + len(head), "n_words": len(continuation.split())}
            )
        return rows

    def _tokenized(self, texts: datasets.Dataset, what: str) -> list[dict[str, Any]]:
        """Rows of ``texts`` tokenised as ``evaluate`` tokenises a file (with its warning on truncation)."""
        loaded = self.loaded
        tokenized = tokenize_dataset(
            texts,
            loaded.tokenizer,
            "sentence",
            loaded.model.max_input_length,
            target_window=loaded.target_window,
            source_cut="start" if loaded.chat else "end",
        )
        if tokenized.num_truncated:
            window = "" if loaded.target_window is None else f" or their {loaded.target_window}-token window"
            print(
                f"warning: {tokenized.num_truncated} of {len(texts)} {what} were longer than the model's "
                f"{loaded.model.max_input_length} positions{window} and are scored truncated, as evaluate "
                "scores them",
                file=sys.stderr,
            )
        return list(tokenized.dataset.select_columns(["input_ids", "noise_start", "n_words"]))

    def _score(self, rows: list[dict[str, Any]], what: str) -> list[Score]:
        """Each row's score (:meth:`_bound`), with the standard errors kept and logged."""
        scores = [self._bound(row) for row in track(rows, description=what, disable=not self.progress)]
        if scores and not self.loaded.method.exact_likelihood:
            errors = [s.stderr for s in scores]
            self.stderrs += errors
            log.info(
                "%s: Monte Carlo standard error of the bound, %d draws: mean %.4f nats, max %.4f (%d requests)",
                what,
                self.mc_draws,
                statistics.fmean(errors),
                max(errors),
                len(errors),
            )
        return scores

    def _bound(self, row: dict[str, Any]) -> Score:
        """The row's NLL bound: ``mc_draws`` (stratified) draws in :data:`DRAW_GROUPS` batches of copies (one
        exact pass for an exact likelihood), through the evaluator's :func:`nll_bound`."""
        exact = self.loaded.method.exact_likelihood
        copies, batches = (1, 1) if exact else (self.mc_draws // DRAW_GROUPS, DRAW_GROUPS)
        tokenizer = self.loaded.tokenizer
        batch = collate([row] * copies, tokenizer.pad_token_id, tokenizer.cls_token_id)
        result = nll_bound(
            self.loaded.model,
            self.objective,
            [batch] * batches,
            seed=self.seed,
            self_prompt=self.loaded.self_prompt,
            stratified=self.stratified,
        )
        tokens = result.n_tokens // (copies * batches)
        nats = result.total_nats / (copies * batches)
        if not math.isfinite(nats):
            raise DataError(
                f"the bound of a request is not finite ({nats}): the model gives a token zero mass"
            )
        if exact:
            return Score(nats, 0.0, self._greedy(batch))
        return Score(nats, result.stderr_per_token * tokens, False)

    @torch.no_grad()
    def _greedy(self, batch: dict[str, Tensor]) -> bool:
        """Whether every scored token of an exact-likelihood model's one-row ``batch`` is its argmax given
        what precedes it (its objective's clean corruption names the positions that predict them)."""
        device = next(self.loaded.model.parameters()).device
        x0, attention = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        corrupted = self.objective.corrupt(x0, batch["noise_mask"].to(device), torch.Generator(device))
        logits = self.loaded.model(x0, attention, t=corrupted.time, positions=corrupted.masked).logits
        return bool((logits.argmax(-1) == x0[:, 1:][corrupted.masked[:, :-1]]).all())

    # ----------------------------------------------------------------------------------- generation

    def _generate_sources(self, calls: list[tuple[str, dict[str, Any]]]) -> list[str]:
        """A pair model's texts for ``(source, gen_kwargs)`` calls: those of one generated length decoded in
        one pipeline call (batches of ``batch_size``), each kept text cut at its stop strings."""
        if not calls:
            return []
        decoding = self._decoding(Conditioning(source=calls[0][0]))
        by_length: dict[int, list[int]] = {}
        for index, (_, gen_kwargs) in enumerate(calls):
            by_length.setdefault(self._length(decoding, gen_kwargs, 0), []).append(index)
        texts = [""] * len(calls)
        for length, indices in by_length.items():
            sources = [calls[i][0] for i in indices]
            out = self.pipe(config=decoding, length=length, source=sources, progress=self.progress)
            k = decoding.num_samples
            for j, index in enumerate(indices):
                texts[index] = _cut(self._kept(out.texts[j * k : (j + 1) * k], decoding), calls[index][1])
        return texts

    def _generate_prompt(self, context: str, gen_kwargs: dict[str, Any]) -> str:
        """One decode after ``context`` as a prompt, without it, cut at the first stop string."""
        decoding = self._decoding(Conditioning(prompt=context))
        prompt_tokens = len(self.loaded.tokenizer(context, add_special_tokens=False)["input_ids"])
        length = max(self._length(decoding, gen_kwargs, prompt_tokens), prompt_tokens + 1)
        out = self.pipe(config=decoding, length=length, prompt=context)
        text = _after_prompt(self._kept(out.texts[: decoding.num_samples], decoding), context)
        return _cut(text, gen_kwargs)

    def _decoding(self, conditioning: Conditioning) -> DecodingConfig:
        """The model's saved decoding for ``conditioning``, with this model's ``batch_size``."""
        return self.pipe.resolve(None, {"batch_size": self.batch_size}, conditioning)

    @staticmethod
    def _length(decoding: DecodingConfig, gen_kwargs: dict[str, Any], prompt_tokens: int) -> int:
        """The generated positions: the decoding's window, shortened (never lengthened) by ``max_gen_toks``."""
        assert decoding.length is not None  # resolved
        if "max_gen_toks" in gen_kwargs:
            return min(decoding.length, prompt_tokens + int(gen_kwargs["max_gen_toks"]))
        return decoding.length

    @staticmethod
    def _kept(samples: list[str], decoding: DecodingConfig) -> str:
        """The text kept of a source's samples: the first, or the MBR choice with ``mbr``."""
        return samples[mbr_select(samples) if decoding.mbr else 0]


def _cut(text: str, gen_kwargs: dict[str, Any]) -> str:
    """``text`` up to the first of the request's ``until`` stop strings."""
    until = gen_kwargs.get("until") or []
    for stop in [until] if isinstance(until, str) else until:
        text = text.split(stop, 1)[0] if stop else text
    return text


def _after_prompt(text: str, prompt: str) -> str:
    """A prompted text without its prompt: the words after the prompt's number of words (the decoded prompt
    is the tokenizer's, lower-cased and split at punctuation, so it is not compared with the given one)."""
    words = len(prompt.split())
    return " ".join(text.split()[words:]) if words else text


def _integer(name: str, value: object, allowed: str) -> int:
    """A model argument that must be an integer (the harness passes "12" as 12 and "x" as "x")."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConfigError(f"{name}={value!r} is not valid; allowed: {allowed}")
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not valid; allowed: {allowed}") from None


def _optional_str(value: object) -> str | None:
    return None if value is None else str(value)


# ------------------------------------------------------------------------------------ the local tasks

TASKS_DIR = Path(__file__).with_name("harness_tasks")
"""The harness task YAMLs shipped with the package (``e2e_choice``, ``e2e_gen``) and their helpers."""
LOCAL_TASKS = tuple(sorted(p.stem for p in TASKS_DIR.glob("*.yaml")))


def task_specs(names: Sequence[str], data_dir: str | Path) -> list[str | dict[str, Any]]:
    """What the harness loads for ``names``: each local task's YAML with its data files moved into
    ``data_dir`` (``data_dir/e2e/test.csv`` for the E2E tasks), any other name as the harness knows it.

    Raises:
        DataError: a local task's data file is missing.
    """
    from lm_eval.tasks._yaml_loader import load_yaml

    specs: list[str | dict[str, Any]] = []
    for name in names:
        if name not in LOCAL_TASKS:
            specs.append(name)
            continue
        config = load_yaml(TASKS_DIR / f"{name}.yaml")
        files = {}
        for split, path in config["dataset_kwargs"]["data_files"].items():
            local = Path(data_dir) / Path(path).parent.name / Path(path).name
            if not local.is_file():
                raise DataError(f"task {name}: data file not found: {local} (set --data-dir)")
            files[split] = str(local)
        config["dataset_kwargs"] = {**config["dataset_kwargs"], "data_files": files}
        specs.append(config)
    return specs


# ------------------------------------------------------------------------------- runs and the report


@dataclass(frozen=True)
class HarnessRun:
    """One model's harness results: the metrics of each task (``results``, the harness's dict), the Monte
    Carlo standard errors of its loglikelihoods (empty for an exact likelihood), and whether its family's
    training draws are independent, so that ``stratified=false`` draws otherwise than the default (a
    continuous-time family draws its times stratified in training too)."""

    checkpoint: str
    objective: str
    results: dict[str, dict[str, Any]]
    stderrs: tuple[float, ...]
    independent_in_training: bool = False

    def mean_stderr(self) -> float | None:
        """The root mean square of the standard errors (a mean of squares, so the typical error is not
        understated by averaging each request's estimate from only :data:`DRAW_GROUPS` calls)."""
        return math.sqrt(statistics.fmean(e * e for e in self.stderrs)) if self.stderrs else None


def run_harness(
    checkpoint: str | Path,
    tasks: Sequence[str],
    *,
    model_args: dict[str, Any] | None = None,
    data_dir: str | Path = "../shared/data",
    limit: int | None = None,
    device: str | None = None,
    batch_size: int | None = None,
    progress: bool = False,
    bootstrap_iters: int = 1000,
) -> HarnessRun:
    """Evaluate one model on harness ``tasks`` (:func:`task_specs`) with :class:`DiffusionBertLM`.

    ``model_args`` are the model's arguments but ``checkpoint`` (``mc_draws``, ``seed``); ``limit`` keeps
    the first N documents of each task; ``bootstrap_iters`` sizes the harness's bootstrap of metric errors.
    """
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    args = {**(model_args or {}), "checkpoint": str(checkpoint), "progress": progress}
    model = DiffusionBertLM.create_from_arg_obj(args, {"device": device, "batch_size": batch_size})
    specs = task_specs(tasks, data_dir)
    local = all(isinstance(spec, dict) for spec in specs)
    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=not local)
    unknown = [s for s in specs if isinstance(s, str) and s not in manager.all_tasks]
    if unknown:
        raise invalid_choice("tasks", unknown[0], LOCAL_TASKS)
    out = simple_evaluate(
        model=model,
        tasks=specs,
        limit=limit,
        task_manager=manager,
        log_samples=False,
        bootstrap_iters=bootstrap_iters,
    )
    assert out is not None  # one process
    bound = type(model.objective.bound_objective)
    return HarnessRun(
        str(checkpoint),
        model.loaded.method.name,
        dict(out["results"]),
        tuple(model.stderrs),
        independent_in_training=bound.corrupt_stratified is not Objective.corrupt_stratified,
    )


def draws_table(
    checkpoint: str | Path, draws: Sequence[int], task: str = "e2e_choice", **options: Any
) -> list[tuple[int, float]]:
    """How the Monte Carlo standard error of a loglikelihood shrinks with the draws: the mean standard
    error over ``task``'s requests at each number of ``draws`` (``options`` as :func:`run_harness`'s)."""
    model_args = dict(options.pop("model_args", None) or {})
    if any(n < DRAW_GROUPS or n % DRAW_GROUPS for n in draws):
        raise ConfigError(f"draws {list(draws)} are not valid; allowed: even integers >= 2")
    rows = []
    for n in draws:
        run = run_harness(checkpoint, [task], model_args={**model_args, "mc_draws": n}, **options)
        error = run.mean_stderr()
        if error is None:
            raise ConfigError(f"{checkpoint} has an exact likelihood: its loglikelihoods draw nothing")
        rows.append((n, error))
    return rows


def report_markdown(
    runs: Sequence[HarnessRun],
    settings: dict[str, Any],
    draws: dict[str, list[tuple[int, float]]],
    page: str | Path | None = None,
) -> str:
    """The results page: one row per model and task metric, the settings, the standard error table, and the
    hand-written discussion of the page at ``page`` (kept when it is regenerated)."""
    lines = [
        "# lm-evaluation-harness on the local E2E tasks",
        "",
        "Regenerated by `make lm-eval` (`diffusionbert lm-eval --report`); see README.md, *Evaluation in "
        "lm-evaluation-harness*. A diffusion model's loglikelihood is minus its NLL bound (negative ELBO) "
        "estimated by Monte Carlo, the AR model's is exact; `e2e_gen` scores each model's own saved decoding "
        "against one reference per MR.",
        "",
        "Settings: " + ", ".join(f"{k} = {v}" for k, v in settings.items()),
        "",
        "| model | objective | task | metric | value | ± |",
        "|---|---|---|---|---|---|",
    ]
    for run in runs:
        for task, metrics in sorted(run.results.items()):
            for key, value in sorted(metrics.items()):
                name, _, kind = key.partition(",")
                if (
                    name.endswith("_stderr")
                    or name in ("alias", "sample_len")
                    or not isinstance(value, int | float)
                ):
                    continue
                error = metrics.get(f"{name}_stderr,{kind}")
                plus = f"{error:.4f}" if isinstance(error, int | float) else ""
                lines.append(
                    f"| {run.checkpoint} | {run.objective} | {task} | {name} | {value:.4f} | {plus} |"
                )
    if draws:
        lines += [
            "",
            "## Monte Carlo standard error of a loglikelihood against the draws",
            "",
            "Root mean square of the standard error (nats) of a request's bound over the `e2e_choice` "
            f"requests, each from its {DRAW_GROUPS} independent calls of draws/{DRAW_GROUPS} copies: stratified "
            "(how the models above are scored), and for the families whose training draws are independent "
            "(the T-step chains, RADD) also so (`stratified=false`), whose error falls as 1/√draws; the "
            "continuous-time families draw stratified times in training too.",
            "",
            "| model | " + " | ".join(f"{n} draws" for n, _ in next(iter(draws.values()))) + " |",
            "|---|" + "---|" * len(next(iter(draws.values()))),
        ]
        lines += [
            f"| {name} | " + " | ".join(f"{e:.4f}" for _, e in rows) + " |" for name, rows in draws.items()
        ]
    if page is not None:
        lines += ["", *discussion_section(Path(page))]
    return "\n".join(lines) + "\n"
