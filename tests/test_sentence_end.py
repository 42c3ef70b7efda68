"""Ending at the sentence (``--sentence-end-ms N``): an utterance whose speculative transcript ends
a sentence is closed after N ms of silence; every other utterance keeps the full
``--min-silence-ms``. The real segmenter (Silero VAD on espeak-ng speech) and the real speculator,
driven window by window as the pipeline drives them."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.speculate import Speculator, ends_sentence
from edge_runtime.vad import WINDOW, Segmenter
from hbaf.errors import HBAFError
from hbaf.audio import load_audio
from hbaf.contract import SAMPLE_RATE
from helpers import espeak_conversation, tiny_checkpoint

N_MS = 150  # the early end under test
MIN_SILENCE_MS = 300  # today's rule


@pytest.fixture(scope="module")
def spoken(tmp_path_factory) -> Path:
    """One espeak-ng sentence, then 1 s of silence."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    out = tmp_path_factory.mktemp("speech") / "sentence.wav"
    return espeak_conversation(out, [("en-us", "thank you for coming")], pause_s=1.0, speed=160)


def test_what_ends_a_sentence():
    for text in ("Thank you.", "Did you?", "Stop!", '"Go home."', "(It was fine.) ", "Why?!"):
        assert ends_sentence(text), text
    for text in ("Thank you,", "and then", "I think...", "Well\u2026", "", "  ", "so;"):
        assert not ends_sentence(text), text


def cut_with(wave: np.ndarray, heard: str | None, *, gate: threading.Event | None = None):
    """Feed ``wave`` in 512-sample blocks through a Segmenter with --sentence-end-ms N_MS, offering
    each pending utterance to a Speculator (as the pipeline does) whose recogniser hears ``heard``
    and that finishes before the next block (unless ``gate`` holds it). Returns the utterance, the
    silence (ms, from the first silent window) after which it was cut, the segmenter and speculator."""

    def recognise(samples: np.ndarray) -> tuple[str, int]:
        if gate is not None:
            gate.wait(10)
        return heard, samples.size

    spec = Speculator(recognise, text_of=lambda result: result[0])
    seg = Segmenter(min_silence_ms=MIN_SILENCE_MS, sentence_end_ms=N_MS, heard_sentence=spec.heard_sentence)
    offered = None
    for pos in range(0, wave.size, WINDOW):
        utts = seg.accept(wave[pos : pos + WINDOW])
        if utts:
            (utt,) = utts
            if gate is not None:
                gate.set()  # the recogniser finishes only now, after the decision
            spec.claim(utt.key)
            result = spec.take(utt.key)
            silence_ms = 1000.0 * ((pos + WINDOW) / SAMPLE_RATE - utt.speech_end)
            spec.close()
            return utt, silence_ms, seg, spec, result
        key = seg.pending_key()
        if key is not None and key != offered:
            offered = key
            pending = seg.pending()
            assert spec.offer(pending.key, pending.samples)
            if gate is None:
                assert spec.settle(10)
    raise AssertionError("no utterance was cut")


def test_a_sentence_is_cut_after_n_ms_and_anything_else_after_the_full_silence(spoken):
    wave = load_audio(spoken)
    utt, silence, seg, spec, result = cut_with(wave, "Thank you for coming.")
    # N ms of silence, in 32 ms VAD windows: the first window at or past 150 ms (160 ms)
    assert N_MS <= silence < N_MS + 2 * 1000 * WINDOW / SAMPLE_RATE, silence
    assert seg.sentence_cuts == 1 and spec.stats.used == 1 and result == ("Thank you for coming.", utt.samples.size)

    for heard in ("Thank you for coming,", "Thank you for coming...", "thank you for"):
        utt2, silence2, seg2, spec2, _ = cut_with(wave, heard)
        assert MIN_SILENCE_MS <= silence2 < MIN_SILENCE_MS + 2 * 1000 * WINDOW / SAMPLE_RATE, (heard, silence2)
        assert seg2.sentence_cuts == 0 and spec2.stats.used == 1
        # the same audio as the early cut, plus nothing: the utterance's samples do not depend on when it ended
        assert utt2.key == utt.key
        np.testing.assert_array_equal(utt2.samples, utt.samples)


def test_a_transcript_still_being_recognised_does_not_end_the_utterance(spoken):
    """The segmenter never waits for the recogniser: until the speculation has finished, the
    utterance keeps today's rule, even if it will turn out to end a sentence."""
    gate = threading.Event()
    timer = threading.Timer(5.0, gate.set)  # never left hanging
    timer.start()
    try:
        _, silence, seg, _, result = cut_with(load_audio(spoken), "Thank you for coming.", gate=gate)
    finally:
        gate.set()
        timer.cancel()
    assert MIN_SILENCE_MS <= silence and seg.sentence_cuts == 0 and result[0] == "Thank you for coming."


def test_bad_values_are_one_line_errors():
    with pytest.raises(HBAFError, match="must not be negative"):
        Segmenter(sentence_end_ms=-1)
    with pytest.raises(HBAFError, match="shorter than --min-silence-ms 300"):
        Segmenter(min_silence_ms=300, sentence_end_ms=300)
    assert Segmenter(sentence_end_ms=0).sentence_end == 0  # off


def test_command_line_plumbs_it_and_refuses_bad_values(capsys):
    from edge_runtime.cli import build_parser, main, run_options
    from edge_runtime.options import RunOptions

    parser = build_parser()
    assert run_options(parser.parse_args(["run"])).sentence_end_ms == RunOptions().sentence_end_ms
    assert run_options(parser.parse_args(["run", "--sentence-end-ms", "200"])).sentence_end_ms == 200
    for argv, words in ((["--sentence-end-ms", "400"], "shorter than --min-silence-ms"),
                        (["--sentence-end-ms", "-5"], "must not be negative"),
                        (["--sentence-end-ms", "200", "--no-speculate"], "--no-speculate")):
        assert main(["run", "--source", "demo", *argv]) == 2
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
        assert len(lines) == 1 and words in lines[0] and "Traceback" not in err, err


def test_live_pipeline_ends_a_sentence_early(spoken, tmp_path):
    """The wiring: a paced file, the real recogniser's speculative transcript, the summary's count.
    The hangover is 1 s here, so a recogniser slowed by a busy machine still finishes in it."""
    from edge_runtime.events import EventWriter
    from edge_runtime.options import RunOptions, build_pipeline
    from edge_runtime.sources import FileSource

    ckpt = tiny_checkpoint(tmp_path / "tiny", ["neutral", "joy"])
    writer = EventWriter(None, stdout_format="none")
    options = RunOptions(model=ckpt, threads=2, asr_beam=1, min_silence_ms=1000, sentence_end_ms=N_MS, summary_line=False)
    pipe = build_pipeline(FileSource(spoken, realtime=True), writer, options)
    summary = pipe.run()
    writer.close()
    (event,) = pipe.events
    assert ends_sentence(event.text), event.text  # Whisper tiny.en punctuates this espeak-ng sentence
    assert summary.speculation["sentence_ends"] == 1 and summary.speculation["used"] == 1
    assert event.latency_ms["endpoint"] < 900  # not the 1 s hangover (plus its 32 ms window steps)
