"""Voice activity detection: Silero VAD on 512-sample windows, and a segmenter that cuts utterances.

``SileroVAD`` runs the ONNX model bundled with the ``silero-vad`` pip package through
ONNX Runtime (no torch needed): one 512-sample window at 16 kHz in, one speech
probability out. The recurrent state and the 64-sample context the model expects
are carried from window to window.

``Segmenter`` turns a stream of blocks of any size into ``Utterance`` objects:
speech starts when the probability reaches ``threshold``, and ends after
``min_silence_ms`` below ``threshold - 0.15`` (hysteresis, as in Silero's own
iterator); bursts shorter than ``min_speech_ms`` are ignored; each utterance is
padded by ``speech_pad_ms`` of audio on both sides; speech running longer than
``max_utterance_s`` is cut at the least speech-like window of its last second. With
``sentence_end_ms`` (and ``heard_sentence``, the speculative recogniser's verdict on the pending
utterance) an utterance whose transcript ends a sentence ends after that shorter silence.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from hbaf.contract import MAX_SECONDS, SAMPLE_RATE
from hbaf.errors import HBAFError

log = logging.getLogger(__name__)

WINDOW = 512  # samples per VAD window at 16 kHz (32 ms)
CONTEXT = 64  # samples of the previous window the model sees in front of each window
# segmenter defaults (``hbaf-edge run`` takes its flags' defaults from these)
THRESHOLD = 0.5  # speech probability that starts an utterance
MIN_SPEECH_MS = 250  # shorter bursts are ignored
MIN_SILENCE_MS = 300  # silence that ends an utterance
SPEECH_PAD_MS = 64  # audio kept around each utterance (64 vs 100: same WER, speculation starts 36 ms sooner; docs/LATENCY.md)
SENTENCE_END_MS = 0  # silence that ends an utterance heard to end a sentence (0 = off; docs/LATENCY.md, release 2.2)


def bundled_vad_model() -> Path:
    """Path of the ONNX model shipped inside the silero-vad package (found without importing it)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise HBAFError("Silero VAD is not installed; pip install silero-vad")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.onnx"
    if not path.is_file():
        raise HBAFError(f"Silero VAD model missing at {path}; reinstall it with pip install --force-reinstall silero-vad")
    return path


class SileroVAD:
    """Speech probability of consecutive 512-sample windows of a 16 kHz stream."""

    def __init__(self, model_path: str | Path | None = None) -> None:
        import onnxruntime as ort

        path = Path(model_path) if model_path is not None else bundled_vad_model()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as err:
            raise HBAFError(f"cannot load the VAD model {path} ({err}); reinstall silero-vad") from err
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)
        self.reset()

    def reset(self) -> None:
        """Clear the recurrent state (start of a new stream)."""
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)

    def __call__(self, window: np.ndarray) -> float:
        window = np.asarray(window, dtype=np.float32).reshape(-1)
        if window.size != WINDOW:
            raise HBAFError(f"the VAD takes {WINDOW}-sample windows at 16 kHz, got {window.size}; feed blocks through Segmenter")
        x = np.concatenate([self._context, window])[None, :]
        prob, self._state = self.session.run(None, {"input": x, "state": self._state, "sr": self._sr})
        self._context = window[-CONTEXT:].copy()
        return float(prob.reshape(-1)[0])


@dataclass
class Utterance:
    """One stretch of speech. ``start``/``end`` are seconds of stream time (padding included);
    ``speech_end`` is the stream time where the last voiced VAD window ended (what a listener
    hears as the end of speech); ``ended_at`` is ``time.perf_counter()`` when the segmenter
    decided the utterance was over."""

    start: float
    end: float
    samples: np.ndarray
    ended_at: float
    speech_end: float | None = None

    @property
    def key(self) -> tuple[int, int]:
        """(first, last) stream sample: the same audio gives the same key."""
        return round(self.start * SAMPLE_RATE), round(self.end * SAMPLE_RATE)

    @property
    def duration(self) -> float:
        return self.samples.size / SAMPLE_RATE


class _SampleBuffer:
    """Growable float32 buffer addressed by absolute stream sample index."""

    def __init__(self) -> None:
        self._data = np.zeros(4 * SAMPLE_RATE, dtype=np.float32)
        self._len = 0
        self.start = 0  # absolute index of _data[0]

    @property
    def end(self) -> int:
        return self.start + self._len

    def append(self, x: np.ndarray) -> None:
        need = self._len + x.size
        if need > self._data.size:
            grown = np.zeros(max(need, 2 * self._data.size), dtype=np.float32)
            grown[: self._len] = self._data[: self._len]
            self._data = grown
        self._data[self._len : need] = x
        self._len = need

    def view(self, a: int, b: int) -> np.ndarray:
        return self._data[a - self.start : b - self.start]

    def drop_before(self, idx: int) -> None:
        n = min(max(0, idx - self.start), self._len)
        if n:
            self._data[: self._len - n] = self._data[n : self._len]
            self._len -= n
            self.start += n


