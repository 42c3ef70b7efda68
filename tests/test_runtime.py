"""The live pipeline (`hbaf-edge run`): memory, events/JSONL, file and microphone paths, signals,
back-pressure, output errors, the demo and the command line."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.asr import WhisperASR
from edge_runtime.backends import Backend
from edge_runtime.model_files import open_backend
from edge_runtime.cli import NO_MIC, main
from edge_runtime.events import Event, EventWriter, format_clock
from edge_runtime.memory import DialogueMemory
from edge_runtime.pipeline import Pipeline
from edge_runtime.mic import MicSource
from edge_runtime.sources import FileSource
from edge_runtime.vad import Segmenter
from helpers import espeak_conversation, tiny_checkpoint
from hbaf.errors import HBAFError
from hbaf.audio import load_audio, resample
from hbaf.contract import SAMPLE_RATE
from hbaf.wer import normalize_words, word_error_rate

REPO = Path(__file__).resolve().parents[1]
LABELS = ["neutral", "joy", "sadness", "anger"]
TURNS = [
    ("en-us+m3", "please call me when you get home tonight"),
    ("en-gb+f3", "i am very happy to see you again"),
    ("en-us+m3", "thank you for coming to the meeting today"),
    ("en-gb+f3", "we will meet again next week"),
]


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", LABELS)


@pytest.fixture(scope="module")
def conversation(tmp_path_factory) -> Path:
    """Four espeak-ng utterances, two voices, 1.2 s pauses, 16 kHz WAV (about 12 s)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    return espeak_conversation(tmp_path_factory.mktemp("speech") / "conversation.wav", TURNS, pause_s=1.2)


@pytest.fixture(scope="module")
def asr() -> WhisperASR:
    return WhisperASR(device="cpu", cpu_threads=2)


@pytest.fixture(scope="module")
def backend(ckpt) -> Backend:
    b = open_backend(ckpt, threads=2)
    b.warmup()
    return b


def _pipeline(source, asr, backend, writer, **kw) -> Pipeline:
    memory = DialogueMemory(backend.context_size, backend.memory_dim)
    return Pipeline(source, Segmenter(), asr, backend, memory, writer, backend.tokenizer(), kw.pop("min_confidence", None), **kw)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ----------------------------------------------------------------------------- memory


def test_memory_left_padded_newest_last():
    m = DialogueMemory(4, 3)
    mem, mask = m.arrays()
    assert mem.shape == (1, 4, 3) and mask.tolist() == [[0, 0, 0, 0]] and not mem.any()
    for i in range(1, 7):
        m.push(np.full(3, float(i)), end=float(i))
    mem, mask = m.arrays()
    assert mask.tolist() == [[1, 1, 1, 1]] and mem[0, :, 0].tolist() == [3, 4, 5, 6]
    m.reset()
    m.push(np.full((1, 3), 9.0))
    mem, mask = m.arrays()
    assert mask.tolist() == [[0, 0, 0, 1]] and mem[0, 3, 0] == 9 and not mem[0, :3].any()
    assert len(m) == 1 and m.resets == 1


def test_memory_window_and_pause_reset():
    m = DialogueMemory(4, 2, window=2, reset_after=30.0)
    for i in range(3):
        m.push(np.full(2, float(i)), end=10.0 + i)
    mem, mask = m.arrays()
    assert mask.tolist() == [[0, 0, 1, 1]] and mem[0, 2:, 0].tolist() == [1, 2]
    assert not m.before(start=40.0)  # 28 s of silence: same dialogue
    assert m.before(start=42.5) and len(m) == 0 and m.resets == 1  # > 30 s: a new one
    off = DialogueMemory(4, 2, window=0)
    off.push(np.ones(2))
    assert len(off) == 0 and not off.arrays()[1].any()
    never = DialogueMemory(4, 2, reset_after=0)
    never.push(np.ones(2), end=0.0)
    assert not never.before(start=1e6) and len(never) == 1
    with pytest.raises(HBAFError, match="outside 0..4"):
        DialogueMemory(4, 2, window=5)
    with pytest.raises(HBAFError, match="64 values"):
        DialogueMemory(4, 2).push(np.ones(64))


