"""The Python API (``from edge_runtime import EmotionStream``): the README's example run as it
is written, audio fed at any rate and channel count, a file read to its end, the JSON lines, and
one-line errors for input it cannot take."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge_runtime import EmotionStream, Event, RunOptions, stream_file
from hbaf.audio import load_audio, resample
from hbaf.contract import SAMPLE_RATE
from hbaf.errors import HBAFError

REPO = Path(__file__).resolve().parents[1]
FIRST_TURN_S = 4.3  # the demo conversation's first turn ends at 3.6 s, the second starts at 4.8 s
EVENT_LINE = re.compile(r"^\s*(\d+\.\d)-\s*(\d+\.\d) s {2}(\w+) (\d\.\d\d) {2}(['\"])(.*)\5$")


def _readme_section() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("\n## Python API\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def _blocks(section: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", section, flags=re.S | re.M)


def _events_printed(text: str) -> list[tuple[float, float, str, str]]:
    found = [EVENT_LINE.match(line) for line in text.splitlines()]
    return [(float(m[1]), float(m[2]), m[3], m[6]) for m in found if m]


@pytest.fixture(scope="module")
def demo() -> Path:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng): the demo conversation cannot be rendered")
    from edge_runtime.demo import demo_conversation

    return demo_conversation()


@pytest.fixture(scope="module")
def first_turn(demo) -> np.ndarray:
    """The demo's first turn, 16 kHz mono float32."""
    return load_audio(demo)[: int(FIRST_TURN_S * SAMPLE_RATE)]


def test_readme_example_runs_as_written(demo):
    """The README's one Python block, run as a program: real events come out, and they are the
    ones the README shows as its output."""
    from edge_runtime.demo import SCRIPT
    from edge_runtime.model_files import open_backend

    section = _readme_section()
    (code,) = _blocks(section, "python")
    (shown,) = _blocks(section, "text")
    assert len([ln for ln in code.splitlines() if ln.strip()]) <= 12, "the example stays short"
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    events = _events_printed(proc.stdout)
    assert len(events) >= 2, proc.stdout
    labels = open_backend(REPO / "hbaf" / "assets" / "default.onnx").labels
    for (start, end, emotion, text), turn in zip(events, SCRIPT):
        assert 0.0 <= start < end and emotion in [*labels, "uncertain"]
        said = set(re.findall(r"[a-z']+", turn.text.lower()))
        heard = set(re.findall(r"[a-z']+", text.lower()))
        assert len(said & heard) >= 0.6 * len(said), (turn.text, text)  # the recogniser heard the scripted turn
    assert f"{len(events)} utterances in" in proc.stdout
    # the output in the README is this program's: the same utterances, times and emotions
    assert [e[:3] for e in _events_printed(shown)] == [e[:3] for e in events], (shown, proc.stdout)


def test_feed_any_rate_and_channels_gives_the_same_events(first_turn, tmp_path):
    """The same speech fed as one 16 kHz mono float block, and as 48 kHz stereo int16 in uneven
    pieces with a rate change on the way: the same utterance and words; the JSON lines written
    to ``output`` are the events' own."""
    path = tmp_path / "events.jsonl"
    with EmotionStream(asr_beam=1, output=path) as plain:
        plain.feed(first_turn, SAMPLE_RATE)
    (a,) = list(plain.events())
    lines = path.read_text().splitlines()
    assert lines[0] == a.to_json() and json.loads(lines[-1])["summary"]["utterances"] == 1

    got: list[Event] = []
    wave48 = resample(first_turn, SAMPLE_RATE, 48000)
    stereo = (np.stack([wave48, 0.8 * wave48], axis=1) * 32767).astype(np.int16)
    with EmotionStream(options=RunOptions(asr_beam=1), on_event=got.append) as fed:
        for i in range(0, 48000, 1111):  # the first second at 48 kHz ...
            fed.feed(stereo[i : min(i + 1111, 48000)], 48000)
        fed.feed(first_turn[SAMPLE_RATE:].reshape(-1, 1), SAMPLE_RATE)  # ... the rest at 16 kHz, as [n, 1]
    summary = fed.close()  # closing again gives the same summary
    assert summary is fed.summary and summary.utterances == 1 and summary.stopped_by is None
    (b,) = got
    assert a.text and b.text.lower().strip(" .") == a.text.lower().strip(" .")
    assert abs(a.start - b.start) < 0.05 and abs(a.end - b.end) < 0.05 and b.emotion == a.emotion
    assert set(b.probs) == set(a.probs) and abs(sum(b.probs.values()) - 1.0) < 1e-3
    assert 4.2 < summary.audio_seconds < 4.4


