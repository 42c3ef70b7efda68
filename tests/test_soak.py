"""`hbaf-edge bench --soak MINUTES` (bench/soak.py): the generated stream, one short real soak
through the runtime, and its bad input. The real soak reads 20 s of audio: seconds, not minutes."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from hbaf.contract import SAMPLE_RATE


def _read_all(stream) -> np.ndarray:
    chunks = []
    buf = bytearray(8192)
    while n := stream.readinto(buf):
        chunks.append(bytes(buf[:n]))
    return np.frombuffer(b"".join(chunks), "<i2")


def _loud_runs(pcm: np.ndarray, level: int = 8000) -> list[tuple[int, int]]:
    """(start, end) sample spans above ``level``, spans closer than 0.3 s joined."""
    idx = np.flatnonzero(np.abs(pcm) > level)
    if not idx.size:
        return []
    cuts = np.flatnonzero(np.diff(idx) > 0.3 * SAMPLE_RATE)
    starts, ends = np.r_[idx[0], idx[cuts + 1]], np.r_[idx[cuts], idx[-1]]
    return list(zip(starts.tolist(), ends.tolist()))


def test_the_stream_is_what_the_soak_promises():
    """Exactly the asked length of s16le PCM, one loud span per inserted utterance, a 35 s pause
    after every 60th (a new dialogue), silence at the end, and the same bytes for the same seed."""
    from bench.soak import LONG_PAUSE_EVERY, LONG_PAUSE_S, SpeechStream

    clips = [np.full(int(0.2 * SAMPLE_RATE), 0.5, np.float32), np.full(int(0.4 * SAMPLE_RATE), -0.6, np.float32)]
    stream = SpeechStream(clips, seconds=200.0, seed=3)
    pcm = _read_all(stream)
    assert pcm.size == 200 * SAMPLE_RATE and stream.made == pcm.size
    runs = _loud_runs(pcm)
    assert len(runs) == stream.utterances > LONG_PAUSE_EVERY
    gaps = [(b[0] - a[1]) / SAMPLE_RATE for a, b in zip(runs, runs[1:])]
    assert gaps[LONG_PAUSE_EVERY - 1] >= LONG_PAUSE_S
    assert all(0.6 <= g <= 3.0 + 1e-3 for i, g in enumerate(gaps) if i != LONG_PAUSE_EVERY - 1)
    assert np.abs(pcm[runs[-1][1] + 1 :]).max() < 1000  # room noise only after the last utterance
    assert np.array_equal(_read_all(SpeechStream(clips, seconds=200.0, seed=3)), pcm)
    assert not np.array_equal(_read_all(SpeechStream(clips, seconds=200.0, seed=4)), pcm)


@pytest.mark.skipif(not shutil.which("espeak-ng"), reason="the soak renders its speech with espeak-ng (scripts/install.sh)")
def test_a_short_soak_through_the_runtime_loses_nothing(tmp_path, monkeypatch, capsys):
    """`hbaf-edge bench --soak` with the packaged model: every utterance of the stream is segmented,
    turned into an event and written to the events file; the report says so and exits 0."""
    from edge_runtime.cli import main

    monkeypatch.setenv("HBAF_HOME", str(tmp_path / "home"))  # the clips are rendered here
    out = tmp_path / "report"
    assert main(["bench", "--soak", "0.33", "--threads", "1", "--asr-beam", "1", "--seed", "2", "--out", str(out)]) == 0
    report = json.loads((out / "soak.json").read_text())
    assert report["command"].startswith("hbaf-edge bench --soak 0.33")
    n = report["utterances_inserted"]
    assert n >= 3 and report["utterances_segmented"] == report["events_emitted"] == report["events_in_jsonl"] == n
    assert report["events_lost"] == report["jsonl_lines_lost"] == report["dropped_utterances"] == 0
    assert report["model"].endswith("default.onnx") and report["audio_hours"] == pytest.approx(0.33 / 60, abs=1e-4)
    assert report["rss_mb"]["end"] > 0 and report["latency_ms"]["all"]["processing"]["n"] == n
    lines = [json.loads(line) for line in (out / "soak.events.jsonl").read_text().splitlines()]
    assert sum("utterance" in d for d in lines) == n and "summary" in lines[-1]
    assert len(list((tmp_path / "home" / "soak").glob("utterances-*/*.wav"))) == 36
    text = capsys.readouterr().out
    assert f"{n} inserted, {n} segmented, {n} events" in text and "events lost 0" in text


@pytest.mark.parametrize("argv, words", [
    (["--soak", "0"], ("--soak", "not between 0 and a day")),
    (["--soak", "ten"], ("--soak", "not a number of minutes")),
    (["--soak", "5", "--manifest", "m.jsonl"], ("--soak runs on its own", "--manifest")),
    (["--soak", "5", "--e2e", "demo", "--engine", "x.engine"], ("--soak runs on its own", "--e2e, --engine")),
    (["--soak", "5", "--e2e-model", "/nonexistent/model.onnx"], ("--e2e-model", "not found")),
    (["--asr-encoder", "ct2"], ("--asr-encoder applies to --soak",)),
    (["--seed", "3", "--quick"], ("--seed applies to --soak",)),
])
def test_soak_bad_input_is_one_line(argv, words, tmp_path, capsys):
    from edge_runtime.cli import main

    assert main(["bench", *argv, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and all(w in err[0] for w in words), err


def test_rss_stats_give_the_rss_at_every_tenth_of_the_audio():
    from bench.soak import rss_stats

    samples = [(float(t), 500.0 + t / 10) for t in range(0, 601, 5)]  # 600 s of audio, +1 MB a minute
    r = rss_stats(490.0, samples, 561.0, 600.0)
    assert r["by_tenth"][0] == 490.0 and r["by_tenth"][-1] == 561.0 and len(r["by_tenth"]) == 11
    assert r["by_tenth"][1:10] == [500.0 + 6 * i for i in range(1, 10)]
    assert r["growth_10pct_to_end"] == 561.0 - 506.0