# ----------------------------------------------------------------------------- events


def _event(n: int = 1, **kw) -> Event:
    base = dict(
        utterance=n, start=12.31, end=14.12, text="I can't believe this", emotion="anger", confidence=0.82,
        probs={"neutral": 0.1, "anger": 0.82, "joy": 0.08}, gate={"text_to_audio": 0.31, "audio_to_text": 0.64},
        latency_ms={"endpoint": 310.0, "queue": 0.1, "asr": 100.0, "features": 5.0, "fusion": 10.0, "vad_compute": 1.0,
                    "total": 123.4, "speech_end": 433.4},
    )
    base.update(kw)
    return Event(**base)


def test_event_line_and_json():
    e = _event()
    assert e.format_line() == '[00:12.3-00:14.1] anger 0.82  "I can\'t believe this"  433 ms'  # no heads: no parentheses
    unsure = _event(emotion="uncertain", confidence=0.41, uncertain=True, probs={"anger": 0.41, "joy": 0.3})
    assert unsure.format_line().startswith("[00:12.3-00:14.1] uncertain (anger 0.41)")
    d = json.loads(e.to_json())
    assert d["gate"] == {"text_to_audio": 0.31, "audio_to_text": 0.64} and d["uncertain"] is False
    assert set(d["latency_ms"]) >= {"endpoint", "asr", "features", "fusion", "vad_compute", "total", "speech_end"}
    assert format_clock(3725.04) == "1:02:05.0" and format_clock(0) == "00:00.0"


def test_jsonl_flushed_per_event(tmp_path):
    path = tmp_path / "events.jsonl"
    out = io.StringIO()
    with EventWriter(path, stdout=out) as w:
        for n in range(1, 4):
            w.write(_event(n))
            assert len(path.read_text().splitlines()) == n  # on disk before the next event
        w.write_summary({"utterances": 3})
    assert [d.get("utterance") for d in _lines(path)] == [1, 2, 3, None]
    assert _lines(path)[-1] == {"summary": {"utterances": 3}}
    assert out.getvalue().count("\n") == 3 and w.stats.jsonl_lines_written == 4


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full to simulate a full disk")
def test_disk_full_mid_run_warns_once_and_counts():
    out, err = io.StringIO(), io.StringIO()
    w = EventWriter("/dev/full", stdout=out, stderr=err)
    assert w.failure() is None
    for n in range(1, 4):
        w.write(_event(n))
    w.close()
    assert out.getvalue().count("anger 0.82") == 3  # stdout keeps going
    assert err.getvalue().count("warning:") == 1 and "No space left" in err.getvalue()
    assert "free disk space or pass another --output" in err.getvalue()
    assert w.stats.jsonl_lines_lost == 3 and w.stats.jsonl_lines_written == 0
    msg = w.failure()  # what the command line prints as its one error line (exit code 2)
    assert msg is not None and "\n" not in msg
    assert msg.startswith("3 of 3 line(s) could not be written to /dev/full (No space left on device)")
    assert msg.endswith("free disk space or pass another --output")


