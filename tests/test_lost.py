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
from hbaf.audio import load_audio
from hbaf.contract import SAMPLE_RATE
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
    from hbaf.wer import normalize_words, word_error_rate

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


# ----------------------------------------------------------------------------- 2. --output that is not an events file


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("case, needle", [
    ("the-model", "is the model (--model)"),
    ("the-source", "is the audio source (--source)"),
    ("a-file-of-the-model", "inside the model (--model)"),
    ("the-model-tokenizer", "is the tokenizer of the model (--model)"),
    ("another-wav", "is a WAV audio file, not a JSON-lines events file"),
    ("a-text-file", "is a text file, not a JSON-lines events file"),
])
def test_output_that_is_not_an_events_file_is_refused(case, needle, conv_wav, ckpt, onnx_model, tmp_path):
    """``-o`` appends: pointed at the model, the recording or any file that is not JSON lines, it
    would destroy it (the model no longer loaded, the WAV changed). One line, exit 2, file untouched."""
    model, source = onnx_model, conv_wav
    if case == "the-model":
        model = tmp_path / "m.onnx"
        shutil.copyfile(onnx_model, model)
        out = model
    elif case == "the-source":
        source = tmp_path / "talk.wav"
        shutil.copyfile(conv_wav, source)
        out = source
    elif case == "a-file-of-the-model":
        model = tmp_path / "ckpt"
        shutil.copytree(ckpt, model)
        out = model / "config.json"
    elif case == "the-model-tokenizer":  # a one-line JSON file: only its place next to the model protects it
        model = tmp_path / "m.onnx"
        shutil.copyfile(onnx_model, model)
        out = tmp_path / "tokenizer.json"
        out.write_text(json.dumps(json.loads((ckpt / "tokenizer.json").read_text())))
    elif case == "another-wav":
        out = tmp_path / "recording.wav"
        shutil.copyfile(conv_wav, out)
    else:
        out = tmp_path / "notes.txt"
        out.write_text("shopping list\nmilk\n")
    before = _sha(out)
    run = run_cli("--source", str(source), "--model", str(model), "--output", str(out))
    assert_one_line_error(run, needle, str(out), "pass a new file name")
    assert _sha(out) == before


def test_output_inside_the_packaged_models_is_refused(conv_wav, ckpt):
    from hbaf.io import ASSETS_DIR

    out = ASSETS_DIR / "events-test-lost.jsonl"
    try:
        run = run_cli("--source", str(conv_wav), "--model", str(ckpt), "--output", str(out))
        assert_one_line_error(run, "inside the packaged models of hbaf-edge", str(out))
        assert not out.exists()
    finally:
        out.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- 3. an events file cut inside a line


def test_events_file_cut_inside_a_line_gets_a_fresh_line(conv_wav, ckpt, tmp_path):
    """A run killed mid-line (or a hand edit) left a last line without its newline: the next run
    starts on a fresh line, so its events parse and the cut line stays as it was; the summary says so."""
    out = tmp_path / "events.jsonl"
    whole, cut = '{"utterance": 1, "text": "whole"}', '{"utterance": 2, "start": 4.3, "te'
    out.write_text(whole + "\n" + cut)
    run = run_cli("--source", str(conv_wav), "--model", str(ckpt), "--output", str(out), "--format", "none")
    assert run.rc == 0 and "Traceback" not in run.stderr, run.stderr
    lines = out.read_text().splitlines()
    assert lines[:2] == [whole, cut]
    new = [json.loads(ln) for ln in lines[2:]]
    assert [e["utterance"] for e in new[:-1]] == [1, 2] and new[-1]["summary"]["jsonl_cut_line_found"] is True
    assert new[-1]["summary"]["jsonl_lines_lost"] == 0
    assert "the events file ended inside a line" in run.stderr
    # a second run on the now well-ended file: nothing more to report
    run = run_cli("--source", str(conv_wav), "--model", str(ckpt), "--output", str(out), "--format", "none")
    assert run.rc == 0 and "ended inside a line" not in run.stderr
    assert json.loads(out.read_text().splitlines()[-1])["summary"]["jsonl_cut_line_found"] is False


# ----------------------------------------------------------------------------- 4. a pipe as --output


def test_pipe_as_output_is_not_a_failure(conv_wav, ckpt):
    """``-o /dev/stdout | cat``: a pipe cannot be fsynced (EINVAL), but every line arrives."""
    run = run_cli("--source", str(conv_wav), "--model", str(ckpt), "--output", "/dev/stdout", "--format", "none")
    assert run.rc == 0 and "could not be written" not in run.stderr and "warning" not in run.stderr, run.stderr
    lines = [json.loads(ln) for ln in run.stdout.splitlines()]
    assert len(lines) == 3 and lines[-1]["summary"]["utterances"] == 2 and lines[-1]["summary"]["jsonl_lines_lost"] == 0
    assert "JSONL lines lost: 0" in run.stderr