class Segmenter:
    """Blocks in, utterances out. ``accept(block)`` takes any block size; ``flush()`` ends the stream.

    ``vad_seconds`` accumulates the VAD's compute time and ``windows`` counts VAD
    windows, so callers can report the VAD's share of latency.
    """

    def __init__(
        self,
        threshold: float = THRESHOLD,
        min_speech_ms: int = MIN_SPEECH_MS,
        min_silence_ms: int = MIN_SILENCE_MS,
        speech_pad_ms: int = SPEECH_PAD_MS,
        max_utterance_s: float = MAX_SECONDS,
        *,
        vad: SileroVAD | None = None,
        sentence_end_ms: int = SENTENCE_END_MS,
        heard_sentence: Callable[[tuple[int, int]], bool] | None = None,
    ) -> None:
        if not 0.0 < threshold < 1.0:
            raise HBAFError(f"VAD threshold must be between 0 and 1, got {threshold}; 0.5 is a good start")
        if min(min_speech_ms, min_silence_ms, speech_pad_ms) < 0:
            raise HBAFError("VAD durations must not be negative; check --min-speech-ms, --min-silence-ms and --speech-pad-ms")
        self.threshold = float(threshold)
        self.neg_threshold = max(self.threshold - 0.15, 0.01)
        self.min_speech = int(min_speech_ms * SAMPLE_RATE / 1000)
        self.min_silence = int(min_silence_ms * SAMPLE_RATE / 1000)
        self.pad = int(speech_pad_ms * SAMPLE_RATE / 1000)
        self.max_samples = int(max_utterance_s * SAMPLE_RATE)
        if self.max_samples < 2 * SAMPLE_RATE:
            raise HBAFError(f"max utterance length {max_utterance_s:g} s is too short; use at least 2 s (10 s matches the model)")
        if self.max_samples <= 2 * self.pad + 2 * WINDOW:
            most = int((self.max_samples - 2 * WINDOW) / 2 / SAMPLE_RATE * 1000) - 1
            raise HBAFError(f"--speech-pad-ms {speech_pad_ms} pads each utterance with more audio than an utterance may hold "
                            f"(--max-utterance-s {max_utterance_s:g}); use at most {most} ms (default {SPEECH_PAD_MS})")
        if self.min_speech >= self.max_samples:
            raise HBAFError(f"--min-speech-ms {min_speech_ms} is as long as an utterance may be (--max-utterance-s "
                            f"{max_utterance_s:g}), so no speech would ever be kept; use e.g. {MIN_SPEECH_MS} "
                            "(bursts shorter than this are ignored)")
        if sentence_end_ms < 0:
            raise HBAFError(f"--sentence-end-ms must not be negative, got {sentence_end_ms}; 0 turns it off")
        if 0 < sentence_end_ms and sentence_end_ms >= min_silence_ms:
            raise HBAFError(f"--sentence-end-ms {sentence_end_ms} must be shorter than --min-silence-ms {min_silence_ms} "
                            "(the silence that ends every utterance anyway); use e.g. 200, or 0 to turn it off")
        self.sentence_end = int(sentence_end_ms * SAMPLE_RATE / 1000)
        self.heard_sentence = heard_sentence  # (first, last) sample of the pending utterance -> its transcript ends a sentence
        self.vad = vad if vad is not None else SileroVAD()
        self.reset()

    def reset(self) -> None:
        """Forget everything: VAD state, buffered audio, stream time and counters."""
        self.vad.reset()
        self._buf = _SampleBuffer()
        self._next_win = 0
        self._last_end = 0
        self._clear_speech()
        self.vad_seconds = 0.0
        self.windows = 0
        self.sentence_cuts = 0  # utterances ended after sentence_end_ms instead of min_silence_ms

    def _clear_speech(self) -> None:
        self._speech_start: int | None = None
        self._temp_end: int | None = None
        self._probs: list[tuple[int, float]] = []
        self._continued = False

    @property
    def stream_time(self) -> float:
        """Seconds of audio accepted since the last reset."""
        return self._buf.end / SAMPLE_RATE

    @property
    def in_speech(self) -> bool:
        return self._speech_start is not None

    def accept(self, block: np.ndarray) -> list[Utterance]:
        """Feed 16 kHz mono samples; return the utterances that ended inside them."""
        block = np.asarray(block, dtype=np.float32)
        if block.ndim != 1:
            raise HBAFError(f"the segmenter takes mono 16 kHz blocks of shape [n], got {block.shape}; down-mix first")
        self._buf.append(block)
        out: list[Utterance] = []
        while self._next_win + WINDOW <= self._buf.end:
            window = self._buf.view(self._next_win, self._next_win + WINDOW)
            t0 = time.perf_counter()
            prob = self.vad(window)
            self.vad_seconds += time.perf_counter() - t0
            self.windows += 1
            utt = self._step(self._next_win, prob)
            if utt is not None:
                out.append(utt)
            self._next_win += WINDOW
        self._trim()
        return out

    def flush(self) -> list[Utterance]:
        """End of stream: close the utterance in progress (if long enough) and return it."""
        out: list[Utterance] = []
        if self._speech_start is not None:
            end = self._temp_end if self._temp_end is not None else self._buf.end
            utt = self._finish(end, min(self._buf.end, end + self.pad))
            if utt is not None:
                out.append(utt)
        self._clear_speech()
        return out

    def pending_key(self) -> tuple[int, int] | None:
        """(first, last) sample of the utterance that silence from here on would close, once its
        trailing pad has arrived; None while speech goes on (or nothing would be kept)."""
        if self._speech_start is None or self._temp_end is None or self._continued:
            return None
        if self._buf.end < self._temp_end + self.pad or self._temp_end - self._speech_start < self.min_speech:
            return None
        start = self._padded_start()
        end = min(self._temp_end + self.pad, start + self.max_samples, self._buf.end)
        return (start, end) if end > start else None

    def pending(self) -> Utterance | None:
        """The utterance of ``pending_key``: the same samples ``accept`` returns when the VAD
        confirms the end, so work on them can start during the hangover (``ended_at`` is NaN)."""
        bounds = self.pending_key()
        if bounds is None:
            return None
        assert self._temp_end is not None
        return self._make(*bounds, self._temp_end, ended_at=float("nan"))

    def _padded_start(self) -> int:
        assert self._speech_start is not None
        if self._continued:
            return self._speech_start
        return max(self._speech_start - self.pad, self._last_end, self._buf.start)

    def _step(self, win_start: int, prob: float) -> Utterance | None:
        win_end = win_start + WINDOW
        if self._speech_start is None:
            if prob >= self.threshold:
                self._speech_start = win_start
                self._probs = [(win_start, prob)]
            return None
        self._probs.append((win_start, prob))
        if prob >= self.threshold:
            self._temp_end = None
        elif prob < self.neg_threshold:
            if self._temp_end is None:
                self._temp_end = win_start
            if win_end - self._temp_end >= self.min_silence:
                return self._finish(self._temp_end, self._temp_end + self.pad)
            if self._ends_at_sentence(win_end):
                self.sentence_cuts += 1
                return self._finish(self._temp_end, self._temp_end + self.pad)
        if win_end - self._padded_start() >= self.max_samples:
            return self._split(win_end)
        return None

    def _ends_at_sentence(self, win_end: int) -> bool:
        """The early end: ``sentence_end_ms`` of silence so far, and the recogniser heard the pending
        utterance (the samples ``_finish`` would now return) end a sentence."""
        if not self.sentence_end or self.heard_sentence is None or self._temp_end is None:
            return False
        if win_end - self._temp_end < self.sentence_end:
            return False
        key = self.pending_key()
        return key is not None and bool(self.heard_sentence(key))

    def _split(self, now: int) -> Utterance | None:
        """Speech too long: cut in the middle of the least speech-like window of the last second."""
        recent = [(s, p) for s, p in self._probs if s >= now - SAMPLE_RATE]
        cut_win, _ = min(recent, key=lambda sp: sp[1])
        cut = cut_win + WINDOW // 2
        start = self._padded_start()
        utt = self._make(start, cut, cut)
        log.debug("speech longer than %.1f s: cut at %.2f s", self.max_samples / SAMPLE_RATE, cut / SAMPLE_RATE)
        self._last_end = cut
        self._speech_start = cut
        self._continued = True
        self._probs = [(s, p) for s, p in self._probs if s > cut_win]
        if self._temp_end is not None:
            self._temp_end = max(self._temp_end, cut)
        return utt

    def _finish(self, speech_end: int, end: int) -> Utterance | None:
        assert self._speech_start is not None
        start = self._padded_start()
        end = min(end, start + self.max_samples, self._buf.end)
        if self._continued:
            keep = any(p >= self.threshold for _, p in self._probs)
        else:
            keep = speech_end - self._speech_start >= self.min_speech
        utt = self._make(start, end, speech_end) if keep and end > start else None
        if utt is not None:
            self._last_end = end
        self._clear_speech()
        return utt

    def _make(self, start: int, end: int, speech_end: int, ended_at: float | None = None) -> Utterance:
        return Utterance(
            start=start / SAMPLE_RATE,
            end=end / SAMPLE_RATE,
            samples=self._buf.view(start, end).copy(),
            ended_at=time.perf_counter() if ended_at is None else ended_at,
            speech_end=min(speech_end, end) / SAMPLE_RATE,
        )

    def _trim(self) -> None:
        """Keep only what a future utterance can still need: its start, or the pre-speech pad."""
        keep = self._padded_start() if self._speech_start is not None else self._next_win - self.pad
        if keep - self._buf.start >= SAMPLE_RATE:
            self._buf.drop_before(keep)
