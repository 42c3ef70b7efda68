"""Faults a user meets, driven through the real command (``python -m edge_runtime.cli run``).

Every case checks what a user sees: the exit code, a single ``error: ...`` line on stderr
(never a traceback) when the run cannot go on, and an events file in which every line
still parses. Bad files are built here (espeak-ng speech, soundfile, byte surgery on real
files); the model is a tiny, untrained HBAF checkpoint and its ONNX export.

The cases and their outcomes are listed in docs/RELIABILITY.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from hbaf.checkpoint import save_checkpoint
from helpers import tiny_checkpoint
from hbaf.errors import HBAFError
from hbaf.audio import load_audio, resample
from hbaf.contract import SAMPLE_RATE
from hbaf.model import HBAF, preset
from hbaf.wer import word_error_rate

REPO = Path(__file__).resolve().parents[1]
LABELS = ["neutral", "joy", "sadness", "anger"]
SAY_A = "please call me when you get home tonight"
SAY_B = "i am very happy to see you again"

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng renders the test speech; apt-get install espeak-ng")


# ----------------------------------------------------------------------------- helpers


@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str
    seconds: float


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **extra}


def _cmd(*args: str | bytes | os.PathLike) -> list:
    return [sys.executable, "-m", "edge_runtime.cli", "run", *args]


def run_cli(*args: str | bytes | os.PathLike, prefix: tuple = (), timeout: float = 180.0, env: dict | None = None) -> Run:
    """``hbaf-edge run ARGS`` in a fresh interpreter, as a user would type it."""
    t0 = time.monotonic()
    proc = subprocess.run([*prefix, *_cmd(*args)], capture_output=True, timeout=timeout, env=env or _env(), cwd=REPO)
    return Run(proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "backslashreplace"),
               time.monotonic() - t0)


def jsonl(path: str | bytes | os.PathLike) -> list[dict]:
    """Every line of an events file, parsed (fails the test if any line is not JSON)."""
    if not os.path.exists(path):
        return []
    with open(path, "rb") as fh:
        return [json.loads(line) for line in fh.read().decode("utf-8").splitlines()]


def events_and_summary(path) -> tuple[list[dict], dict]:
    lines = jsonl(path)
    assert lines and "summary" in lines[-1], f"no summary line at the end of {path!r}"
    events = lines[:-1]
    assert all("utterance" in e for e in events)
    assert lines[-1]["summary"]["utterances"] == len(events)
    return events, lines[-1]["summary"]


def assert_one_line_error(run: Run, *needles: str, alone: bool = True) -> str:
    """Exit code 2, no traceback, exactly one ``error:`` line, last on stderr (the only line when ``alone``)."""
    assert "Traceback" not in run.stderr, run.stderr
    assert run.rc == 2, (run.rc, run.stderr)
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], run.stderr
    if alone:
        assert lines == errors, run.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def assert_valid_event(e: dict) -> None:
    probs = list(e["probs"].values())
    assert set(e["probs"]) == set(LABELS) and all(0.0 <= p <= 1.0 for p in probs) and abs(sum(probs) - 1.0) < 2e-3
    assert e["emotion"] in LABELS and e["confidence"] == max(probs)
    assert all(0.0 <= g <= 1.0 for g in e["gate"].values()) and set(e["gate"]) == {"text_to_audio", "audio_to_text"}
    assert e["start"] < e["end"] and e["latency_ms"]["total"] > 0


def _speak(text: str, voice: str, folder: Path, speed: int = 150) -> np.ndarray:
    path = folder / f"{abs(hash((text, voice)))}.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text], check=True, capture_output=True)
    return load_audio(path)


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SAMPLE_RATE), np.float32)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", LABELS)


@pytest.fixture(scope="module")
def onnx_model(ckpt, tmp_path_factory) -> Path:
    from export.onnx_export import export_onnx

    # TorchScript is the fast exporter; exporter parity has its own tests
    return export_onnx(ckpt, tmp_path_factory.mktemp("onnx") / "tiny.onnx", exporter="torchscript", check=False)


@pytest.fixture(scope="module")
def voice(tmp_path_factory) -> dict[str, np.ndarray]:
    """Real espeak-ng speech (16 kHz float): two sentences and two non-speech vocal sounds."""
    folder = tmp_path_factory.mktemp("voice")
    return {
        "a": _speak(SAY_A, "en-us+m3", folder),
        "b": _speak(SAY_B, "en-gb+f3", folder),
        "hum": _speak("nnnnnnnnnn", "en-us", folder, 175),
        "ooh": _speak("ooooooooo", "en-gb+f3", folder, 175),
    }


@pytest.fixture(scope="module")
def conversation(voice) -> np.ndarray:
    """Two utterances with pauses, about 7.8 s at 16 kHz, peak 0.8."""
    x = np.concatenate([_silence(0.5), voice["a"], _silence(1.2), voice["b"], _silence(1.0)])
    return (0.8 * x / np.abs(x).max()).astype(np.float32)


@pytest.fixture(scope="module")
def conv_wav(conversation, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("conv") / "conversation.wav"
    sf.write(str(path), conversation, SAMPLE_RATE, subtype="PCM_16")
    return path


# ----------------------------------------------------------------------------- unreadable audio


def _corrupt(kind: str, good: Path, folder: Path) -> Path:
    raw = bytearray(good.read_bytes())
    path = folder / f"{kind}.wav"
    if kind == "empty":
        raw = bytearray()
    elif kind == "no-samples":
        sf.write(str(path), _silence(0), SAMPLE_RATE, subtype="PCM_16")  # a valid header, 0 frames
        return path
    elif kind == "cut-in-header":
        raw = raw[:30]
    elif kind == "unknown-codec":
        raw[20:22] = struct.pack("<H", 0x1234)  # WAVE format tag
    elif kind == "rate-zero":
        raw[24:28] = struct.pack("<I", 0)
    elif kind == "no-fmt-chunk":
        raw[12:16] = b"junk"
    elif kind == "text-file":
        raw = bytearray(b"this is a text file with a .wav name\n" * 4)
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize("kind, needle", [
    ("empty", "is empty"),
    ("no-samples", "no audio samples"),
    ("cut-in-header", "not a readable audio file"),
    ("unknown-codec", "not a readable audio file"),
    ("rate-zero", "not a readable audio file"),
    ("no-fmt-chunk", "not a readable audio file"),
    ("text-file", "not a readable audio file"),
])
def test_unreadable_audio_is_one_line_error(kind, needle, conv_wav, ckpt, tmp_path):
    bad = _corrupt(kind, conv_wav, tmp_path)
    out = tmp_path / "events.jsonl"
    out.write_text('{"utterance": 1, "text": "from an earlier run"}\n')
    run = run_cli("--source", str(bad), "--model", str(ckpt), "--output", str(out))
    msg = assert_one_line_error(run, needle, str(bad))
    assert "convert" in msg or "re-record" in msg  # it says what to do
    assert jsonl(out) == [{"utterance": 1, "text": "from an earlier run"}]  # earlier events untouched


# ----------------------------------------------------------------------------- odd but valid audio


def _odd_format(kind: str, conversation: np.ndarray, folder: Path) -> tuple[Path, int]:
    """(file, utterances it holds)."""
    path = folder / f"{kind}.wav"
    if kind == "u8-8k-mono":
        sf.write(str(path), resample(conversation, SAMPLE_RATE, 8000), 8000, subtype="PCM_U8")
    elif kind == "s24-48k-6ch":
        w48 = resample(conversation, SAMPLE_RATE, 48000)
        sf.write(str(path), np.stack([w48 * g for g in (1.0, 0.8, 0.6, 0.5, 0.3, 0.1)], axis=1), 48000, subtype="PCM_24")
    elif kind == "f32-stereo-nan-inf-clipped":
        x = np.stack([2.5 * conversation, 1.5 * conversation], axis=1).astype(np.float32)  # peaks 2.0 and 1.2
        x[1000:1100, 0] = np.nan
        x[20000:20010, 1] = np.inf
        x[30000:30010, 0] = -np.inf
        sf.write(str(path), x, SAMPLE_RATE, subtype="FLOAT")
        back, _ = sf.read(str(path), dtype="float32", always_2d=True)
        assert np.isnan(back).any() and np.isinf(back).any() and np.nanmax(np.abs(back[np.isfinite(back)])) > 1.5
    elif kind == "data-cut-short":  # header promises 7.8 s, the file holds the first 3.9 s
        sf.write(str(path), conversation, SAMPLE_RATE, subtype="PCM_16")
        raw = path.read_bytes()
        path.write_bytes(raw[: len(raw) // 2])
        return path, 1
    return path, 2


@pytest.mark.parametrize("kind", ["u8-8k-mono", "s24-48k-6ch", "f32-stereo-nan-inf-clipped", "data-cut-short"])
def test_odd_formats_give_events(kind, conversation, ckpt, tmp_path):
    path, expected = _odd_format(kind, conversation, tmp_path)
    out = tmp_path / "events.jsonl"
    run = run_cli("--source", str(path), "--model", str(ckpt), "--output", str(out), "--threads", "2")
    assert run.rc == 0 and "Traceback" not in run.stderr and "error:" not in run.stderr, run.stderr
    events, summary = events_and_summary(out)
    assert len(events) == expected, [e["text"] for e in events]
    for e, ref in zip(events, (SAY_A, SAY_B)):
        assert_valid_event(e)
        assert word_error_rate(ref, e["text"]) <= 0.5, e["text"]
    full = conversation.size / SAMPLE_RATE
    assert summary["audio_seconds"] == pytest.approx(full if expected == 2 else full / 2, abs=0.1)
    assert summary["dropped_blocks"] == 0 and summary["stopped_by"] is None
    assert run.stdout.count(" ms\n") == expected


def test_silence_only_gives_no_events_and_a_clean_summary(ckpt, tmp_path):
    path = tmp_path / "silence-44k.wav"
    rng = np.random.default_rng(0)
    sf.write(str(path), (1e-3 * rng.standard_normal(44100 * 6)).astype(np.float32), 44100, subtype="PCM_16")
    out = tmp_path / "events.jsonl"
    run = run_cli("--source", str(path), "--model", str(ckpt), "--output", str(out))
    assert run.rc == 0 and "Traceback" not in run.stderr and "error:" not in run.stderr, run.stderr
    events, summary = events_and_summary(out)
    assert events == [] and summary["audio_seconds"] == pytest.approx(6.0, abs=0.01)
    assert summary["latency_ms"] == {} and summary["stopped_by"] is None and run.stdout == ""
    assert "summary: 0 utterance(s)" in run.stderr


def test_asr_empty_text_still_gives_a_valid_event(voice, ckpt, tmp_path):
    """A hummed 'nnnn' and a sustained 'oooo': the VAD hears a voice, Whisper writes nothing (its
    no-speech rule, or punctuation only); each still gets an event with valid probabilities and gates."""
    x = np.concatenate([_silence(0.5), voice["a"], _silence(1.2), voice["hum"], _silence(1.2), voice["ooh"], _silence(1.2)])
    path = tmp_path / "hum.wav"
    sf.write(str(path), 0.8 * x / np.abs(x).max(), SAMPLE_RATE, subtype="PCM_16")
    out = tmp_path / "events.jsonl"
    run = run_cli("--source", str(path), "--model", str(ckpt), "--output", str(out), "--format", "json")
    assert run.rc == 0 and "Traceback" not in run.stderr, run.stderr
    events, _ = events_and_summary(out)
    assert len(events) == 3 and word_error_rate(SAY_A, events[0]["text"]) <= 0.25
    assert "" in [e["text"] for e in events[1:]], [e["text"] for e in events]
    for e in events:
        assert_valid_event(e)
    assert [json.loads(ln) for ln in run.stdout.splitlines()[:3]] == events  # stdout carries the same events


def test_non_utf8_paths(conv_wav, ckpt, tmp_path):
    """A source and an output whose names are not valid UTF-8 (bytes from another locale)."""
    folder = os.fsencode(tmp_path)
    src = folder + b"/\xff\xfe-recording.wav"
    out = folder + b"/events-\xe9\xff.jsonl"
    with open(src, "wb") as fh:
        fh.write(conv_wav.read_bytes())
    run = run_cli("--source", src, "--model", str(ckpt), "--output", out, "--format", "json")
    assert run.rc == 0 and "Traceback" not in run.stderr, run.stderr
    events, summary = events_and_summary(out)
    assert len(events) == 2
    assert os.fsencode(summary["source"]) == src  # the name survives the JSON round trip
    assert [json.loads(ln) for ln in run.stdout.splitlines()] == [*events, {"summary": summary}]


# ----------------------------------------------------------------------------- output location


def _read_only_dir(tmp_path: Path) -> tuple[Path, tuple]:
    """(folder, command prefix) such that the command cannot create files in the folder."""
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() != 0:
        ro.chmod(0o555)
        return ro, ()
    # root ignores permission bits: a read-only bind mount in a private mount namespace
    script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
    prefix = ("unshare", "--mount", "sh", "-c", script, "sh", str(ro))
    probe = subprocess.run([*prefix, "touch", str(ro / "probe")], capture_output=True, text=True)
    if probe.returncode != 0 and "Read-only" in probe.stderr:
        return ro, prefix
    return Path("/sys"), ()  # sysfs refuses new files, even to root


def test_read_only_output_fails_before_loading_models(conv_wav, ckpt, tmp_path):
    folder, prefix = _read_only_dir(tmp_path)
    run = run_cli("--source", str(conv_wav), "--model", str(ckpt), "--output", str(folder / "events.jsonl"), prefix=prefix)
    msg = assert_one_line_error(run, "cannot write events", "pass --output")
    assert "read-only file system" in msg or "permission denied" in msg


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full to simulate a full disk")
def test_full_disk_output_keeps_stdout_and_fails_at_the_end(conv_wav, ckpt):
    run = run_cli("--source", str(conv_wav), "--model", str(ckpt), "--output", "/dev/full", "--format", "json")
    # every event still reaches stdout, the summary is printed, then one error line and exit code 2
    assert_one_line_error(run, "3 of 3 line(s) could not be written to /dev/full (No space left on device)",
                          "free disk space or pass another --output", alone=False)
    lines = [json.loads(ln) for ln in run.stdout.splitlines()]
    assert len(lines) == 3 and lines[-1]["summary"]["utterances"] == 2
    # stdout's summary counts the summary line's own loss too, as stderr does (it used to say 2 here, 3 there)
    assert lines[-1]["summary"]["jsonl_lines_lost"] == 3
    assert run.stderr.count("warning: writing /dev/full failed (No space left on device)") == 1
    assert "JSONL lines lost: 3" in run.stderr and "summary: 2 utterance(s)" in run.stderr


def test_disk_fills_up_mid_run(conv_wav, ckpt, small_disk):
    """The events file's disk fills up between the first and the second event: the earlier lines
    and the first event stay whole in the file, the rest goes to stdout, exit code 2."""
    out = small_disk / "events.jsonl"
    earlier = '{"utterance": 1, "text": "from an earlier run"}\n'
    page = os.statvfs(small_disk).f_bsize
    # earlier lines leave 700 bytes in the file's last page: one event line (~450 bytes) fits, two do not
    out.write_text(earlier * ((page - 700) // len(earlier)))
    fd = os.open(small_disk / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while True:
            os.write(fd, bytes(4096))
    except OSError:
        pass  # full
    finally:
        os.close(fd)
    before = jsonl(out)
    run = run_cli("--source", str(conv_wav), "--model", str(ckpt), "--output", str(out), "--format", "json")
    assert_one_line_error(run, f"2 of 3 line(s) could not be written to {out} (No space left on device)",
                          "free disk space or pass another --output", alone=False)
    lines = jsonl(out)  # every line parses: the second event's partial line was removed
    assert lines[: len(before)] == before and len(lines) == len(before) + 1
    stdout = [json.loads(ln) for ln in run.stdout.splitlines()]
    assert len(stdout) == 3 and stdout[0] == lines[-1] and stdout[-1]["summary"]["utterances"] == 2
    assert "summary: 2 utterance(s)" in run.stderr and "JSONL lines lost: 2" in run.stderr


# ----------------------------------------------------------------------------- bad model files


def _bad_model(kind: str, ckpt: Path, onnx_model: Path, folder: Path) -> Path:
    if kind == "checkpoint-weights-cut":
        cut = folder / "cut-ckpt"
        shutil.copytree(ckpt, cut)
        data = (cut / "model.safetensors").read_bytes()
        (cut / "model.safetensors").write_bytes(data[: len(data) // 2])
        return cut
    if kind == "checkpoint-weights-swapped":  # config of one model, weights of another with the same shapes
        other = folder / "other"
        torch.manual_seed(1)
        save_checkpoint(HBAF(preset("tiny"), LABELS), other, ckpt / "tokenizer.json")
        mixed = folder / "mixed"
        shutil.copytree(ckpt, mixed)
        shutil.copyfile(other / "model.safetensors", mixed / "model.safetensors")
        return mixed
    if kind == "onnx-cut":
        path = folder / "cut.onnx"
        path.write_bytes(onnx_model.read_bytes()[: onnx_model.stat().st_size // 2])
        return path
    if kind == "onnx-named-engine":
        path = folder / "tiny.10.3.0.30.orin.fp16.engine"
        shutil.copyfile(onnx_model, path)
        return path
    if kind == "weights-named-onnx":
        path = folder / "weights.onnx"
        shutil.copyfile(ckpt / "model.safetensors", path)
        return path
    if kind == "text-named-onnx":
        path = folder / "model.onnx"
        path.write_text("not a model\n")
        return path
    if kind == "pickle-pt":
        path = folder / "model.pt"
        path.write_bytes(b"\x80\x04\x95junk")
        return path
    if kind in ("engine-cut", "engine-no-sidecar"):
        from hbaf.contract import ModelSpec, Profiles, Sidecar, sidecar_path

        payload = bytes(range(256)) * 4096  # stands for the serialized engine; never deserialized here
        path = folder / "tiny.10.3.0.30.orin.fp16.engine"
        path.write_bytes(payload[: len(payload) // 3])
        if kind == "engine-cut":
            side = Sidecar(
                model=ModelSpec(labels=tuple(LABELS), context_size=4, memory_dim=128),
                onnx_sha256=hashlib.sha256(onnx_model.read_bytes()).hexdigest(), tensorrt_version="10.3.0.30",
                gpu_name="Orin", compute_capability="8.7", precision="fp16", profiles=Profiles(),
                package_version="0", built_at="2025-01-01T00:00:00+00:00",
                onnx_path=str(onnx_model), engine_sha256=hashlib.sha256(payload).hexdigest(), engine_bytes=len(payload),
            )
            sidecar_path(path).write_text(side.to_json())
        return path
    if kind == "missing":
        return folder / "nowhere.onnx"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind, needle", [
    ("checkpoint-weights-cut", "sha256 mismatch"),
    ("checkpoint-weights-swapped", "does not belong"),
    ("onnx-cut", "not a readable ONNX model"),
    ("onnx-named-engine", "rename it to .onnx"),
    ("weights-named-onnx", "not an ONNX model"),
    ("text-named-onnx", "not an ONNX model"),
    ("pickle-pt", "unknown model type"),
    ("engine-cut", "truncated or replaced"),
    ("engine-no-sidecar", "has no sidecar"),
    ("missing", "model not found"),
])
def test_bad_model_file_is_one_line_error(kind, needle, ckpt, onnx_model, conv_wav, tmp_path):
    model = _bad_model(kind, ckpt, onnx_model, tmp_path)
    out = tmp_path / "events.jsonl"
    out.write_text('{"utterance": 7}\n')
    run = run_cli("--source", str(conv_wav), "--model", str(model), "--output", str(out))
    assert_one_line_error(run, needle, model.name)
    assert jsonl(out) == [{"utterance": 7}]


@pytest.mark.parametrize("asr, needle", [
    ("/nonexistent/whisper", "ASR model path not found"),
    ("TMP", "not a CTranslate2 Whisper model"),
    ("TMP/junk", "cannot load ASR model"),
])
def test_bad_asr_model_is_one_line_error(asr, needle, ckpt, conv_wav, tmp_path):
    if asr == "TMP/junk":
        (tmp_path / "junk").mkdir()
        (tmp_path / "junk" / "model.bin").write_bytes(b"\x00" * 64)
    asr = asr.replace("TMP", str(tmp_path))
    run = run_cli("--source", str(conv_wav), "--model", str(ckpt), "--asr", asr)
    assert_one_line_error(run, needle, asr)


def test_bad_asr_beam_is_one_line_error(ckpt, conv_wav):
    assert_one_line_error(run_cli("--source", str(conv_wav), "--model", str(ckpt), "--asr-beam", "0"), "--asr-beam 0")


# ----------------------------------------------------------------------------- live faults


def test_microphone_unplugged_mid_utterance(voice, ckpt, tmp_path, monkeypatch, capsys):
    """The device vanishes in the middle of the second utterance. Only the OS side is simulated (a
    stream object that goes inactive, as PortAudio reports an unplugged device); the callback,
    resampler, VAD, ASR, model and writer are the real ones, run through the command's main()."""
    from edge_runtime import cli
    from edge_runtime.mic import MicSource
    from hbaf.audio import StreamResampler

    speech = np.concatenate([_silence(0.3), voice["a"], _silence(0.8), voice["b"][: int(0.6 * voice["b"].size)]])
    w48 = resample(0.8 * speech / np.abs(speech).max(), SAMPLE_RATE, 48000)
    captured = np.stack([w48, 0.9 * w48], axis=1).astype(np.float32)
    frames = 1536  # 32 ms at 48 kHz

    class UnpluggedStream:
        active = True

        def stop(self) -> None:
            pass

        def close(self) -> None:
            pass

    def start(self: MicSource) -> None:  # what sounddevice would do: open 48 kHz stereo, call back in real time
        if self._stream is not None or self.closed:
            return
        self.samplerate, self.channels, self._resampler = 48000, 2, StreamResampler(48000)
        stream = self._stream = UnpluggedStream()

        def audio_thread() -> None:
            t0 = time.perf_counter()
            for i in range(0, len(captured), frames):
                time.sleep(max(0.0, t0 + i / 48000 - time.perf_counter()))
                self._callback(captured[i : i + frames], frames, None, None)
            stream.active = False  # unplugged

        threading.Thread(target=audio_thread, daemon=True).start()

    monkeypatch.setattr(MicSource, "start", start)
    out = tmp_path / "events.jsonl"
    rc = cli.main(["run", "--source", "mic", "--model", str(ckpt), "--output", str(out), "--threads", "2"])
    err = capsys.readouterr().err
    run = Run(rc, "", err, 0.0)
    assert_one_line_error(run, "input device", "disappeared", "hbaf-edge devices", alone=False)
    events, summary = events_and_summary(out)
    assert summary["stopped_by"] == "error" and summary["dropped_utterances"] == 0 and summary["dropped_blocks"] == 0
    assert len(events) == 2, [e["text"] for e in events]  # the utterance cut by the unplug is still delivered
    assert word_error_rate(SAY_A, events[0]["text"]) <= 0.25 and events[1]["text"]
    for e in events:
        assert_valid_event(e)


