"""`hbaf adapt`: label mapping, few-shot selection, the dev split, bad input, atomic output, and
one short run end to end (the packaged student, tone clips, a few steps)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from hbaf.adapt import (RESULT, check_out, decide_text_branch, make_dev_split, map_labels, publish,
                        select_per_class)
from hbaf.data.records import Record
from hbaf.errors import HBAFError

MODEL_LABELS = ["anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"]


def _rec(i: int, label: str, speaker: str, split: str = "train") -> Record:
    return Record(audio=f"/x/{i}.wav", text="hello", label=label, speaker=speaker, dialogue=f"d{i}", index=0, split=split)


def _wav(path: Path, seconds: float = 1.0, freq: float = 220.0, rate: int = 16000) -> None:
    import soundfile as sf

    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate)


def _manifest(folder: Path, rows: list[dict], name: str = "m.jsonl") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k, row in enumerate(rows):
        if not (folder / row["audio"]).exists():
            _wav(folder / row["audio"], freq=150 + 40 * k)
    path = folder / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _run(argv, capsys) -> tuple[int, str]:
    from hbaf.cli import main

    rc = main(argv)
    return rc, capsys.readouterr().err.strip()


# ----------------------------------------------------------------------------- units


def test_labels_map_when_obvious_and_refuse_otherwise():
    assert map_labels(["angry", "happy", "sad", "neutral", "hap"], MODEL_LABELS) == {
        "angry": "anger", "happy": "joy", "sad": "sadness", "neutral": "neutral", "hap": "joy"}
    with pytest.raises(HBAFError) as err:
        map_labels(["angry", "boredom", "calm"], MODEL_LABELS)
    msg = str(err.value)
    assert "'boredom'" in msg and "'calm'" in msg and "angry" not in msg
    assert ", ".join(MODEL_LABELS) in msg and "hbaf train" in msg


def test_per_class_takes_n_of_each_label_across_speakers_and_keeps_test():
    recs = [_rec(i, lab, f"s{i % 4}") for i, lab in enumerate(["joy"] * 40 + ["anger"] * 40 + ["fear"] * 3)]
    recs += [_rec(100 + i, "joy", "t", split="test") for i in range(5)]
    idx = select_per_class(recs, 8, seed=1)
    chosen = [recs[i] for i in idx]
    learn = [r for r in chosen if r.split != "test"]
    assert sum(r.label == "joy" for r in learn) == 8 and sum(r.label == "anger" for r in learn) == 8
    assert sum(r.label == "fear" for r in learn) == 3  # all of a rarer label
    assert len({r.speaker for r in learn if r.label == "joy"}) == 4  # spread over the speakers
    assert sum(r.split == "test" for r in chosen) == 5
    assert idx == sorted(idx) and select_per_class(recs, 8, seed=1) == idx  # ordered, seeded
    with pytest.raises(HBAFError):
        select_per_class(recs, 0)


def test_dev_split_is_speaker_independent():
    recs = [_rec(i, ["joy", "anger"][i % 2], f"s{i % 10}") for i in range(200)]
    recs.append(_rec(999, "joy", "tester", split="test"))
    out, how = make_dev_split(recs, 0.2, seed=0)
    dev = {r.speaker for r in out if r.split == "dev"}
    train = {r.speaker for r in out if r.split == "train"}
    assert dev and train and not dev & train
    assert 0.1 <= sum(r.split == "dev" for r in out) / 200 <= 0.3
    assert out[-1].split == "test" and how.startswith("speaker-independent")


def test_one_speaker_falls_back_to_a_random_split_with_a_warning(caplog):
    recs = [_rec(i, ["joy", "anger"][i % 2], "unknown") for i in range(50)]
    with caplog.at_level(logging.WARNING, logger="hbaf.adapt"):
        out, how = make_dev_split(recs, 0.2, seed=0)
    assert "random" in how and any("not speaker-independent" in r.getMessage() for r in caplog.records)
    dev = [r for r in out if r.split == "dev"]
    assert len(dev) == 10 and {r.label for r in dev} == {"joy", "anger"}  # stratified


def test_text_branch_decision():
    assert decide_text_branch("auto", False)[0] is True
    assert decide_text_branch("auto", True)[0] is False
    assert decide_text_branch("train", False)[0] is False and decide_text_branch("freeze", True)[0] is True


def test_out_folder_is_replaced_whole_or_refused(tmp_path):
    out = tmp_path / "mine"
    check_out(out)  # new: fine
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(HBAFError, match="not an `hbaf adapt` result"):
        check_out(out)
    (out / RESULT).write_text("{}")  # an earlier result: replaced
    check_out(out)
    new = tmp_path / ".mine.tmp-1"
    new.mkdir()
    (new / RESULT).write_text('{"new": 1}')
    publish(new, out)
    assert json.loads((out / RESULT).read_text()) == {"new": 1} and not (out / "notes.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


# ----------------------------------------------------------------------------- bad input through the command line


def _rows(labels, speakers=("a", "b", "c")):
    return [{"audio": f"c{k}.wav", "text": "well hello there", "label": lab, "speaker": speakers[k % len(speakers)]}
            for k, lab in enumerate(labels)]


@pytest.mark.parametrize("case", ["one-class", "unknown-label", "unreadable", "no-text", "out-taken"])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, case):
    data = tmp_path / "data"
    out = tmp_path / "runs" / "mine"
    rows = _rows(["angry", "happy"] * 3)
    if case == "one-class":
        rows = _rows(["sad"] * 6)
    elif case == "unknown-label":
        rows = _rows(["angry", "boredom"] * 3)
    elif case == "no-text":
        rows[2].pop("text")
    manifest = _manifest(data, rows)
    if case == "unreadable":
        (data / "c3.wav").write_bytes(b"RIFF....WAVEfmt garbage, not audio" * 10)
    if case == "out-taken":
        out.mkdir(parents=True)
        (out / "keep.txt").write_text("x")
    rc, err = _run(["adapt", "--manifest", str(manifest), "--out", str(out), "--workers", "1"], capsys)
    assert rc == 2, err
    last = err.splitlines()[-1]
    assert last.startswith("error: ") and "Traceback" not in err
    expect = {"one-class": "one class", "unknown-label": "'boredom'", "unreadable": "c3.wav", "no-text": "no text",
              "out-taken": "not an `hbaf adapt` result"}[case]
    assert expect in last
    if case == "out-taken":
        assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    else:
        assert not out.exists()
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []  # no temporary left


# ----------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_adapt_end_to_end_writes_a_loadable_checkpoint(tmp_path, capsys):
    """The packaged student, tone clips of 2 speakers (labels given as 'angry'/'happy'), 4 of each
    label taken (--per-class), 2 steps."""
    from hbaf.checkpoint import load_checkpoint

    rows = _rows(["angry", "happy"] * 6, speakers=("a", "a", "b", "b")) + [
        {"audio": "t0.wav", "text": "fine", "label": "anger", "speaker": "z", "split": "test"}]
    for r in rows[:-1]:
        r["split"] = "train"
    manifest = _manifest(tmp_path / "data", rows)
    out = tmp_path / "mine"
    rc, err = _run(["adapt", "--manifest", str(manifest), "--out", str(out), "--max-steps", "2", "--max-utts", "8",
                    "--workers", "1", "--threads", "1", "--per-class", "4"], capsys)
    assert rc == 0, err
    result = json.loads((out / RESULT).read_text())
    assert result["label_map"] == {"angry": "anger", "happy": "joy"}
    assert result["counts"]["train"] and result["counts"]["test"] == {"anger": 1}
    assert sum(result["counts"]["train"].values()) + sum(result["counts"]["dev"].values()) == 8  # 4 per class
    assert result["split"].startswith("speaker-independent") and result["speakers"]["dev"] == 1
    assert result["text_branch"].startswith("frozen") and result["steps"] == 2
    assert result["peak_rss"]["self_mb"] > 0 and "test" in result["after"] and "test" in result["before"]
    model, _ = load_checkpoint(out)
    assert model.labels == MODEL_LABELS
    data = [json.loads(x) for x in (out / "data.jsonl").read_text().splitlines()]
    assert {d["label"] for d in data} == {"anger", "joy"} and (out / "data.jsonl").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_balanced_draw_sees_every_label_about_equally():
    import random

    from hbaf.train import balanced_draw

    labels = ["joy"] * 90 + ["anger"] * 10
    groups = [[i] for i in range(100)]
    rng = random.Random(0)
    drawn = [labels[g[0]] for _ in range(20) for g in balanced_draw(groups, labels, rng)]
    assert len(drawn) == 2000 and 0.45 < drawn.count("anger") / len(drawn) < 0.55
