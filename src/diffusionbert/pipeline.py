"""Text generation: :func:`denoise`, the one denoising loop that calls the network, and the pipeline around it.

Python API::

    pipe = DiffusionPipeline.from_pretrained("runs/demo/final")
    out = pipe(num_samples=4, length=32, steps=64, sampler="cached")
    print(out.texts)

Sequences use the training layout ``[CLS] x_1 … x_L``: position 0 is kept and positions 1..L are generated
from all-[MASK]; a generated ``[SEP]`` ends the text. Conditioning goes through the same loop by fixing
tokens: a ``prompt`` right after ``[CLS]``, an ``infill`` template whose ``[MASK]`` placeholders are the only
generated positions, or a seq2seq ``source`` in the pair layout ``[CLS] source [SEP] target …`` where only
the target is generated. Each sample draws from its own generator (derived from ``seed`` and its index), so
results do not depend on ``batch_size``. With a time-agnostic model (``time_conditioning='none'``) a row's
logits are reused while its x_t is unchanged, and NFE counts only real network calls.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.progress import Progress
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from .checkpoint import LoadedModel, load_model_dir
from .errors import ConfigError
from .modeling import DiffusionBertForMaskedLM
from .objectives import Objective, objective_from_config
from .samplers import Generators, Prediction, Sampler, StepInput, Time, build_sampler

Denoiser = Callable[[Tensor, Tensor, Tensor], Tensor]
"""(x_t [b, L], time input [b], positions [b, L] bool) → logits [n, V] at the positions, row-major."""


@dataclass(frozen=True)
class DenoiseResult:
    """Final tokens [B, L], network calls per row [B], and every state [B, K + 1, L] when asked for."""

    tokens: Tensor
    nfe: Tensor
    trajectory: Tensor | None


def denoise(
    denoiser: Denoiser,
    x: Tensor,
    sampler: Sampler,
    timesteps: Sequence[tuple[Time, Time]],
    generator: Generators,
    *,
    generated: Tensor,
    noise_mask: Tensor | None = None,
    cache: bool = False,
    return_trajectory: bool = False,
    advance: Callable[[int], None] | None = None,
) -> DenoiseResult:
    """Walk ``timesteps`` from x (``generated`` [B, L] positions set to [MASK]) to clean tokens.

    Each iteration calls ``denoiser`` on the rows that still have masked positions, only at those positions,
    and lets ``sampler`` draw x_s. What the sampler derives from the logits alone (:meth:`Sampler.prepare`)
    is computed once per call and kept per position in a :class:`Prediction`. With ``cache`` (exact only for
    a time-agnostic network) a row whose x_t did not change since its last call reuses it instead of a
    call, so such a step costs no O(V) work per masked position.

    Every row keeps its own clock (steps taken). Rows advance together, one step per iteration, unless
    ``cache`` is on, the sampler can jump (:meth:`AncestralSampler.jump`) and every row has its own
    generator: then each row jumps over the steps where its x_t stays the same, straight to its next change,
    and the rows that changed are called together in one batch, whatever step each is at. The draws are
    the stepping loop's, so the samples are identical; only the network calls are batched better. A row
    stops once nothing in it is masked (samplers leave such a state unchanged). ``noise_mask`` (default
    ``generated``) is the sentence's noisable positions as in training; ``advance(n)`` reports n more steps
    done by the slowest row.
    """
    mask_id, num_steps, batch = sampler.mask_id, len(timesteps), x.shape[0]
    noise_mask = generated if noise_mask is None else noise_mask
    x = x.masked_fill(generated, mask_id)
    scores = torch.zeros(x.shape, dtype=torch.float64, device=x.device)
    nfe = torch.zeros(batch, dtype=torch.long, device=x.device)
    clock = [0] * batch  # steps taken by each row
    jumping = cache and sampler.can_jump and not isinstance(generator, torch.Generator)
    trajectory = x.unsqueeze(1).repeat(1, num_steps + 1, 1) if return_trajectory else None
    prediction = Prediction(x.shape)  # the sampler's prepared logits, valid where x_t is unchanged
    changed = torch.ones(batch, dtype=torch.bool, device=x.device)  # since the row's last call
    reported = 0
    while True:
        masked = generated & (x == mask_id)
        active = masked.any(-1) & torch.tensor([c < num_steps for c in clock], device=x.device)
        if not active.any():
            break
        need = active & changed if cache else active
        if need.any():
            nfe += need.long()
            times = [sampler.time_input(timesteps[clock[b]][0]) for b in need.nonzero()[:, 0].tolist()]
            time = torch.tensor(times, dtype=torch.float32, device=x.device)
            called = masked & need.unsqueeze(-1)
            prediction.write(called, sampler.prepare(denoiser(x[need], time, masked[need])))
        before, started = x, list(clock)
        if jumping:
            x, scores = x.clone(), scores.clone()
            for b in active.nonzero()[:, 0].tolist():
                rows = slice(b, b + 1)
                t, s = timesteps[clock[b]]
                inp = StepInput(
                    None, x[rows], masked[rows], generated[rows], noise_mask[rows], scores[rows],
                    t, s, clock[b], num_steps, prediction.row(b),
                )  # fmt: skip
                taken, (x[rows], scores[rows]) = sampler.jump(inp, timesteps, generator[b])
                clock[b] += taken
        else:  # every row that is not finished is at the same step
            index = clock[int(active.nonzero()[0, 0])]
            t, s = timesteps[index]
            inp = StepInput(
                None, x, masked, generated, noise_mask, scores, t, s, index, num_steps, prediction
            )
            x, scores = sampler.step(inp, generator)
            clock = [index + 1] * batch
        changed = (x != before).any(-1)
        if trajectory is not None:
            for b, (start, stop) in enumerate(zip(started, clock, strict=True)):
                trajectory[b, start + 1 : stop] = before[b]  # steps jumped over: unchanged
                trajectory[b, stop] = x[b]
        slowest = min(c for c, a in zip(clock, active.tolist(), strict=True) if a)
        if advance is not None and slowest > reported:
            advance(slowest - reported)
            reported = slowest
    if advance is not None and reported < num_steps:
        advance(num_steps - reported)
    if trajectory is not None:
        for b, start in enumerate(clock):  # steps after a row's end leave it as it is
            trajectory[b, start + 1 :] = x[b]
    return DenoiseResult(x, nfe, trajectory)


@dataclass(frozen=True)
class SampleOutput:
    """Generated texts and their token ids.

    ``token_ids`` [N, S] are the whole final sequences (``[CLS]``, conditioning, and tokens after the cut);
    ``lengths`` the number of text tokens before the first generated ``[SEP]``; ``nfe`` the network calls
    per sample; ``trajectories`` [N, K + 1, S] every state from all-[MASK] to the end, when asked for.
    """

    texts: list[str]
    token_ids: Tensor
    lengths: list[int]
    nfe: list[int]
    trajectories: Tensor | None = None


@dataclass(frozen=True)
class _Layout:
    """One sequence template [S]: ids with [MASK] where generated, the generated and noisable positions,
    where the text starts, and from where a generated [SEP] cuts it (after every given token)."""

    ids: Tensor
    generated: Tensor
    noise_mask: Tensor
    text_start: int
    cut_from: int


def check_sample_request(num_samples: int, batch_size: int, seed: int) -> None:
    """Reject a sample count, batch size or seed that no sampler can honour (one-line errors)."""
    for name, value in (("num_samples", num_samples), ("batch_size", batch_size)):
        if value < 1:
            raise ConfigError(f"{name}={value} is not valid; allowed: {name} >= 1")
    if seed < 0:
        raise ConfigError(f"seed={seed} is not valid; allowed: seed >= 0")


def sample_generator(seed: int, index: int, device: torch.device) -> torch.Generator:
    """The generator of sample ``index`` under ``seed``: the same whichever batch the sample falls in."""
    state = np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator(device=device).manual_seed(int(state))


class DiffusionPipeline:
    """A trained denoiser, its tokenizer and objective, ready to generate text with any sampler."""

    def __init__(
        self,
        model: DiffusionBertForMaskedLM,
        tokenizer: PreTrainedTokenizerBase,
        objective: Objective,
        device: torch.device | str | None = None,
        use_cache: bool = True,
    ) -> None:
        """``use_cache=False`` turns off logits reuse for time-agnostic models (a reference for benchmarks)."""
        if objective.mask_id != tokenizer.mask_token_id:
            raise ConfigError(
                f"objective mask_id={objective.mask_id} differs from the tokenizer's mask_token_id="
                f"{tokenizer.mask_token_id}; allowed: the same [MASK] id in both"
            )
        if tokenizer.cls_token_id is None or tokenizer.sep_token_id is None:
            raise ConfigError(
                f"tokenizer {tokenizer.name_or_path!r} has no [CLS]/[SEP] token; allowed: a BERT-family one"
            )
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.objective = objective
        self.use_cache = use_cache

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, device: torch.device | str | None = None
    ) -> DiffusionPipeline:
        """Load a model directory (or a run directory with ``final/``) written by training."""
        return cls.from_loaded(load_model_dir(directory, device), device)

    @classmethod
    def from_loaded(cls, loaded: LoadedModel, device: torch.device | str | None = None) -> DiffusionPipeline:
        """The pipeline of an already loaded model directory, with the objective its settings describe."""
        objective = objective_from_config(
            loaded.diffusion_cfg, loaded.tokenizer.mask_token_id, loaded.token_counts
        )
        return cls(loaded.model, loaded.tokenizer, objective, device)

    @property
    def time_conditioning(self) -> str:
        """The model's time input: ``none`` (time-agnostic, logits cacheable), ``prefix_token`` or ``layerwise``."""
        return getattr(self.model.config, "time_conditioning", "none")

    @torch.inference_mode()
    def __call__(
        self,
        num_samples: int,
        length: int,
        steps: int,
        sampler: str | Sampler = "ancestral",
        *,
        prompt: str | None = None,
        infill: str | None = None,
        source: str | None = None,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int = 0,
        batch_size: int = 32,
        return_trajectory: bool = False,
        progress: bool = False,
    ) -> SampleOutput:
        """Generate ``num_samples`` texts of ``length`` generated positions in ``steps`` steps.

        ``sampler`` is a name (built with ``temperature``/``top_k``/``top_p``) or a :class:`Sampler` object
        carrying its own options. With ``infill`` the template fixes the length and ``length`` is ignored.
        """
        check_sample_request(num_samples, batch_size, seed)
        sampler = self._sampler(sampler, temperature, top_k, top_p)
        timesteps = sampler.timesteps(steps)
        layout = self._layout(length, prompt, infill, source)
        cache = self.use_cache and self.time_conditioning == "none"

        def call_model(x: Tensor, time: Tensor, positions: Tensor) -> Tensor:
            return self.model(input_ids=x, t=time, positions=positions).logits

        results: list[DenoiseResult] = []
        starts = range(0, num_samples, batch_size)
        with Progress(disable=not progress) as bar:
            task = bar.add_task("sampling", total=len(starts) * len(timesteps))
            for start in starts:
                stop = min(start + batch_size, num_samples)
                generators = [sample_generator(seed, i, self.device) for i in range(start, stop)]
                results.append(
                    denoise(
                        call_model,
                        layout.ids.expand(stop - start, -1),
                        sampler,
                        timesteps,
                        generators,
                        generated=layout.generated.expand(stop - start, -1),
                        noise_mask=layout.noise_mask.expand(stop - start, -1),
                        cache=cache,
                        return_trajectory=return_trajectory,
                        advance=lambda n: bar.advance(task, n),
                    )
                )
        tokens = torch.cat([r.tokens for r in results])
        ends = self._text_ends(tokens, layout)
        texts = self.tokenizer.batch_decode(
            [row[layout.text_start : end].tolist() for row, end in zip(tokens, ends, strict=True)],
            skip_special_tokens=True,
        )
        return SampleOutput(
            texts=texts,
            token_ids=tokens.cpu(),
            lengths=[end - layout.text_start for end in ends],
            nfe=torch.cat([r.nfe for r in results]).tolist(),
            trajectories=torch.cat([r.trajectory for r in results]).cpu() if return_trajectory else None,
        )

    def _sampler(self, sampler: str | Sampler, temperature: float, top_k: int, top_p: float) -> Sampler:
        """Build a named sampler, or check a given one; either way it must suit the model."""
        if isinstance(sampler, str):
            sampler = build_sampler(
                sampler, self.objective, temperature=temperature, top_k=top_k, top_p=top_p
            )
        elif (temperature, top_k, top_p) != (1.0, 0, 1.0):
            raise ConfigError(
                f"temperature={temperature}, top_k={top_k}, top_p={top_p} cannot be applied to a sampler "
                "object; allowed: pass them when building it (build_sampler(name, objective, ...))"
            )
        sampler.check_model(self.time_conditioning)
        return sampler

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _layout(self, length: int, prompt: str | None, infill: str | None, source: str | None) -> _Layout:
        """The sequence template for the requested conditioning (at most one kind)."""
        given = [name for name, text in (("prompt", prompt), ("infill", infill), ("source", source)) if text]
        if len(given) > 1:
            raise ConfigError(f"{' and '.join(given)} were both given; allowed: at most one of them")
        tok = self.tokenizer
        mask, cls_id = tok.mask_token_id, tok.cls_token_id
        if infill:
            body = self._encode(infill)
            if mask not in body:
                raise ConfigError(
                    f"infill={infill!r} has no {tok.mask_token} placeholder; allowed: text with at least one"
                )
            ids = torch.tensor([cls_id, *body])
            generated = ids == mask
        else:
            if length < 1:
                raise ConfigError(f"length={length} is not valid; allowed: length >= 1")
            if source:
                fixed = [*self._encode(source), tok.sep_token_id]
                to_generate = length
            else:
                fixed = self._encode(prompt) if prompt else []
                if len(fixed) > length:
                    raise ConfigError(
                        f"prompt has {len(fixed)} tokens but length={length}; allowed: a prompt of at most "
                        "length tokens (length counts the prompt)"
                    )
                to_generate = length - len(fixed)
            ids = torch.tensor([cls_id, *fixed, *[mask] * to_generate])
            generated = torch.arange(len(ids)) > len(fixed)
        text_start = len(ids) - length if source else 1
        noise_mask = generated if source else torch.arange(len(ids)) >= 1
        cut_from = int((~generated).nonzero().max()) + 1
        return _Layout(
            ids.to(self.device), generated.to(self.device), noise_mask.to(self.device), text_start, cut_from
        )

    def _text_ends(self, tokens: Tensor, layout: _Layout) -> list[int]:
        """Per row, the position of the first generated [SEP] after every given token (else the end)."""
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        cuts = (tokens == self.tokenizer.sep_token_id) & layout.generated & (positions >= layout.cut_from)
        first = cuts.long().argmax(-1)
        return torch.where(cuts.any(-1), first, tokens.shape[1]).tolist()
