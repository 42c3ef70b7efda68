"""`hbaf-edge bench --soak MINUTES`: the real pipeline over a long stream of speech, watched for drift.

The stream is raw 16-bit PCM produced on the fly and read through ``StdinSource`` (the path
``arecord | hbaf-edge run --source -`` takes), so the audio never sits in memory as a whole:
the demo conversation's 12 lines in its 3 voices with their emotion prosody (36 espeak-ng
clips, rendered once and cached under ``$HBAF_HOME/soak``) in a seeded random order,
separated by 0.6-3 s pauses, with a 35 s pause every 60 utterances (a new dialogue), over
quiet room noise. The stream is not paced: it is read as fast as the pipeline takes it
(bounded queues, back-pressure, nothing should be dropped), so hours of audio take minutes.

Everything downstream is the product: an ``EmotionStream`` over that source, built from one
``RunOptions`` as ``hbaf-edge run`` builds it (Silero VAD segmenter, the recogniser, the
fusion backend the model file calls for, the dialogue memory, the JSONL writer). The report
(stdout, ``soak.json``; the events in ``soak.events.jsonl``):

- resident memory (RSS, sampled every second): after loading, at 10 % of the audio, at the
  end, the maximum, and the growth from 10 % to the end (MB per hour of audio);
- latency in the first vs the last 10 % of utterances, p50/p99: ``processing`` (ASR +
  features + fusion, what one utterance costs) and ``total`` (end of speech detected ->
  event; with an unpaced stream this includes waiting behind other utterances, so it
  measures throughput more than live latency);
- dropped audio blocks and utterances, events lost (utterances segmented minus event lines in
  the JSONL file; must be 0), audio hours, wall time, real-time factor.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.machine import rss_mb
from hbaf.contract import SAMPLE_RATE
from hbaf.errors import HBAFError

NOISE_LEVEL = 0.002  # room noise, about -54 dBFS
PAUSE_RANGE = (0.6, 3.0)
LONG_PAUSE_S = 35.0  # longer than the runtime's --reset-after default (30 s): a new dialogue
LONG_PAUSE_EVERY = 60
PEAK = 0.8  # each clip's peak level
RESULT_FILE, EVENTS_FILE = "soak.json", "soak.events.jsonl"


# ----------------------------------------------------------------------------- the stream


def render_utterances(cache: Path) -> list[np.ndarray]:
    """The demo's 12 lines in each of its 3 voices, with the line's emotion prosody (36 clips,
    16 kHz float32, peak 0.8); rendered with espeak-ng once and cached as 16-bit WAV."""
    import soundfile as sf

    from edge_runtime.demo import PROSODY, SCRIPT, VOICES, espeak, espeak_version, render_turn
    from hbaf.io import atomic_path

    exe = espeak("the soak's speech is rendered with espeak-ng", "then run the soak again")
    voices = sorted(set(VOICES.values()))
    key = hashlib.sha256(json.dumps([[t.text for t in SCRIPT], voices, PROSODY, espeak_version(exe), SAMPLE_RATE, PEAK])
                         .encode()).hexdigest()[:12]
    folder = cache / f"utterances-{key}"
    folder.mkdir(parents=True, exist_ok=True)
    clips = []
    for i, turn in enumerate(SCRIPT):
        for j, voice in enumerate(voices):
            path = folder / f"{i:02d}-{j}.wav"
            if not path.is_file():
                with tempfile.TemporaryDirectory(prefix="hbaf-soak-") as tmp:
                    x = render_turn(exe, turn, Path(tmp), voice=voice)
                with atomic_path(path) as tmp_path:
                    sf.write(str(tmp_path), PEAK * x / max(float(np.abs(x).max()), 1e-6), SAMPLE_RATE, subtype="PCM_16",
                             format="WAV")
            clip, rate = sf.read(str(path), dtype="float32")
            if rate != SAMPLE_RATE or clip.ndim != 1:
                raise HBAFError(f"{path} is not a {SAMPLE_RATE} Hz mono clip of the soak; delete {folder} and run it again")
            clips.append(clip)
    return clips


class SpeechStream(io.RawIOBase):
    """Raw s16le PCM of ``seconds`` of audio: utterances and pauses over room noise, made as read."""

    def __init__(self, clips: list[np.ndarray], seconds: float, seed: int = 0) -> None:
        super().__init__()
        self.clips = clips
        self.total = int(seconds * SAMPLE_RATE)
        self.rng = np.random.default_rng(seed)
        self.made = 0  # samples produced
        self.utterances = 0  # utterances inserted
        self._buf = bytearray()
        self._pos = 0
        self.progress: Any = None  # a tqdm bar counting audio minutes, when set

    def readable(self) -> bool:
        return True

    def _next_piece(self) -> np.ndarray:
        long_pause = self.utterances > 0 and self.utterances % LONG_PAUSE_EVERY == 0
        pause = LONG_PAUSE_S if long_pause else float(self.rng.uniform(*PAUSE_RANGE))
        clip = self.clips[int(self.rng.integers(len(self.clips)))]
        piece = np.concatenate([np.zeros(int(pause * SAMPLE_RATE), np.float32), clip])
        if self.made + piece.size > self.total:  # the stream ends in silence, never inside an utterance
            piece = np.zeros(self.total - self.made, np.float32)
        else:
            self.utterances += 1
        return piece

    def readinto(self, b: Any) -> int:
        while len(self._buf) - self._pos < len(b) and self.made < self.total:
            piece = self._next_piece()
            noisy = piece + NOISE_LEVEL * self.rng.standard_normal(piece.size).astype(np.float32)
            del self._buf[: self._pos]
            self._pos = 0
            self._buf += (np.clip(noisy, -1.0, 1.0) * 32767).astype("<i2").tobytes()
            self.made += piece.size
            if self.progress is not None:
                shown = min(self.progress.total, round(self.made / SAMPLE_RATE / 60.0, 2))
                self.progress.update(shown - self.progress.n)
        n = min(len(b), len(self._buf) - self._pos)
        b[:n] = self._buf[self._pos : self._pos + n]
        self._pos += n
        return n


# ----------------------------------------------------------------------------- measuring


class RssSampler(threading.Thread):
    """Samples (audio seconds served, RSS MB) once a second until stopped."""

    def __init__(self, stream: SpeechStream, every: float = 1.0) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.stream, self.every = stream, every
        self.samples: list[tuple[float, float]] = []
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.every):
            self.samples.append((self.stream.made / SAMPLE_RATE, rss_mb()))

    def stop(self) -> None:
        self._done.set()
        self.join()


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    a = np.asarray(values, dtype=np.float64)
    return {"n": int(a.size), "p50": round(float(np.percentile(a, 50)), 1), "p99": round(float(np.percentile(a, 99)), 1),
            "max": round(float(a.max()), 1)}


@dataclass
class SoakReport:
    model: str
    backend: str
    asr: str
    threads: int | None
    audio_hours: float
    wall_seconds: float
    real_time_factor: float
    utterances_inserted: int
    utterances_segmented: int
    events_emitted: int
    events_in_jsonl: int
    events_lost: int
    dropped_blocks: int
    dropped_utterances: int
    jsonl_lines_lost: int
    memory_resets: int
    empty_texts: int
    rss_mb: dict[str, float] = field(default_factory=dict)
    latency_ms: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        """Nothing lost: every segmented utterance is a line of the events file."""
        return self.events_lost == 0 and self.jsonl_lines_lost == 0


def latency_windows(events: list[Any]) -> dict[str, dict[str, dict[str, float]]]:
    n = len(events)
    k = max(1, n // 10)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, part in (("first_10pct", events[:k]), ("last_10pct", events[-k:]), ("all", events)):
        proc = [e.latency_ms["asr"] + e.latency_ms["features"] + e.latency_ms["fusion"] for e in part]
        out[name] = {
            "processing": percentiles(proc),
            "total": percentiles([e.latency_ms["total"] for e in part]),
            "fusion": percentiles([e.latency_ms["fusion"] for e in part]),
        }
    return out


def rss_stats(start: float, samples: list[tuple[float, float]], end: float, audio_s: float) -> dict[str, float]:
    at10 = next((mb for t, mb in samples if t >= 0.1 * audio_s), start)
    tail = [(t, mb) for t, mb in samples if t >= 0.1 * audio_s]
    slope = 0.0
    if len(tail) >= 3 and tail[-1][0] > tail[0][0]:
        t, mb = np.asarray(tail).T
        slope = float(np.polyfit(t / 3600.0, mb, 1)[0])
    return {
        "after_load": round(start, 1),
        "at_10pct": round(at10, 1),
        "end": round(end, 1),
        "max": round(max([start, end] + [mb for _, mb in samples]), 1),
        "growth_10pct_to_end": round(end - at10, 1),
        "slope_mb_per_audio_hour_after_10pct": round(slope, 1),
        # the RSS at every tenth of the audio (0 %: after load, 100 %: the end): a leak climbs to the
        # end, a cache that fills levels off
        "by_tenth": [round(start, 1)] + [round(next((mb for t, mb in samples if t >= i / 10 * audio_s), end), 1)
                                         for i in range(1, 10)] + [round(end, 1)],
    }


# ----------------------------------------------------------------------------- the run


def soak(minutes: float, model: Path, events_path: Path, cache: Path, *, threads: int | None = 2,
         asr_model: str | None = None, asr_device: str = "auto", asr_beam: int | None = None,
         asr_encoder: str | None = None, asr_decoder: str | None = None, seed: int = 0) -> SoakReport:
    """``minutes`` of generated speech through the runtime with the fusion model ``model``; the
    events go to ``events_path`` (replaced), rendered speech is cached in ``cache``."""
    from tqdm import tqdm

    from edge_runtime.events import EventWriter
    from edge_runtime.options import RunOptions
    from edge_runtime.sources import StdinSource
    from edge_runtime.stream import EmotionStream

    clips = render_utterances(cache)
    stream = SpeechStream(clips, minutes * 60.0, seed=seed)
    events_path.unlink(missing_ok=True)
    writer = EventWriter(events_path, stdout_format="none")
    options = RunOptions(model=model, threads=threads, asr=asr_model, asr_device=asr_device, reset_after=30.0,
                         asr_encoder=asr_encoder, asr_decoder=asr_decoder,
                         **({} if asr_beam is None else {"asr_beam": asr_beam}))
    try:
        run = EmotionStream(options=options, source=StdinSource(stream), writer=writer)  # models load here
    except BaseException:
        writer.close()
        raise
    pipe = run.pipeline
    rss_start = rss_mb()
    sampler = RssSampler(stream)
    with tqdm(total=round(minutes, 2), unit="min", desc="soak (audio)",
              bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} audio min [{elapsed}<{remaining}]") as bar:
        stream.progress = bar
        sampler.start()
        t0 = time.perf_counter()
        try:
            summary = run.run()
        finally:
            wall = time.perf_counter() - t0
            sampler.stop()
            writer.close()
    rss_end = rss_mb()
    lines = [json.loads(line) for line in events_path.read_text(encoding="utf-8").splitlines()]
    in_jsonl = sum(1 for d in lines if "utterance" in d)
    audio_s = summary.audio_seconds
    return SoakReport(
        model=str(model),
        backend=summary.backend,
        asr=pipe.asr.describe(),
        threads=threads,
        audio_hours=round(audio_s / 3600.0, 4),
        wall_seconds=round(wall, 1),
        real_time_factor=round(summary.real_time_factor, 4),
        utterances_inserted=stream.utterances,
        utterances_segmented=pipe.segmented,
        events_emitted=len(pipe.events),
        events_in_jsonl=in_jsonl,
        events_lost=pipe.segmented - in_jsonl,
        dropped_blocks=summary.dropped_blocks,
        dropped_utterances=summary.dropped_utterances,
        jsonl_lines_lost=summary.jsonl_lines_lost,
        memory_resets=summary.memory_resets,
        empty_texts=sum(1 for e in pipe.events if not e.text),
        rss_mb=rss_stats(rss_start, sampler.samples, rss_end, audio_s),
        latency_ms=latency_windows(pipe.events),
        machine={"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                 "load_avg_end": [round(x, 2) for x in os.getloadavg()]},
        summary=summary.to_dict(),
    )


def format_report(r: SoakReport) -> str:
    first, last = r.latency_ms["first_10pct"], r.latency_ms["last_10pct"]

    def pair(d: dict[str, float]) -> str:
        return f"p50 {d.get('p50', 0):.0f} / p99 {d.get('p99', 0):.0f} ms"

    return "\n".join([
        f"soak: {r.audio_hours * 60:.1f} min of audio in {r.wall_seconds:.0f} s wall (real-time factor {r.real_time_factor:.3f}); "
        f"model {r.model} ({r.backend}); ASR {r.asr}",
        f"  utterances: {r.utterances_inserted} inserted, {r.utterances_segmented} segmented, {r.events_emitted} events, "
        f"{r.events_in_jsonl} in the JSONL file -> events lost {r.events_lost}; empty transcripts {r.empty_texts}",
        f"  dropped: {r.dropped_blocks} audio block(s), {r.dropped_utterances} utterance(s); JSONL lines lost {r.jsonl_lines_lost}; "
        f"memory resets {r.memory_resets}",
        f"  RSS MB: after load {r.rss_mb['after_load']}, at 10 % {r.rss_mb['at_10pct']}, end {r.rss_mb['end']}, max {r.rss_mb['max']} "
        f"(growth 10 %->end {r.rss_mb['growth_10pct_to_end']:+}, slope {r.rss_mb['slope_mb_per_audio_hour_after_10pct']:+} MB per audio hour)",
        f"  RSS MB at each tenth of the audio: {' '.join(f'{mb:g}' for mb in r.rss_mb.get('by_tenth', []))}",
        f"  processing (ASR+features+fusion): first 10 % {pair(first['processing'])}, last 10 % {pair(last['processing'])}",
        f"  total (end of speech -> event, queue included): first 10 % {pair(first['total'])}, last 10 % {pair(last['total'])}",
        f"  fusion alone: first 10 % {pair(first['fusion'])}, last 10 % {pair(last['fusion'])}",
    ])