def test_file_helpers_read_to_the_end(first_turn, tmp_path):
    """``stream_file`` yields a file's events as they come; a stream closed before its file is
    read stops there; an error in the program's ``on_event`` ends the run and comes back."""
    wav = tmp_path / "turn.wav"
    sf.write(wav, np.stack([first_turn, first_turn], axis=1), SAMPLE_RATE)  # stereo, converted by the file source
    events = list(stream_file(wav, asr_beam=1))
    assert len(events) == 1 and "report" in events[0].text.lower() and events[0].utterance == 1
    stopped = EmotionStream.from_file(wav, realtime=True, asr_beam=1)
    summary = stopped.close()
    assert summary.stopped_by == "close" and summary.utterances == 0 and list(stopped.events()) == []
    with pytest.raises(HBAFError, match="no such file"):
        EmotionStream.from_file(tmp_path / "missing.wav")

    def refuse(event: Event) -> None:
        raise RuntimeError(f"the program's own handler failed on {event.text!r}")

    failing = EmotionStream.from_file(wav, asr_beam=1, on_event=refuse)
    with pytest.raises(RuntimeError, match="handler failed on"):  # run() reads the file in this thread
        failing.run()
    assert failing.summary is not None and failing.summary.stopped_by == "error"


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg and len(msg) < 300, msg
    return msg


def test_bad_options_fail_before_any_model_loads():
    for kwargs, words in [({"beam": 5}, "unknown option 'beam'"), ({"asr_beam": 0}, "beam size must be >= 1"),
                          ({"reset_after": -1}, "--reset-after must be >= 0"), ({"options": {"asr_beam": 1}}, "RunOptions"),
                          ({"min_confidence": 2.0}, "between 0 and 1"), ({"on_event": "print"}, "a function")]:
        with pytest.raises(HBAFError) as err:
            EmotionStream(**kwargs)
        assert words in _one_line(err), kwargs


def test_bad_feed_is_one_line_and_the_stream_goes_on(first_turn):
    with EmotionStream(asr_beam=1, on_event=lambda e: None) as stream:
        bad = [
            ((first_turn, 0), "between 4000 and 384000 Hz"),
            ((first_turn, -16000), "between 4000 and 384000 Hz"),
            ((first_turn, 16000.5), "whole number"),
            ((first_turn, "16000"), "whole number"),
            ((first_turn.astype(np.int64), SAMPLE_RATE), "int16, int32 or float"),
            ((first_turn.astype(np.complex64), SAMPLE_RATE), "int16, int32 or float"),
            ((["a", "b"], SAMPLE_RATE), "int16, int32 or float"),
            ((np.zeros((2, 48000), np.float32), 48000), "feed(samples.T, rate)"),
            ((np.zeros((10, 2, 2), np.float32), SAMPLE_RATE), "shape [n] or [n, channels]"),
            ((np.array([0.0, np.nan], np.float32), SAMPLE_RATE), "NaN or infinite"),
            ((first_turn * 32767, SAMPLE_RATE), "as int16"),
        ]
        for args, words in bad:
            with pytest.raises(HBAFError) as err:
                stream.feed(*args)
            assert words in _one_line(err), (args[1], words)
        with pytest.raises(HBAFError) as err:
            list(stream.events())
        assert "on_event" in _one_line(err)
        with pytest.raises(HBAFError) as err:
            stream.run()
        assert "feed() it, then close()" in _one_line(err)
        stream.feed(np.zeros(0, np.int16), SAMPLE_RATE)  # nothing to do
        stream.feed((first_turn * 32767).astype(np.int16), SAMPLE_RATE)  # still works after the errors
    assert stream.summary.utterances == 1
    with pytest.raises(HBAFError) as err:
        stream.feed(first_turn, SAMPLE_RATE)
    assert "after close()" in _one_line(err)