# ----------------------------------------------------------------------------- 5. ONNX metadata against the graph


def _bad_onnx(kind: str, onnx_model: Path, folder: Path) -> Path:
    import onnx

    from hbaf.contract import onnx_metadata, set_onnx_metadata

    proto = onnx.load(str(onnx_model))
    if kind == "output-renamed":
        for node in proto.graph.node:
            node.output[:] = ["scores" if o == "probs" else o for o in node.output]
        for o in proto.graph.output:
            if o.name == "probs":
                o.name = "scores"
    else:
        meta = onnx_metadata(proto)
        meta.update({"kind-log-mel": {"feature_kind": "log-mel"}, "width-80": {"feature_dim": 80},
                     "labels-short": {"labels": LABELS[:3]}, "labels-long": {"labels": [*LABELS, "fear"]},
                     "labels-doubled": {"labels": [*LABELS[:3], "joy"]}}[kind])
        set_onnx_metadata(proto, meta)
    path = folder / f"{kind}.onnx"
    onnx.save(proto, str(path))
    return path


@pytest.mark.parametrize("kind, needle", [
    ("output-renamed", "the contract needs ['probs', 'utt_emb', 'gate'] (probs missing)"),
    ("kind-log-mel", "feature kind log-mel (80 values per frame) but feature_dim 384"),
    ("width-80", "feature kind whisper-tiny.en (384 values per frame) but feature_dim 80"),
    ("labels-short", "metadata lists 3 labels"),
    ("labels-long", "metadata lists 5 labels"),
    ("labels-doubled", "metadata lists label(s) ['joy'] more than once"),
])
def test_onnx_metadata_that_does_not_match_the_graph(kind, needle, onnx_model, conv_wav, tmp_path):
    """Checked at load, one line, exit 2 (they ended in tracebacks, some only at the first event)."""
    model = _bad_onnx(kind, onnx_model, tmp_path)
    out = tmp_path / "events.jsonl"
    run = run_cli("--source", str(conv_wav), "--model", str(model), "--output", str(out))
    assert_one_line_error(run, needle, str(model), "export the model again")
    assert jsonl(out) == []


# ----------------------------------------------------------------------------- 6. signals while the models load


def _start_and_signal(args: list[str], out: Path, *signals: signal.Signals) -> tuple[int, str]:
    """Start ``hbaf-edge run ARGS``; as soon as the events file exists (the output is opened first,
    then the models load), send ``signals``; return (exit code, stderr)."""
    proc = subprocess.Popen(_cmd(*args, "--output", str(out)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=_env(), cwd=REPO)
    try:
        t0 = time.monotonic()
        while not out.exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() - t0 < 60, "the events file never appeared"
            time.sleep(0.002)
        for sig in signals:
            proc.send_signal(sig)
            time.sleep(0.05)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err.decode()


def test_sigusr1_while_loading_does_not_kill(conv_wav, ckpt, tmp_path):
    """SIGUSR1 is documented as "at any time": while the models load it used to kill the process
    (exit 138, its handler came after the loading)."""
    out = tmp_path / "events.jsonl"
    rc, err = _start_and_signal(["--source", str(conv_wav), "--model", str(ckpt), "--format", "none"], out, signal.SIGUSR1)
    assert rc == 0 and "Traceback" not in err, (rc, err)
    events, summary = events_and_summary(out)
    assert len(events) == 2 and summary["stopped_by"] is None


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 130)])
def test_stop_signal_while_loading_ends_with_a_summary(sig, code, conv_wav, ckpt, tmp_path):
    """A stop signal while the models load: exit 128 + its number, the summary of an empty run on
    stderr and as the events file's last line (SIGTERM used to leave no summary; SIGHUP too)."""
    out = tmp_path / "events.jsonl"
    rc, err = _start_and_signal(["--source", str(conv_wav), "--model", str(ckpt), "--format", "none"], out, sig)
    assert rc == code and "Traceback" not in err, (rc, err)
    events, summary = events_and_summary(out)
    assert events == [] and summary["stopped_by"] == sig.name and summary["cold_start"]["model_load_s"] is None
    assert f"[stopped by {sig.name}]" in err and "while loading the models" in err


# ----------------------------------------------------------------------------- 7. sources that are streams


