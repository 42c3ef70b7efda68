"""Nothing a user points at is lost: long utterances, outputs, inputs, model metadata, signals.

Each case runs the real command (``python -m edge_runtime.cli run``, a new process) on real
files, FIFOs and pipes, or the real function it concerns. The cases and their outcomes are
listed in docs/RELIABILITY.md.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge_runtime.long_audio import window_bounds
from hbaf.features import SAMPLE_RATE, load_audio
from helpers import tiny_checkpoint
from test_faults import REPO, _cmd, _env, assert_one_line_error, events_and_summary, jsonl, run_cli

LABELS = ["neutral", "joy", "sadness", "anger"]

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng renders the test speech; apt-get install espeak-ng")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", LABELS)


@pytest.fixture(scope="module")
def onnx_model(ckpt, tmp_path_factory) -> Path:
    from export.onnx_export import export_onnx

    return export_onnx(ckpt, tmp_path_factory.mktemp("onnx") / "tiny.onnx", exporter="torchscript", check=False)


def _speak(text: str, voice: str, path: Path, speed: int = 150) -> np.ndarray:
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text], check=True, capture_output=True)
    return load_audio(path)


@pytest.fixture(scope="module")
def conv_wav(tmp_path_factory) -> Path:
    """Two utterances with pauses (about 6 s), 16 kHz 16-bit."""
    folder = tmp_path_factory.mktemp("conv")
    a = _speak("please call me when you get home tonight", "en-us+m3", folder / "a.wav")
    b = _speak("i am very happy to see you again", "en-gb+f3", folder / "b.wav")
    z = lambda s: np.zeros(int(s * SAMPLE_RATE), np.float32)  # noqa: E731
    x = np.concatenate([z(0.5), a, z(1.2), b, z(1.0)])
    path = folder / "conversation.wav"
    sf.write(str(path), 0.8 * x / np.abs(x).max(), SAMPLE_RATE, subtype="PCM_16")
    return path


# ----------------------------------------------------------------------------- 1. long utterances


def test_window_bounds_cover_everything_and_cut_in_pauses():
    """The pure cut: pieces cover the audio end to end, none longer than the window, and each
    cut falls inside the pause nearest the window's end (not in a brief gap inside a word)."""
    rng = np.random.default_rng(0)
    x = (0.3 * rng.standard_normal(35 * SAMPLE_RATE)).astype(np.float32)  # 35 s of "speech"
    pauses = [(8.2, 8.7), (16.9, 17.3), (25.0, 25.6)]
    for a, b in pauses:
        x[int(a * SAMPLE_RATE): int(b * SAMPLE_RATE)] = 0.0
    for s in np.arange(0.3, 35, 0.9):  # 30 ms digital-silence gaps inside the speech (stop consonants)
        x[int(s * SAMPLE_RATE): int((s + 0.03) * SAMPLE_RATE)] = 0.0
    window = 10 * SAMPLE_RATE
    bounds = window_bounds(x, window)
    assert bounds[0][0] == 0 and bounds[-1][1] == x.size
    assert all(b0[1] == b1[0] for b0, b1 in zip(bounds, bounds[1:]))
    assert all(0 < b - a <= window for a, b in bounds)
    cuts = [a / SAMPLE_RATE for a, _ in bounds[1:]]
    assert len(cuts) == 3
    for cut, (a, b) in zip(cuts, pauses):
        assert a < cut < b, (cuts, pauses)
    assert window_bounds(x[:window], window) == [(0, window)]


@pytest.fixture(scope="module")
def long_speech(tmp_path_factory) -> tuple[Path, str]:
    """86 s of continuous speech (the demo script twice, its three voices, 0.2 s between
    sentences): one utterance far longer than Whisper's 30 s window."""
    from edge_runtime.demo import SCRIPT, VOICES

    folder = tmp_path_factory.mktemp("long")
    pieces, texts = [], []
    for i, turn in enumerate(SCRIPT * 2):
        pieces += [_speak(turn.text, VOICES[turn.speaker], folder / f"t{i}.wav", 165), np.zeros(int(0.2 * SAMPLE_RATE), np.float32)]
        texts.append(turn.text)
    path = folder / "long.wav"
    sf.write(str(path), np.concatenate(pieces), SAMPLE_RATE, subtype="PCM_16")
    return path, " ".join(texts)


def test_long_utterance_keeps_its_words(long_speech, ckpt, tmp_path):
    """``--max-utterance-s`` above Whisper's window: the one event holds the words of the whole
    86 s (it used to hold about two thirds of them: 173 of 258 words, WER 0.37, exit 0)."""
    from edge_runtime.asr import normalize_words, word_error_rate

    path, ref = long_speech
    out = tmp_path / "events.jsonl"
    run = run_cli("--source", str(path), "--model", str(ckpt), "--output", str(out), "--max-utterance-s", "90",
                  "--min-silence-ms", "2000", "--format", "none", "--threads", "2")
    assert run.rc == 0 and "Traceback" not in run.stderr, run.stderr
    events, _ = events_and_summary(out)
    assert len(events) == 1 and events[0]["end"] - events[0]["start"] > 80
    text = events[0]["text"]
    assert len(normalize_words(text)) >= 0.85 * len(normalize_words(ref)), text
    assert word_error_rate(ref, text) <= 0.25, text