def _fill(folder: Path) -> Path:
    """Write zeros to ``folder/filler`` until the file system is full."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while True:
            os.write(fd, bytes(4096))
    except OSError as err:
        assert err.errno == 28, err  # ENOSPC
    finally:
        os.close(fd)
    return filler


def test_disk_fills_up_mid_run_keeps_every_written_line(small_disk):
    """A real file system filling up: lines written before stay whole, the partial line is
    removed, later lines are counted as lost, and writing resumes once space is freed."""
    path = small_disk / "events.jsonl"
    out, err = io.StringIO(), io.StringIO()
    w = EventWriter(path, stdout=out, stderr=err)
    w.write(_event(1))
    filler = _fill(small_disk)  # events.jsonl can still grow inside its last page, no further
    room, fits = os.statvfs(small_disk).f_bsize - path.stat().st_size, 0
    while len(_event(fits + 2).to_json()) + 1 <= room:  # the lines that still fit after the first
        room -= len(_event(fits + 2).to_json()) + 1
        fits += 1
    for n in range(2, fits + 5):
        w.write(_event(n))
    lines = _lines(path)  # every line parses: a partial line was cut off again
    assert [d["utterance"] for d in lines] == list(range(1, fits + 2))
    assert w.stats.jsonl_lines_written == fits + 1 and w.stats.jsonl_lines_lost == 3
    assert out.getvalue().count("anger 0.82") == fits + 4 and err.getvalue().count("warning:") == 1
    msg = w.failure()
    assert msg is not None and f"could not be written to {path} (No space left on device)" in msg
    filler.unlink()  # space again: the next event is written after the last whole line
    w.write(_event(99))
    w.close()
    assert [d["utterance"] for d in _lines(path)] == [*range(1, fits + 2), 99]
    assert w.failure().startswith(f"3 of {fits + 5} line(s)")  # the lost lines stay reported


def _unwritable_dir(tmp_path: Path) -> Path:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if os.access(ro, os.W_OK):  # root ignores permission bits: use sysfs, which refuses new files
        return Path("/sys")
    return ro


def test_writer_open_errors(tmp_path):
    with pytest.raises(HBAFError, match="does not exist"):
        EventWriter(tmp_path / "nope" / "events.jsonl")
    with pytest.raises(HBAFError, match="it is a folder"):
        EventWriter(tmp_path)
    with pytest.raises(HBAFError, match="cannot write events") as info:
        EventWriter(_unwritable_dir(tmp_path) / "events.jsonl")
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------- pipeline


def test_pipeline_one_event_per_utterance(conversation, asr, backend, tmp_path):
    path = tmp_path / "events.jsonl"
    out = io.StringIO()
    with EventWriter(path, stdout=out) as writer:
        pipe = _pipeline(FileSource(conversation), asr, backend, writer)
        summary = pipe.run()
    events = _lines(path)
    # the model takes Whisper encoder states: the recogniser's one encoder pass gives them
    assert pipe.worker.shared_encoder and pipe.worker.feature_kind == "whisper-tiny.en"
    assert all(e["latency_ms"]["features"] < 1.0 for e in events[:-1])
    assert [e["utterance"] for e in events[:-1]] == [1, 2, 3, 4]
    assert summary.utterances == 4 and summary.dropped_utterances == 0 and summary.dropped_blocks == 0
    wers = [word_error_rate(ref, e["text"]) for e, (_, ref) in zip(events, TURNS)]
    assert max(wers) <= 0.25, [e["text"] for e in events[:-1]]
    for e in events[:-1]:
        assert abs(sum(e["probs"].values()) - 1.0) < 1e-3 and e["emotion"] in LABELS
        assert 0.0 <= e["gate"]["text_to_audio"] <= 1.0 and e["latency_ms"]["total"] > e["latency_ms"]["asr"] > 0
        assert e["voice"]["emotion"] in LABELS and e["words"]["emotion"] in LABELS and isinstance(e["disagree"], bool)
    assert [e["context"] for e in events[:-1]] == [0, 1, 2, 3]
    assert [e["start"] < e["end"] for e in events[:-1]] == [True] * 4
    final = events[-1]["summary"]
    assert final["utterances"] == 4 and final["latency_ms"]["p50"] > 0 and 11.0 < final["audio_seconds"] < 16.0
    assert final["cold_start"]["model_load_s"] > 0 and final["cold_start"]["first_inference_s"] > 0
    assert final["cold_start"]["asr_first_s"] > 0 and final["peak_rss_mb"] > 0 and 0 < final["real_time_factor"] < 5
    assert out.getvalue().count(" ms\n") == 4 and "summary:" in summary.format()


def test_log_mel_model_gets_its_own_features(conversation, asr, tmp_path):
    """A release-1 model (log-mel input) still runs: the pipeline computes its features itself."""
    import torch

    from hbaf.checkpoint import save_checkpoint
    from hbaf.contract import TOKENIZER_FILE
    from hbaf.model import HBAF, preset
    from hbaf.text import resolve_text_encoder

    torch.manual_seed(0)
    ck = save_checkpoint(HBAF(preset("tiny", feature_kind="log-mel"), LABELS).eval(), tmp_path / "mel",
                         resolve_text_encoder() / TOKENIZER_FILE)
    mel = open_backend(ck, threads=2)
    assert (mel.spec.feature_kind, mel.spec.feature_dim) == ("log-mel", 80)
    with EventWriter(tmp_path / "e.jsonl", stdout=io.StringIO()) as writer:
        pipe = _pipeline(FileSource(conversation), asr, mel, writer)
        summary = pipe.run()
    assert not pipe.worker.shared_encoder and summary.utterances == 4


def test_mic_path_gives_the_same_events(conversation, asr, backend, tmp_path):
    """48 kHz stereo blocks through MicSource's audio callback -> the same utterances and texts."""
    with EventWriter(tmp_path / "file.jsonl", stdout_format="none") as w:
        file_pipe = _pipeline(FileSource(conversation), asr, backend, w)
        file_pipe.run()
    wave48 = resample(load_audio(conversation), SAMPLE_RATE, 48000)
    stereo = np.stack([wave48, 0.9 * wave48], axis=1).astype(np.float32)
    frames = 1536  # 32 ms at 48 kHz, what MicSource asks PortAudio for
    blocks = [stereo[i : i + frames] for i in range(0, len(stereo), frames)]
    mic = MicSource(samplerate=48000, channels=2, queue_blocks=len(blocks) + 1)
    for block in blocks:
        mic._callback(block, len(block), None, None)
    mic.close()  # the "device" is done; blocks() drains what the callback captured
    assert mic.dropped_blocks == 0
    with EventWriter(tmp_path / "mic.jsonl", stdout_format="none") as w:
        mic_pipe = _pipeline(mic, asr, backend, w, drop_when_full=False)  # drops are tested below
        mic_pipe.run()
    file_events, mic_events = file_pipe.events, mic_pipe.events
    assert len(mic_events) == len(file_events) == 4
    assert [normalize_words(e.text) for e in mic_events] == [normalize_words(e.text) for e in file_events]
    for a, b in zip(file_events, mic_events):
        assert abs(a.start - b.start) < 0.05 and abs(a.end - b.end) < 0.05


