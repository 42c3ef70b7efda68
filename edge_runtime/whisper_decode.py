"""Whisper's decoding over any decoder backend, token for token what CTranslate2 does.

Today the recogniser decodes with CTranslate2's ``Whisper.generate`` (edge_runtime/asr.py,
``WhisperASR._decode_window``). This module is that search, written against a small step
interface (``DecoderStep``) so that our own decoder graphs (PyTorch here, ONNX Runtime and
TensorRT elsewhere) give the same transcripts, scores and no-speech probabilities. The rules,
as CTranslate2 4.x applies them to the options the project passes:

- **The prompt.** ``<|startoftranscript|>`` and the task tokens after it (language, task,
  ``<|notimestamps|>``) form the prompt; all but its last token are run through the decoder
  first, and the search starts from the last one (``<|notimestamps|>``: no timestamp rules).
- **No-speech probability.** The softmax, over the raw logits, of ``<|nospeech|>`` (tiny.en:
  ``<|nocaptions|>``) at the position of ``<|startoftranscript|>``.
- **Length.** ``max_length`` counts the prompt, as CTranslate2's does; at most
  ``min(max_length // 2, max_length - tokens run before the search)`` tokens are generated,
  the end-of-text token included.
- **Suppression.** ``suppress_tokens`` never appear; with ``suppress_blank`` the blank
  (``" "``) and the end-of-text token cannot be the first generated token; after that the
  end-of-text token may come at any step. Suppressed logits are set to -inf before the
  log-softmax, so scores are log-probabilities of the suppressed distribution.
- **Greedy** (``beam_size`` 1): the most likely token each step; at a temperature, one token
  drawn from the softmax of log-probabilities / temperature (see ``SeededSampler``).
- **Beam search** (``beam_size`` k): each step ranks every continuation of every beam by its
  summed log-probability and keeps the best 2k candidates. Among the first k, one that ends
  (end-of-text, or any candidate on the last step) is a finished hypothesis, and its beam is
  refilled with the next unfinished candidate after the first k. The search stops when
  ``round(k * patience)`` hypotheses are finished (or on the last step); the first step runs
  one row (all beams would be the same).
- **Score.** The summed log-probability (end-of-text included) divided by the number of tokens
  (end-of-text excluded): CTranslate2's default length penalty of 1. Beam search returns the
  finished hypothesis of best score.

The caller gives the encoder states once; ``DecoderStep.cross`` turns them into the
cross-attention keys and values, which serve every row of a step (beams share them).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np

from hbaf.errors import HBAFError

log = logging.getLogger(__name__)

BLANK = 220  # " " in both Whisper vocabularies (English-only and multilingual)


class DecoderStep(Protocol):
    """One decoder backend. ``cross`` and caches are the backend's own objects (torch tensors,
    device buffers...); tokens and logits are numpy arrays. The cache layout is
    ``[layers, 2, N, P, width]``: rows along axis 2."""

    def cross(self, states: np.ndarray) -> Any:
        """Cross-attention keys and values of encoder ``states`` [1, T, width] (float32); they
        serve every row of later ``step`` calls."""
        ...

    def step(self, tokens: np.ndarray, cross: Any, cache: Any | None) -> tuple[np.ndarray, Any]:
        """New ``tokens`` [N, L] int64 after ``cache`` (None: none yet) -> (float32 logits of
        each row's last position [N, vocab], the grown cache)."""
        ...

    def select(self, cache: Any, rows: np.ndarray) -> Any:
        """The cache of ``rows`` (int64 indices into axis 2, repeats allowed)."""
        ...


@dataclass(frozen=True)
class SpecialTokens:
    """The special token ids the decoding needs."""

    sot: int
    eot: int
    no_timestamps: int
    no_speech: int
    blank: int = BLANK

    @classmethod
    def of(cls, tokenizer: Any) -> SpecialTokens:
        """The ids of a faster-whisper ``Tokenizer``."""
        return cls(sot=tokenizer.sot, eot=tokenizer.eot, no_timestamps=tokenizer.no_timestamps,
                   no_speech=tokenizer.no_speech)


@dataclass(frozen=True)
class Generated:
    """The decode of one utterance: the ``tokens`` after the prompt (end-of-text dropped), the
    ``score`` (mean log-probability per token, see the module notes) and the probability of
    no speech."""

    tokens: list[int]
    score: float
    no_speech_prob: float


# ----------------------------------------------------------------------------- rules on the logits


class SuppressTokens:
    """Tokens that are never generated."""

    def __init__(self, tokens: Sequence[int]) -> None:
        self.tokens = np.unique(np.asarray(tokens, dtype=np.int64))

    def apply(self, logits: np.ndarray, step: int) -> None:
        logits[:, self.tokens] = -np.inf


class SuppressAtBegin:
    """Tokens that cannot be the first generated token (the blank and end-of-text)."""

    def __init__(self, tokens: Sequence[int]) -> None:
        self.tokens = np.asarray(tokens, dtype=np.int64)

    def apply(self, logits: np.ndarray, step: int) -> None:
        if step == 0:
            logits[:, self.tokens] = -np.inf


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float32 (-inf stays -inf)."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# ----------------------------------------------------------------------------- choosing tokens


class SeededSampler:
    """One token drawn from softmax(log-probabilities / temperature), reproducibly.

    The draw is CTranslate2's on a CPU: a Mersenne Twister (MT19937) seeded with ``seed``, and
    libstdc++'s ``std::discrete_distribution`` over the probabilities (cumulative sums in
    double precision, the last set to 1; one uniform double from two 32-bit draws; the first
    cumulative sum not below it). A fresh CTranslate2 model after ``set_random_seed(seed)``
    draws the same tokens on its first sampled decode; unlike CTranslate2, whose generator is
    seeded once per worker thread, every ``generate`` call here starts from its own seed.
    """

    def __init__(self, temperature: float, seed: int | None) -> None:
        self.scale = np.float32(1.0) / np.float32(temperature)  # float(1) / temperature, in float32
        self.rng = np.random.RandomState(seed)  # its integer seeding is MT19937's init_genrand

    def _uniform(self) -> float:
        low, high = (float(x) for x in self.rng.randint(0, 2**32, size=2, dtype=np.uint32))
        u = (low + high * 2.0**32) / 2.0**64
        return u if u < 1.0 else math.nextafter(1.0, 0.0)

    def pick(self, log_probs: np.ndarray) -> int:
        probs = softmax(log_probs * self.scale).astype(np.float64)
        cumulative = np.cumsum(probs / np.cumsum(probs)[-1])
        cumulative[-1] = 1.0
        return int(np.searchsorted(cumulative, self._uniform(), side="left"))


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Flat indices of the ``k`` highest ``scores`` [rows, vocab], best first (ties: lower index
    first). The k-th best of the first row bounds the answer from below, so only the scores at
    or above it are sorted (a handful, not rows x vocab)."""
    bound = np.partition(scores[0], -k)[-k]
    flat = scores.reshape(-1)
    above = np.flatnonzero(flat >= bound)
    return above[np.lexsort((above, -flat[above]))[:k]]


def _normalised(total: np.float32, length: int) -> float:
    """CTranslate2's final score: total log-probability / length (an empty hypothesis: -inf)."""
    if length == 0:
        return -math.inf if total < 0 else math.nan
    return float(np.float32(total) / np.float32(length))


def _finished_wanted(beam_size: int, patience: float) -> int:
    """Finished hypotheses a beam search collects before it stops: round(beam_size x patience)."""
    return math.floor(beam_size * patience + 0.5)  # std::round: halves away from zero


# ----------------------------------------------------------------------------- the searches


@dataclass
class _Search:
    """What both searches share: the backend, the rules and the number of steps."""

    backend: DecoderStep
    rules: list[SuppressTokens | SuppressAtBegin]
    eot: int
    steps: int

    def log_probs(self, logits: np.ndarray, i: int) -> np.ndarray:
        logits = np.array(logits, dtype=np.float32)  # a writable copy
        for rule in self.rules:
            rule.apply(logits, i)
        return log_softmax(logits)


def _greedy(search: _Search, start: int, cross: Any, cache: Any, sampler: SeededSampler | None) -> tuple[list[int], float, int]:
    """Greedy (or sampled) decode from ``start``: (tokens, score, decoder steps)."""
    tokens: list[int] = []
    total = np.float32(0.0)
    token = start
    for i in range(search.steps):
        logits, cache = search.backend.step(np.array([[token]], dtype=np.int64), cross, cache)
        log_probs = search.log_probs(logits, i)[0]
        token = int(np.argmax(log_probs)) if sampler is None else sampler.pick(log_probs)
        total = np.float32(total + log_probs[token])
        if token == search.eot:
            return tokens, _normalised(total, len(tokens)), i + 1
        tokens.append(token)
    return tokens, _normalised(total, len(tokens)), search.steps


def _beam(search: _Search, start: int, cross: Any, cache: Any, beam_size: int,
          patience: float) -> tuple[list[int], float, int]:
    """Beam search from ``start``: (tokens of the best finished hypothesis, its score, decoder steps)."""
    wanted = _finished_wanted(beam_size, patience)
    candidates = 2 * beam_size
    finished: list[tuple[float, list[int]]] = []
    seqs: list[list[int]] = [[]]  # one row on the first step
    totals = np.zeros(1, dtype=np.float32)
    last = np.array([start], dtype=np.int64)
    for i in range(search.steps):
        logits, cache = search.backend.step(last[:, None], cross, cache)
        scores = search.log_probs(logits, i) + totals[:, None]
        vocab = scores.shape[1]
        flat = scores.reshape(-1)
        best = top_k(scores, candidates)
        origin, word = best // vocab, best % vocab
        final = i == search.steps - 1
        keep, spare = [], beam_size
        for k in range(beam_size):
            chosen = k
            ends = word[k] == search.eot
            if ends or final:
                seq = seqs[origin[k]] + ([] if ends else [int(word[k])])
                finished.append((_normalised(flat[best[k]], len(seq)), seq))
                for j in range(spare, candidates):  # refill the beam with the next unfinished candidate
                    if word[j] != search.eot:
                        chosen, spare = j, j + 1
                        break
            keep.append(chosen)
        if final or len(finished) >= wanted:
            score, tokens = max(finished, key=lambda f: f[0])
            return tokens, score, i + 1
        keep_idx = np.asarray(keep)
        seqs = [seqs[origin[c]] + [int(word[c])] for c in keep]
        totals = flat[best[keep_idx]].astype(np.float32)
        last = word[keep_idx].astype(np.int64)
        cache = search.backend.select(cache, origin[keep_idx].astype(np.int64))
    raise AssertionError("unreachable: the last step finishes every beam")


# ----------------------------------------------------------------------------- the entry point


def _split_prompt(prompt: list[int], special: SpecialTokens) -> tuple[int, list[int]]:
    """(index of <|startoftranscript|>, the tokens run before the search); the prompt ends with
    <|notimestamps|>, where the search starts."""
    if special.sot not in prompt:
        raise HBAFError("the Whisper prompt has no <|startoftranscript|> token; start it with the tokenizer's sot_sequence")
    sot = prompt.index(special.sot)
    end = sot
    while end < len(prompt) and special.sot <= prompt[end] <= special.no_timestamps:
        end += 1
    if end != len(prompt) or prompt[-1] != special.no_timestamps:
        raise HBAFError("the Whisper prompt must end with its task tokens and <|notimestamps|> "
                        "(no timestamps, no forced text); use sot_sequence + [no_timestamps]")
    return sot, prompt[:-1]


def generate(step: DecoderStep, states: np.ndarray, prompt: Sequence[int], special: SpecialTokens, *,
             max_length: int, beam_size: int = 1, patience: float = 1.0, suppress_tokens: Sequence[int] = (),
             suppress_blank: bool = True, temperature: float = 0.0, seed: int | None = None) -> Generated:
    """Decode one utterance's encoder ``states`` ([1, T, width] or [T, width]) after ``prompt``
    with CTranslate2's rules (module notes). ``temperature`` > 0 samples (``beam_size`` 1)
    with ``seed``; ``suppress_tokens`` are ids (faster-whisper's ``get_suppressed_tokens``)."""
    if beam_size < 1 or patience <= 0 or max_length < 1 or temperature < 0:
        raise HBAFError(f"bad decoding options (beam_size {beam_size}, patience {patience}, max_length {max_length}, "
                        f"temperature {temperature}); use beam_size >= 1, patience > 0, max_length >= 1, temperature >= 0")
    if temperature == 0 and _finished_wanted(beam_size, patience) < 1:
        raise HBAFError(f"beam_size {beam_size} x patience {patience} rounds to no hypothesis; use a patience of at least {0.5 / beam_size:g}")
    if temperature > 0 and beam_size != 1:
        raise HBAFError(f"sampling at temperature {temperature} decodes with beam_size 1, not {beam_size}")
    if any(int(t) < 0 for t in suppress_tokens):
        raise HBAFError("suppress_tokens holds a negative id; expand -1 with faster-whisper's get_suppressed_tokens first")
    states = np.asarray(states, dtype=np.float32)
    if states.ndim == 2:
        states = states[None]
    if states.ndim != 3 or states.shape[0] != 1:
        raise HBAFError(f"decode one utterance at a time: encoder states of shape {states.shape}, expected [1, T, width]")
    prompt = [int(t) for t in prompt]
    sot, before = _split_prompt(prompt, special)
    steps = min(max_length // 2, max_length - len(before))
    if steps < 1:
        raise HBAFError(f"max_length {max_length} leaves no token to generate after a {len(prompt)}-token prompt; "
                        "it counts the prompt too")

    t0 = time.perf_counter()
    cross = step.cross(states)
    logits, cache = step.step(np.array([before[: sot + 1]], dtype=np.int64), cross, None)
    no_speech = float(softmax(np.asarray(logits[0], dtype=np.float32))[special.no_speech])
    if len(before) > sot + 1:  # task tokens after <|startoftranscript|>
        _, cache = step.step(np.array([before[sot + 1:]], dtype=np.int64), cross, cache)
    rules: list[SuppressTokens | SuppressAtBegin] = [SuppressTokens(list(suppress_tokens))] if len(suppress_tokens) else []
    if suppress_blank:
        rules.append(SuppressAtBegin([special.blank, special.eot]))
    search = _Search(step, rules, special.eot, steps)
    if beam_size == 1:
        sampler = SeededSampler(temperature, seed) if temperature > 0 else None
        tokens, score, ran = _greedy(search, prompt[-1], cross, cache, sampler)
    else:
        tokens, score, ran = _beam(search, prompt[-1], cross, cache, beam_size, patience)
    log.debug("decoded %d tokens in %d steps (beam %d, temperature %g) in %.1f ms",
              len(tokens), ran, beam_size, temperature, 1000 * (time.perf_counter() - t0))
    return Generated(tokens, score, no_speech)


# ----------------------------------------------------------------------------- the PyTorch backend


class TorchDecoderStep:
    """``DecoderStep`` over hbaf/whisper.py's ``TextDecoder`` (CPU or CUDA, float32 or float16)."""

    def __init__(self, model: Any = None, *, device: str = "cpu", fp16: bool = False) -> None:
        import torch

        from hbaf.whisper import load_whisper_torch

        self.torch = torch
        self.model = model if model is not None else load_whisper_torch(device=device, fp16=fp16)
        self.decoder = self.model.decoder
        weight = self.decoder.token_table
        self.device, self.dtype = weight.device, weight.dtype

    def cross(self, states: np.ndarray) -> Any:
        with self.torch.inference_mode():
            x = self.torch.from_numpy(np.ascontiguousarray(states)).to(self.device, self.dtype)
            return self.decoder.cross_kv(x)

    def step(self, tokens: np.ndarray, cross: Any, cache: Any | None) -> tuple[np.ndarray, Any]:
        with self.torch.inference_mode():
            ids = self.torch.from_numpy(np.ascontiguousarray(tokens, dtype=np.int64)).to(self.device)
            logits, cache = self.decoder(ids, cross, cache)
            return logits[:, -1].float().cpu().numpy(), cache

    def select(self, cache: Any, rows: np.ndarray) -> Any:
        with self.torch.inference_mode():
            return cache.index_select(2, self.torch.from_numpy(rows).to(self.device))