def test_fifo_source_is_read_as_a_stream(conv_wav, ckpt, tmp_path):
    """A FIFO carrying a WAV (an encoder writing into it) used to be refused as 'empty (0 bytes)'."""
    import threading

    fifo = tmp_path / "audio.fifo"
    os.mkfifo(fifo)
    data = conv_wav.read_bytes()

    def feed() -> None:
        with open(fifo, "wb") as fh:
            fh.write(data)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    out = tmp_path / "events.jsonl"
    run = run_cli("--source", str(fifo), "--model", str(ckpt), "--output", str(out), "--format", "none")
    writer.join(5)
    assert run.rc == 0 and "Traceback" not in run.stderr, run.stderr
    events, summary = events_and_summary(out)
    assert len(events) == 2 and summary["audio_seconds"] == pytest.approx(sf.info(str(conv_wav)).duration, abs=0.1)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg decodes streams; apt-get install ffmpeg")
def test_process_substitution_source(conv_wav, ckpt, tmp_path):
    """``--source <(ffmpeg ... -f wav -)``: a pipe at /dev/fd/N of the runtime's own process."""
    out = tmp_path / "events.jsonl"
    line = " ".join([sys.executable, "-m", "edge_runtime.cli", "run", "--model", str(ckpt), "--output", str(out),
                     "--format", "none", "--source", f"<(ffmpeg -nostdin -v error -i {conv_wav} -f wav -)"])
    proc = subprocess.run(["bash", "-c", line], capture_output=True, text=True, env=_env(), cwd=REPO, timeout=180)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    events, _ = events_and_summary(out)
    assert len(events) == 2


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg decodes streams; apt-get install ffmpeg")
def test_character_device_source_is_read_not_called_empty(ckpt):
    """A character device is read as a stream: /dev/null holds no audio, and the line says so
    (it used to say 'audio file is empty (0 bytes)')."""
    run = run_cli("--source", "/dev/null", "--model", str(ckpt))
    msg = assert_one_line_error(run, "/dev/null")
    assert "0 bytes" not in msg and ("no audio" in msg or "not a readable audio file" in msg), msg


# ----------------------------------------------------------------------------- 8. training on one class


def test_training_on_one_label_is_refused(conv_wav, tmp_path):
    """Every training utterance labelled alike: a model that answers that label to everything,
    reported as weighted F1 100. Refused in one line, before any feature is computed."""
    lines = [{"audio": str(conv_wav), "text": f"line {i}", "label": "joy", "dialogue": str(i), "index": 0,
              "split": split} for i, split in enumerate(["train", "train", "train", "dev", "test"])]
    manifest = tmp_path / "one-label.jsonl"
    manifest.write_text("".join(json.dumps(x) + "\n" for x in lines))
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "hbaf.cli", "train", "--manifest", str(manifest), "--preset", "tiny",
                           "--out", str(tmp_path / "run")], capture_output=True, text=True, env=_env(), cwd=REPO, timeout=120)
    from helpers import assert_one_line_error as one_line

    msg = one_line(proc, "every training utterance (3) is labelled 'joy'", "add utterances of at least one other label")
    assert "Traceback" not in proc.stderr and not (tmp_path / "run" / "model.safetensors").exists(), msg
    assert time.monotonic() - t0 < 60


def test_check_classes_on_records():
    from hbaf.data.records import Record
    from hbaf.errors import HBAFError
    from hbaf.train import check_classes

    def rec(label: str, split: str) -> Record:
        return Record(audio="a.wav", text="", label=label, speaker="s", dialogue="d", index=0, split=split)

    check_classes([rec("joy", "train"), rec("anger", "train"), rec("joy", "dev")])
    with pytest.raises(HBAFError, match="labelled 'joy'"):
        check_classes([rec("joy", "train"), rec("joy", "train"), rec("anger", "dev")])


# ----------------------------------------------------------------------------- 9. messages that name the right cause


@pytest.mark.parametrize("case, needles", [
    ("speech-pad-ms", ["--speech-pad-ms 100000 pads each utterance with more audio than an utterance may hold", "use at most"]),
    ("output-in-proc", ["/proc/hbaf-x", "does not let files be created in it", "pass --output in a folder on a disk"]),
    ("wav-named-onnx", ["is a WAV audio file, not a model (audio goes to --source)"]),
    ("folder-source", ["is a folder, not an audio file", "pass one audio file"]),
    ("model-as-source", ["is a model file (.onnx), not audio; pass it as --model"]),
])
def test_messages_name_the_real_cause(case, needles, conv_wav, ckpt, tmp_path):
    args = ["--source", str(conv_wav), "--model", str(ckpt)]
    if case == "speech-pad-ms":
        args += ["--speech-pad-ms", "100000"]
    elif case == "output-in-proc":
        args += ["--output", "/proc/hbaf-x"]
    elif case == "wav-named-onnx":
        model = tmp_path / "model.onnx"
        shutil.copyfile(conv_wav, model)
        args[3] = str(model)
    elif case == "folder-source":
        args[1] = str(conv_wav.parent)
    else:
        model = tmp_path / "model.onnx"
        shutil.copyfile(ckpt / "model.safetensors", model)  # any model file: it is never loaded
        args[1] = str(model)
    msg = assert_one_line_error(run_cli(*args), *needles)
    assert "max utterance length" not in msg and "folder /proc does not exist" not in msg
    assert "corrupt or truncated" not in msg and "convert it" not in msg