class SlowBackend(Backend):
    """Test double for timing only: a real backend whose every call takes ``delay`` longer."""

    def __init__(self, inner: Backend, delay: float) -> None:
        super().__init__(inner.path, inner.spec)
        self.inner, self.delay = inner, delay
        self.name, self.precision = inner.name, inner.precision
        self.tokenizer_file, self.first_inference_seconds = inner.tokenizer_file, inner.first_inference_seconds

    def run(self, feeds):
        time.sleep(self.delay)
        return self.inner.run(feeds)


def test_backpressure_bounded_queue_and_drops(conversation, asr, backend, tmp_path):
    path = tmp_path / "events.jsonl"
    slow = SlowBackend(backend, delay=0.5)
    with EventWriter(path, stdout_format="none") as w:
        pipe = _pipeline(FileSource(conversation), asr, slow, w, drop_when_full=True, utterance_queue=1, audio_queue_blocks=1024)
        summary = pipe.run()
    assert pipe.counters.max_utt_q <= 1 and summary.max_queue["utterances"] <= 1
    assert summary.dropped_utterances >= 1
    assert summary.utterances + summary.dropped_utterances == pipe.segmented == 4
    assert _lines(path)[-1]["summary"]["dropped_utterances"] == summary.dropped_utterances


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full to simulate a full disk")
def test_pipeline_on_full_disk_and_uncertain(conversation, asr, backend):
    out, err = io.StringIO(), io.StringIO()
    writer = EventWriter("/dev/full", stdout=out, stderr=err)
    summary = _pipeline(FileSource(conversation), asr, backend, writer, min_confidence=0.99).run()
    writer.close()
    assert summary.utterances == 4 and summary.jsonl_lines_lost == 5  # four events + the summary line
    assert out.getvalue().count("uncertain (") == 4 and err.getvalue().count("warning:") == 1
    assert writer.failure().startswith("5 of 5 line(s) could not be written to /dev/full")


