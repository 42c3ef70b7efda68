"""`hbaf-edge transcribe`: the runtime's recogniser over a manifest split, resumable; bad input in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edge_runtime.transcribe import transcribe_cli
from helpers import espeak_conversation
from hbaf.errors import cli_entry
from hbaf.wer import word_error_rate

main = cli_entry(transcribe_cli)  # as `hbaf-edge transcribe` runs it: a user error is one line, exit 2

SAY = ["please call me when you get home tonight", "we will meet again next week"]


def _manifest(folder: Path) -> Path:
    espeak_conversation(folder / "turns.wav", [("en-us", t) for t in SAY], pause_s=0.3)
    lines = [{"audio": f"turns-t{i}.wav", "text": t, "label": "neutral", "speaker": "A", "dialogue": "d1", "index": i,
              "split": "train"} for i, t in enumerate(SAY)]
    lines.append({"audio": "turns-t0.wav", "text": SAY[0], "label": "neutral", "speaker": "B", "dialogue": "d2", "index": 0,
                  "split": "test"})
    path = folder / "manifest.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


@pytest.mark.skipif(not shutil.which("espeak-ng"), reason="espeak-ng renders the clips; run scripts/install.sh")
def test_transcribes_a_split_and_resumes(tmp_path, capsys):
    manifest, out = _manifest(tmp_path), tmp_path / "asr.jsonl"
    argv = ["--manifest", str(manifest), "--split", "train", "--workers", "1", "--out", str(out)]
    assert main(argv) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(Path(r["audio"]).name for r in rows) == ["turns-t0.wav", "turns-t1.wav"]  # train only
    heard = {Path(r["audio"]).name: r["asr"] for r in rows}
    for i, text in enumerate(SAY):
        assert word_error_rate(text, heard[f"turns-t{i}.wav"]) <= 0.25, heard
    capsys.readouterr()
    assert main(argv) == 0  # a second run finds everything done
    assert "2 clips in train, 2 already transcribed, 0 to go" in capsys.readouterr().out
    assert len(out.read_text().splitlines()) == 2


@pytest.mark.parametrize("args, words", [
    (["--fraction", "0"], "--fraction 0.0: must be in (0, 1]"),
    (["--split", "test", "--fraction", "0.5"], "--fraction applies to the train split only"),
    (["--beam", "0"], "--beam 0: must be at least 1"),
    (["--workers", "0"], "--workers 0: must be at least 1"),
    (["--manifest", "{tmp}/none.jsonl"], "manifest not found"),
    (["--split", "validation"], "invalid choice: 'validation'"),
])
def test_bad_input_is_one_line(tmp_path, capsys, args, words):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main([*args, "--out", str(tmp_path / "asr.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err, err


def test_out_that_is_not_a_transcript_file_is_refused(tmp_path, capsys):
    manifest = tmp_path / "manifest.jsonl"
    (tmp_path / "a.wav").write_bytes(b"RIFF")
    manifest.write_text(json.dumps({"audio": "a.wav", "text": "hi", "label": "neutral", "speaker": "A", "dialogue": "d",
                                    "index": 0, "split": "train"}) + "\n")
    out = tmp_path / "asr.jsonl"
    out.write_text("not json\n")
    assert main(["--manifest", str(manifest), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "line 1 is not a transcript line" in err, err
    assert main(["--manifest", str(manifest), "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