def test_bench_names_a_missing_file_first(tmp_path):
    """``hbaf-edge bench --onnx /nonexistent`` named the file only after two other errors."""
    proc = subprocess.run([sys.executable, "-m", "bench.cli", "--onnx", str(tmp_path / "nonexistent.onnx"),
                           "--out", str(tmp_path / "report")], capture_output=True, text=True, env=_env(), cwd=REPO, timeout=120)
    from helpers import assert_one_line_error as one_line

    one_line(proc, f"--onnx {tmp_path / 'nonexistent.onnx'}: not found")


# ----------------------------------------------------------------------------- 10. smaller


def test_fifo_output_without_reader_says_so_and_stops(conv_wav, ckpt, tmp_path):
    """``-o FIFO`` with nobody reading it hung without a word: now it says it waits, then gives up
    in one line (exit 2) before loading any model."""
    from edge_runtime.events import FIFO_WAIT_S

    fifo = tmp_path / "events.fifo"
    os.mkfifo(fifo)
    run = run_cli("--source", str(conv_wav), "--model", str(ckpt), "--output", str(fifo), timeout=FIFO_WAIT_S + 60)
    assert f"waiting up to {FIFO_WAIT_S:.0f} s for a reader of the FIFO {fifo}" in run.stderr
    assert_one_line_error(run, f"no process reads the FIFO {fifo}", "start its reader first", alone=False)
    assert FIFO_WAIT_S <= run.seconds < FIFO_WAIT_S + 30
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_fifo_output_with_a_reader(conv_wav, ckpt, tmp_path):
    import threading

    fifo = tmp_path / "events.fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []

    def read() -> None:
        time.sleep(1.0)  # the reader comes a moment after the run started
        with open(fifo, "rb") as fh:
            got.append(fh.read())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    run = run_cli("--source", str(conv_wav), "--model", str(ckpt), "--output", str(fifo), "--format", "none")
    reader.join(10)
    assert run.rc == 0 and "Traceback" not in run.stderr, run.stderr
    lines = [json.loads(ln) for ln in got[0].decode().splitlines()]
    assert len(lines) == 3 and lines[-1]["summary"]["utterances"] == 2


@pytest.mark.parametrize("flag, value, needle", [
    ("--rate", "1", "--rate 1: a sample rate must be between 4000 and 384000 Hz"),
    ("--min-speech-ms", "100000", "--min-speech-ms 100000 is as long as an utterance may be"),
    ("--channels", "1000", "--channels 1000: a channel count must be between 1 and 64"),
])
def test_values_that_cannot_work_are_refused(flag, value, needle, ckpt):
    """``--rate 1`` on stdin turned 5.8 s into 2,270 s of work; ``--min-speech-ms 100000`` gave no
    events with exit 0."""
    proc = subprocess.run(_cmd("--source", "-", "--model", str(ckpt), flag, value), input=bytes(32000),
                          capture_output=True, env=_env(), cwd=REPO, timeout=120)
    from helpers import assert_one_line_error as one_line

    proc.stderr = proc.stderr.decode()
    one_line(proc, needle)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg makes the mp3; apt-get install ffmpeg")
def test_mp3_decodes_without_stray_lines(conv_wav, ckpt, tmp_path):
    """An ordinary mp3 (ffmpeg's own encoder, with its Xing header) made libmpg123 print
    'part2_3_length ... too large' on stderr."""
    mp3 = tmp_path / "talk.mp3"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(conv_wav), "-f", "mp3", str(mp3)], check=True)
    out = tmp_path / "events.jsonl"
    run = run_cli("--source", str(mp3), "--model", str(ckpt), "--output", str(out), "--format", "none")
    assert run.rc == 0, run.stderr
    assert not [ln for ln in run.stderr.splitlines() if "mpg123" in ln or ln.startswith("[")], run.stderr
    events, _ = events_and_summary(out)
    assert len(events) == 2