def test_reset_memory_on_request(conversation, asr, backend):
    memory = DialogueMemory(backend.context_size, backend.memory_dim)
    memory.push(np.ones(backend.memory_dim))  # left over from an earlier conversation
    with EventWriter(None, stdout_format="none") as w:
        pipe = Pipeline(FileSource(conversation), Segmenter(), asr, backend, memory, w, backend.tokenizer())
        pipe.reset_memory()
        summary = pipe.run()
    assert [e.context for e in pipe.events] == [0, 1, 2, 3] and summary.memory_resets == 1


# ----------------------------------------------------------------------------- command line


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "edge_runtime.cli", *args]


def _wait_for_lines(path: Path, n: int, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"hbaf-edge exited early ({proc.returncode}): {proc.stderr.read()}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("no event within the timeout")


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGKILL, -9)])
def test_signal_mid_run(conversation, ckpt, tmp_path, sig, code):
    path = tmp_path / "events.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        _cli("run", "--source", str(conversation), "--realtime", "--model", str(ckpt), "--output", str(path), "--threads", "2"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
    )
    _wait_for_lines(path, 1, proc)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    lines = _lines(path)  # every line parses, whatever the signal
    assert lines and "utterance" in lines[0]
    if sig == signal.SIGKILL:
        return
    assert "Traceback" not in stderr and "summary:" in stderr
    assert lines[-1]["summary"]["stopped_by"] == signal.Signals(sig).name
    assert len(lines) - 1 == lines[-1]["summary"]["utterances"] < len(TURNS)
    assert stdout.count(" ms\n") == len(lines) - 1


def test_sigint_while_stdin_stays_open(conversation, ckpt, tmp_path):
    """A source blocked reading stdin must not keep the process alive or crash its shutdown."""
    path = tmp_path / "events.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        _cli("run", "--source", "-", "--model", str(ckpt), "--output", str(path), "--format", "none"),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO,
    )
    pcm = (np.clip(load_audio(conversation)[: 5 * SAMPLE_RATE], -1, 1) * 32767).astype("<i2").tobytes()
    proc.stdin.write(pcm)
    proc.stdin.flush()  # and keep it open, as a live `arecord | hbaf-edge run -` would
    _wait_for_lines(path, 1, proc)
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)  # stdin still open
    finally:
        proc.kill()
    stderr = proc.stderr.read().decode()
    assert proc.returncode == 130, stderr
    assert "Fatal Python error" not in stderr and "Traceback" not in stderr
    assert _lines(path)[-1]["summary"]["stopped_by"] == "SIGINT"


