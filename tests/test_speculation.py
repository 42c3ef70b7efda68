"""The latency a person feels: speculative recognition during the VAD's hangover, and the
last-voiced-sample -> event measurement."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.asr import WhisperASR
from edge_runtime.model_files import open_backend
from edge_runtime.events import EventWriter
from edge_runtime.options import RunOptions, build_pipeline
from edge_runtime.sources import FileSource
from edge_runtime.speculate import Speculator
from edge_runtime.vad import WINDOW, Segmenter
from helpers import espeak_conversation, tiny_checkpoint
from hbaf.audio import load_audio
from hbaf.contract import SAMPLE_RATE
from hbaf.wer import normalize_words

TURNS = ["please call me when you get home tonight", "we will meet again next week", "thank you for coming"]


@pytest.fixture(scope="module")
def conversation(tmp_path_factory) -> Path:
    """Three espeak-ng utterances with 1 s pauses (about 8 s of 16 kHz audio)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    turns = [("en-us", text) for text in TURNS]
    return espeak_conversation(tmp_path_factory.mktemp("speech") / "conversation.wav", turns, pause_s=1.0, speed=160)


def test_pending_is_exactly_the_utterance_the_vad_then_emits(conversation):
    """What is speculated on is what the VAD later closes: same key, same samples, and the
    pending utterance appears before the decision (during the hangover)."""
    wave = load_audio(conversation)
    seg = Segmenter()
    pending: dict[tuple[int, int], tuple[np.ndarray, int]] = {}
    emitted = []
    for pos in range(0, wave.size, WINDOW):
        for utt in seg.accept(wave[pos : pos + WINDOW]):
            emitted.append((utt, pos))
        p = seg.pending()
        if p is not None and p.key not in pending:
            assert p.key == seg.pending_key()
            pending[p.key] = (p.samples, pos)
    emitted += [(u, wave.size) for u in seg.flush()]
    assert len(emitted) == len(TURNS)
    for utt, decided in emitted:
        samples, offered = pending[utt.key]
        np.testing.assert_array_equal(samples, utt.samples)
        assert decided - offered >= 0.2 * SAMPLE_RATE  # offered at least 200 ms before the decision
        assert utt.start < utt.speech_end < utt.end and utt.end - utt.speech_end <= seg.pad / SAMPLE_RATE + 1e-9


def test_speculator_accounts_for_every_job():
    gate = threading.Event()

    def work(samples: np.ndarray) -> float:
        gate.wait(5)
        return float(samples.sum())

    spec = Speculator(work)
    assert spec.offer((0, 10), np.ones(10))
    assert not spec.offer((0, 12), np.ones(12))  # one in flight: skipped, counted
    gate.set()
    time.sleep(0.05)
    assert spec.offer((0, 12), np.ones(12))  # the first finished unclaimed: speech resumed, discarded
    spec.claim((0, 12))
    assert spec.take((0, 12)) == 12.0
    assert spec.take((0, 99)) is None  # nothing was claimed for it
    spec.offer((20, 30), np.ones(10))
    spec.claim((20, 30))
    spec.release((20, 30))  # the worker was behind and the utterance was dropped: discarded, not kept
    assert spec.take((20, 30)) is None
    spec.offer((40, 50), np.ones(10))
    spec.close()  # ends unclaimed: discarded
    st = spec.stats
    assert (st.offered, st.used, st.discarded, st.skipped_busy) == (4, 1, 3, 1)
    assert st.offered == st.used + st.discarded and st.compute_s >= st.wasted_s > 0


def test_live_pipeline_speculates_and_measures_the_felt_latency(conversation, tmp_path):
    """A file paced like a microphone: every utterance is recognised during its hangover, the
    transcripts are those of the non-speculative path, and the summary reports last voiced
    sample -> event next to the VAD-decision figure."""
    ckpt = tiny_checkpoint(tmp_path / "tiny", ["neutral", "joy", "sadness", "anger"])
    backend = open_backend(ckpt, threads=2)
    runs = {}
    for speculate, realtime in ((False, False), (True, True)):
        writer = EventWriter(None, stdout_format="none")
        options = RunOptions(model=ckpt, threads=2, speculate=speculate, summary_line=False)
        pipe = build_pipeline(FileSource(conversation, realtime=realtime), writer, options, backend=backend)
        runs[speculate] = (pipe, pipe.run())
        writer.close()
    (plain, plain_summary), (spec, summary) = runs[False], runs[True]
    assert plain.speculator is None and plain_summary.speculation is None
    assert [normalize_words(e.text) for e in spec.events] == [normalize_words(e.text) for e in plain.events]
    assert [e.emotion for e in spec.events] == [e.emotion for e in plain.events] and len(spec.events) == len(TURNS)
    sp = summary.speculation
    assert sp["used"] == len(TURNS) and sp["offered"] == sp["used"] + sp["discarded"]
    for e in spec.events:
        lat = e.latency_ms
        assert lat["speech_end"] > lat["total"] > 0 and lat["endpoint"] >= 290  # 300 ms hangover (window steps)
        assert abs(lat["endpoint"] + lat["queue"] + lat["asr"] + lat["features"] + lat["fusion"] - lat["speech_end"]) < 5
    assert summary.speech_end_latency_ms["p50"] > summary.latency_ms["p50"]
    assert "last voiced sample -> event" in summary.format() and "speculative recognition: 3 used" in summary.format()


def test_cli_flag_turns_speculation_off():
    from edge_runtime.cli import build_parser

    assert build_parser().parse_args(["run"]).speculate is True
    assert build_parser().parse_args(["run", "--no-speculate"]).speculate is False


def test_whisper_transcribe_is_deterministic_for_the_same_samples(conversation):
    """Speculation relies on it: the same samples give the same transcript."""
    asr = WhisperASR(device="cpu", cpu_threads=2)
    wave = load_audio(conversation)[: 3 * SAMPLE_RATE]
    assert asr.transcribe(wave).text == asr.transcribe(wave.copy()).text