def _wait_for_events(path: Path, n: int, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if len(jsonl(path)) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"hbaf-edge exited early ({proc.returncode}): {proc.stderr.read().decode()}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"no event within {timeout} s")


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_signal_mid_utterance(sig, code, voice, ckpt, tmp_path):
    """Raw PCM on a pipe that stays open (``arecord | hbaf-edge run -``): one utterance, then half
    of the next, then the signal. The half utterance is finished, the summary written, and the
    process leaves with 128 + signal number. SIGHUP (the terminal closed) is a stop like SIGTERM:
    it used to kill the process, losing the summary and the utterance in progress."""
    out = tmp_path / "events.jsonl"
    proc = subprocess.Popen(_cmd("--source", "-", "--model", str(ckpt), "--output", str(out), "--format", "json"),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(), cwd=REPO)
    try:
        pcm = lambda x: (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()  # noqa: E731
        proc.stdin.write(pcm(np.concatenate([_silence(0.5), voice["a"], _silence(1.2)])))
        proc.stdin.flush()
        _wait_for_events(out, 1, proc)
        half = voice["b"][: (int(0.6 * voice["b"].size) // 512) * 512]
        proc.stdin.write(pcm(half))
        proc.stdin.flush()
        time.sleep(1.5)  # the segmenter is now inside the second utterance; stdin stays open
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = stderr.decode()
    assert proc.returncode == code and "Traceback" not in stderr and "Fatal Python error" not in stderr, stderr
    events, summary = events_and_summary(out)
    assert summary["stopped_by"] == sig.name and len(events) == 2 and summary["dropped_utterances"] == 0
    assert events[1]["text"] and events[1]["end"] - events[1]["start"] < voice["b"].size / SAMPLE_RATE
    for e in events:
        assert_valid_event(e)
    assert [json.loads(ln) for ln in stdout.decode().splitlines()] == [*events, {"summary": summary}]
    assert f"[stopped by {sig.name}]" in stderr


# ----------------------------------------------------------------------------- a long file


@pytest.mark.slow
def test_twenty_minute_file(voice, ckpt, tmp_path):
    """Twenty minutes of quiet room noise with three utterances, written in one-minute chunks (the
    two-hour run is in docs/RELIABILITY.md; here the length only has to dwarf every queue)."""
    path = tmp_path / "long.wav"
    rng = np.random.default_rng(0)
    at = {300: voice["a"], 700: voice["b"], 1190: voice["a"]}
    with sf.SoundFile(str(path), "w", SAMPLE_RATE, 1, subtype="PCM_16") as fh:
        for minute in range(20):
            x = (0.002 * rng.standard_normal(60 * SAMPLE_RATE)).astype(np.float32)
            for second, utt in at.items():
                if minute * 60 <= second < (minute + 1) * 60:
                    o = (second - minute * 60) * SAMPLE_RATE
                    x[o : o + utt.size] += utt[: x.size - o]
            fh.write(x)
    out = tmp_path / "events.jsonl"
    try:
        run = run_cli("--source", str(path), "--model", str(ckpt), "--output", str(out), "--threads", "2", "--format", "none",
                      timeout=300)
    finally:
        path.unlink()
    assert run.rc == 0 and "Traceback" not in run.stderr, run.stderr
    events, summary = events_and_summary(out)
    assert [round(e["start"]) for e in events] == [300, 700, 1190]
    assert [e["context"] for e in events] == [0, 0, 0] and summary["memory_resets"] == 2  # pauses > 30 s: new dialogues
    assert summary["audio_seconds"] == pytest.approx(1200.0, abs=0.01)
    # a file read as fast as possible waits for the pipeline instead of dropping (bounded queues)
    assert summary["dropped_blocks"] == 0 and summary["dropped_utterances"] == 0
    assert summary["max_queue"]["audio"] <= 256 and summary["max_queue"]["utterances"] <= 4
    for e in events:
        assert_valid_event(e)


# ----------------------------------------------------------------------------- interrupted writes


_WRITER = """
import sys, torch
from pathlib import Path
from hbaf.checkpoint import save_checkpoint
from hbaf.model import HBAF, preset
models = []
for seed in (0, 1):
    torch.manual_seed(seed)
    models.append(HBAF(preset("tiny"), {labels!r}))
out, tok = Path(sys.argv[1]), sys.argv[2]
save_checkpoint(models[1], out.with_name("seed1"), tok)
save_checkpoint(models[0], out, tok)
print("ready", flush=True)
i = 1
while True:
    save_checkpoint(models[i % 2], out, tok)
    i += 1
"""


def _load_or_refuse(folder: Path) -> tuple[str, dict | None]:
    """("loaded", state dict) or ("refused", None); any other exception fails the test."""
    from hbaf.checkpoint import load_checkpoint

    try:
        model, _ = load_checkpoint(folder)
        return "loaded", model.state_dict()
    except HBAFError as err:
        assert "\n" not in str(err)
        return "refused", None


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _without_packaged_model(monkeypatch, tmp_path) -> None:
    """Point the packaged-assets folder at an empty one, so the default-model search reaches
    $HBAF_HOME/models/default (the packaged model would win it otherwise)."""
    from hbaf import io

    monkeypatch.setattr(io, "ASSETS_DIR", tmp_path / "no-assets")


def test_killed_checkpoint_write_is_loaded_whole_or_refused(ckpt, tmp_path, monkeypatch):
    """SIGKILL a process that keeps rewriting a checkpoint (two models in turn; ``ckpt`` is the
    first, built from the same seed); whatever it leaves is either one of the two whole,
    hash-verified checkpoints or refused in one line, and its temporary files are never taken
    for a model."""
    from edge_runtime.model_files import default_model_path

    _without_packaged_model(monkeypatch, tmp_path)
    home = tmp_path / "home"
    folder = home / "models" / "default"
    monkeypatch.setenv("HBAF_HOME", str(home))
    script = _WRITER.format(labels=LABELS)
    for delay in (0.05, 0.4):
        proc = subprocess.Popen([sys.executable, "-c", script, str(folder), str(ckpt / "tokenizer.json")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(), cwd=REPO)
        try:
            assert proc.stdout.readline().strip() == b"ready", proc.stderr.read().decode()
            time.sleep(delay)
        finally:
            proc.kill()
            proc.wait()
        outcome, state = _load_or_refuse(folder)
        if outcome == "loaded":  # whole: exactly one of the two models the writer alternated
            seeds = [_load_or_refuse(d)[1] for d in (ckpt, folder.with_name("seed1"))]
            assert _same_weights(state, seeds[0]) != _same_weights(state, seeds[1])
        assert default_model_path() == folder  # never a leftover .model.*.tmp.safetensors
        shutil.rmtree(home)


def test_leftover_temp_files_are_never_taken_for_models(ckpt, onnx_model, tmp_path, monkeypatch):
    """What a kill during a write leaves: a truncated final file (refused by its hash) and
    ``.<name>.<random>.tmp<suffix>`` files, which the default-model search must skip. (A cut
    engine is refused by its sidecar: the ``engine-cut`` case above.)"""
    from edge_runtime.backends import TorchBackend
    from edge_runtime.model_files import default_model_path, open_backend

    _without_packaged_model(monkeypatch, tmp_path)
    home = tmp_path / "home"
    folder = home / "models" / "default"
    shutil.copytree(ckpt, folder)
    monkeypatch.setenv("HBAF_HOME", str(home))
    onnx_bytes = onnx_model.read_bytes()
    # a killed ONNX export and a killed engine build, with the temporary names hbaf.io.atomic_path uses
    for prefix, suffix, data in ((".default.", ".tmp.onnx", onnx_bytes[: len(onnx_bytes) // 3]),
                                 (".model.", ".tmp.safetensors", (ckpt / "model.safetensors").read_bytes()[:4096]),
                                 (".tiny.10.3.0.30.orin.fp16.", ".tmp.engine", b"\x00" * 4096)):
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=folder)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
    found = default_model_path()
    assert found == folder, found
    assert isinstance(open_backend(found), TorchBackend)

    # the final weights cut short (the kill came during a non-atomic copy): refused, one line
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert _load_or_refuse(folder) == ("refused", None)
    with pytest.raises(HBAFError, match="sha256 mismatch"):
        open_backend(folder)