def test_cli_unwritable_output_one_line(conversation, ckpt, tmp_path, capsys):
    target = _unwritable_dir(tmp_path) / "events.jsonl"
    code = main(["run", "--source", str(conversation), "--model", str(ckpt), "--output", str(target)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: cannot write events") and err.count("\n") == 1 and "Traceback" not in err


def test_cli_bad_model_and_flags(conversation, ckpt, tmp_path, capsys):
    bad = tmp_path / "model.onnx"
    bad.write_text("nope")
    assert main(["run", "--source", str(conversation), "--model", str(bad)]) == 2
    assert "not an ONNX model" in capsys.readouterr().err
    assert main(["run", "--min-confidence", "2"]) == 2
    assert "between 0 and 1" in capsys.readouterr().err
    assert main(["run", "--source", str(tmp_path / "missing.wav"), "--model", str(ckpt)]) == 2
    assert "no such file" in capsys.readouterr().err


def test_cli_without_microphone_suggests_demo(ckpt, capsys):
    from edge_runtime.mic import list_input_devices

    try:
        if list_input_devices():
            pytest.skip("this machine has a microphone")
    except HBAFError:
        pass
    assert main(["run", "--model", str(ckpt)]) == 2
    err = capsys.readouterr().err
    assert NO_MIC in err and "--source demo" in err


def test_cli_devices_runs():
    """`hbaf-edge devices` lists the input devices PortAudio finds (exit 0); with none it is a
    one-line error (exit 2) that names the problem and points at the other sources. Which
    branch applies is decided here, by asking PortAudio directly."""
    from helpers import assert_one_line_error

    try:
        import sounddevice
    except (ImportError, OSError):  # no PortAudio library: nothing can be listed either
        devices = []
    else:
        try:
            devices = list(sounddevice.query_devices())
        except sounddevice.PortAudioError:
            devices = []
    has_input = any(int(d["max_input_channels"]) > 0 for d in devices)
    proc = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "devices"], capture_output=True, text=True, timeout=120)
    if has_input:
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "index" in proc.stdout and "--device" in proc.stdout, proc.stdout
    else:
        line = assert_one_line_error(proc, "--source FILE", "--source -", "demo")
        assert "microphone" in line or "input device" in line, line
        assert proc.stdout == "", proc.stdout


# ----------------------------------------------------------------------------- demo, default model


def test_demo_conversation_cached(tmp_path):
    from edge_runtime.demo import SCRIPT, demo_conversation, demo_script

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    wav = demo_conversation(tmp_path)
    turns = demo_script(wav)
    audio = load_audio(wav)
    assert len(turns) == len(SCRIPT) and len({t["speaker"] for t in turns}) == 3
    assert 40.0 <= audio.size / SAMPLE_RATE <= 60.0
    assert all(b["start"] - a["end"] >= 0.9 for a, b in zip(turns, turns[1:]))
    stamp = wav.stat().st_mtime_ns
    assert demo_conversation(tmp_path) == wav and wav.stat().st_mtime_ns == stamp


def test_default_model_path(tmp_path, monkeypatch, ckpt):
    from edge_runtime.model_files import _model_in, default_model_path
    from hbaf import io

    packaged = _model_in(io.ASSETS_DIR)
    assert packaged is not None and packaged.name == io.PACKAGED_MODEL, "the package ships its default model"
    assert default_model_path() == packaged
    # Without a packaged model the search falls back to $HBAF_HOME/models/default.
    monkeypatch.setattr(io, "ASSETS_DIR", tmp_path / "pkg" / "assets")
    monkeypatch.setenv("HBAF_HOME", str(tmp_path))
    with pytest.raises(HBAFError, match="reinstall hbaf-edge"):
        default_model_path()
    shutil.copytree(ckpt, tmp_path / "models" / "default")
    assert default_model_path() == tmp_path / "models" / "default"
    (tmp_path / "models" / "default" / "model.onnx").write_bytes(b"")
    assert default_model_path().name == "model.onnx"


def test_stop_from_another_thread_finishes_cleanly(conversation, asr, backend, tmp_path):
    path = tmp_path / "events.jsonl"
    with EventWriter(path, stdout_format="none") as w:
        pipe = _pipeline(FileSource(conversation, realtime=True), asr, backend, w)
        timer = threading.Timer(3.5, pipe.stop, args=("SIGINT",))
        timer.start()
        summary = pipe.run()
    assert summary.stopped_by == "SIGINT" and summary.utterances == len(_lines(path)) - 1 < len(TURNS)
    assert summary.audio_seconds < 6.0
