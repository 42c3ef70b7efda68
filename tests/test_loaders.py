"""Dataset loaders: JSONL manifest, MELD.Raw and IEMOCAP, each on a tiny tree in the official layout."""

from __future__ import annotations

import csv
import json
import logging
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from hbaf.contract import SAMPLE_RATE
from hbaf.data import meld_raw
from hbaf.data.iemocap import load_iemocap
from hbaf.data.manifest import label_set, load_manifest, write_manifest
from hbaf.data.meld_raw import load_meld_raw, normalize_text
from hbaf.data.records import MELD_LABELS, Record
from hbaf.data.splits import assign_groups
from hbaf.errors import HBAFError

# ---------------------------------------------------------------- helpers


def make_wav(path: Path, seconds: float = 0.2, freq: float = 220.0, rate: int = SAMPLE_RATE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    sf.write(str(path), (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate, subtype="PCM_16")
    return path


def write_jsonl(path: Path, rows: list) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def one_line_error(excinfo: pytest.ExceptionInfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


def by_group(records: list[Record], attr: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for r in records:
        out[getattr(r, attr)].add(r.split)
    return out


# ---------------------------------------------------------------- manifest


def test_manifest_fields_paths_and_defaults(tmp_path: Path) -> None:
    a = make_wav(tmp_path / "wav" / "a.wav")
    b = make_wav(tmp_path / "elsewhere" / "b.wav")
    m = write_jsonl(
        tmp_path / "data" / "m.jsonl",
        [
            {"audio": "../wav/a.wav", "text": "  hello   there ", "label": "Joy", "speaker": 7, "dialogue": 3, "index": 1, "split": "train"},
            "",
            {"audio": str(b), "text": "bye", "label": "anger", "split": "val"},
            {"audio": "../wav/a.wav", "text": "again", "label": "joy", "speaker": "s2", "dialogue": "d", "index": "2", "split": "TEST"},
        ],
    )
    recs = load_manifest(m)
    assert [r.split for r in recs] == ["train", "dev", "test"]
    r0, r1, r2 = recs
    assert r0.audio == str(a.resolve()) and Path(r0.audio).is_absolute()
    assert r0.text == "hello there" and r0.label == "joy"
    assert (r0.speaker, r0.dialogue, r0.index) == ("7", "3", 1)
    assert r1.audio == str(b.resolve())
    assert r1.speaker == "unknown" and r1.index == 0 and r1.dialogue == "m:line3"
    assert r2.index == 2


def test_manifest_roundtrip_relative_paths(tmp_path: Path) -> None:
    wav = make_wav(tmp_path / "audio" / "x.wav")
    recs = [
        Record(audio=str(wav), text="one", label="neutral", speaker="s1", dialogue="d1", index=0, split="train"),
        Record(audio=str(wav), text="two", label="sadness", speaker="s2", dialogue="d1", index=1, split="test"),
    ]
    out = write_manifest(recs, tmp_path / "sub" / "out.jsonl")
    first = json.loads(out.read_text(encoding="utf-8").splitlines()[0])
    assert first["audio"] == "../audio/x.wav"
    assert load_manifest(out) == recs
    assert not [p for p in out.parent.iterdir() if p.name != "out.jsonl"]  # no temporaries left


def test_manifest_automatic_split_is_speaker_independent_and_seeded(tmp_path: Path) -> None:
    make_wav(tmp_path / "a.wav")
    rows = []
    for s in range(12):
        for u in range(3 + (s * 5) % 11):
            rows.append({"audio": "a.wav", "text": f"utterance {u}", "label": ["joy", "anger"][u % 2], "speaker": f"spk{s}", "dialogue": f"d{s}-{u // 3}", "index": u % 3})
    m = write_jsonl(tmp_path / "m.jsonl", rows)
    recs = load_manifest(m, seed=0)
    groups = by_group(recs, "speaker")
    assert all(len(sp) == 1 for sp in groups.values()), groups
    counts = {s: sum(r.split == s for r in recs) for s in ("train", "dev", "test")}
    assert all(counts.values()), counts
    assert 0.6 <= counts["train"] / len(recs) <= 0.9, counts
    assert load_manifest(m, seed=0) == recs
    other = [[r.split for r in load_manifest(m, seed=s)] for s in (1, 2, 3)]
    assert any(o != [r.split for r in recs] for o in other)


def test_manifest_few_speakers_falls_back_to_dialogue_split(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    make_wav(tmp_path / "a.wav")
    rows = [{"audio": "a.wav", "text": "hi", "label": "joy", "speaker": f"s{i % 2}", "dialogue": f"d{i // 2}", "index": i % 2} for i in range(20)]
    m = write_jsonl(tmp_path / "m.jsonl", rows)
    with caplog.at_level(logging.WARNING):
        recs = load_manifest(m)
    assert "splitting by dialogue" in caplog.text
    assert all(len(sp) == 1 for sp in by_group(recs, "dialogue").values())
    assert {r.split for r in recs} == {"train", "dev", "test"}


def test_assign_groups_large_group_goes_to_train_and_no_split_is_empty() -> None:
    sizes = {"main": 500, **{f"g{i}": 20 for i in range(25)}}
    out = assign_groups(sizes, seed=3)
    assert out["main"] == "train"
    assert set(out.values()) == {"train", "dev", "test"}
    # Three equal groups: greedy would put all in train; each split still gets one.
    assert sorted(assign_groups({"a": 100, "b": 100, "c": 100}, seed=0).values()) == ["dev", "test", "train"]


@pytest.mark.parametrize(
    "lines, kwargs, expected",
    [
        (['{"audio": "a.wav", "text": "x", "label": "joy", "split": "train"}', '{"audio": "a.wav", "text": '], {}, ["invalid JSON", "line 2"]),
        (['{"audio": "a.wav", "label": "joy"}'], {}, ["missing field 'text'", "line 1"]),
        (['{"audio": "a.wav", "text": "ok", "label": "joy"}', "", '{"audio": "nope.wav", "text": "ok", "label": "joy"}'], {}, ["audio file missing", "line 3", "nope.wav"]),
        (['{"audio": "a.wav", "text": "   ", "label": "joy"}'], {}, ["empty text", "line 1", "give the transcript"]),
        (['{"audio": "a.wav", "text": "ok", "label": "joy"}', '{"audio": "a.wav", "text": "ok", "label": "rage"}'], {"labels": ["anger", "joy"]}, ["unknown label 'rage' on line 2", "known: anger, joy", "retrain or fix the label"]),
        (['{"audio": "a.wav", "text": "ok", "label": "joy", "split": "holdout"}'], {}, ["bad split", "line 1", "train, dev, test"]),
        (['{"audio": "a.wav", "text": "ok", "label": "joy", "index": "first"}'], {}, ["non-integer index", "line 1"]),
        (['{"audio": "a.wav", "text": "ok", "label": "joy", "split": "train"}', '{"audio": "a.wav", "text": "ok", "label": "joy"}'], {}, ["mixes lines", "line 2"]),
        (["", "   "], {}, ["is empty", "write one JSON object per line"]),
        (['["a.wav", "x", "joy"]'], {}, ["not an object", "line 1"]),
    ],
)
def test_manifest_errors_name_file_line_and_fix(tmp_path: Path, lines: list[str], kwargs: dict, expected: list[str]) -> None:
    make_wav(tmp_path / "a.wav")
    m = write_jsonl(tmp_path / "bad.jsonl", lines)
    with pytest.raises(HBAFError) as ei:
        load_manifest(m, **kwargs)
    msg = one_line_error(ei)
    assert str(m) in msg
    for part in expected:
        assert part in msg, (part, msg)


def test_manifest_missing_audio_ignored_without_check(tmp_path: Path) -> None:
    m = write_jsonl(tmp_path / "m.jsonl", [{"audio": "later.wav", "text": "ok", "label": "joy", "split": "test"}])
    assert load_manifest(m, check_audio=False)[0].audio == str((tmp_path / "later.wav").resolve())
    with pytest.raises(HBAFError, match="manifest not found"):
        load_manifest(tmp_path / "absent.jsonl")


def test_label_set(tmp_path: Path) -> None:
    def rec(label: str, split: str) -> Record:
        return Record(audio="/x.wav", text="t", label=label, speaker="s", dialogue="d", index=0, split=split)

    assert label_set([rec("joy", "train"), rec("anger", "train"), rec("joy", "test")]) == ["anger", "joy"]
    with pytest.raises(HBAFError) as ei:
        label_set([rec("joy", "train"), rec("fear", "dev"), rec("fear", "test"), rec("disgust", "test")])
    msg = one_line_error(ei)
    assert "'disgust' (test)" in msg and "'fear' (dev/test)" in msg


# ---------------------------------------------------------------- MELD.Raw

MELD_HEADER = ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID", "Season", "Episode", "StartTime", "EndTime"]

# split -> rows of (dialogue, utterance, text, speaker, emotion, clip kind): good | bad (garbage) | silent (no audio stream) | missing
MELD_ROWS = {
    "train": [
        (0, 0, "Oh my God, heâ€™s lost it.", "Phoebe", "Sadness", "good"),
        (0, 1, "What?", "Monica", "surprise", "good"),
        (0, 2, "Itâ€™s fine \x97 really\x85", "Phoebe", "neutral", "good"),
        (1, 0, "Hey!", "Joey", "joy", "good"),
        (1, 1, "Who broke it?", "Ross", "anger", "bad"),
    ],
    "dev": [(0, 0, "No way.", "Rachel", "disgust", "good"), (0, 1, "Way.", "Chandler", "fear", "missing")],
    "test": [(3, 0, "Why?", "Mark", "surprise", "good"), (3, 1, "Because.", "Rachel", "neutral", "silent")],
}
CLIP_DIR = {"train": "train_splits", "dev": "dev_splits_complete", "test": "output_repeated_splits_test"}


@pytest.fixture(scope="module")
def mp4_sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not installed")
    d = tmp_path_factory.mktemp("mp4src")
    good, silent = d / "good.mp4", d / "silent.mp4"
    base = ["ffmpeg", "-nostdin", "-v", "error", "-y"]
    video = ["-f", "lavfi", "-i", "color=black:s=32x32:d=0.4:r=10"]
    subprocess.run(base + ["-f", "lavfi", "-i", "sine=frequency=330:duration=0.4:sample_rate=48000"] + video + ["-c:v", "mpeg4", "-c:a", "aac", "-ac", "2", "-shortest", str(good)], check=True)
    subprocess.run(base + video + ["-c:v", "mpeg4", str(silent)], check=True)
    bad = d / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a real video" * 10)
    return {"good": good, "silent": silent, "bad": bad}


def build_meld(root: Path, csv_dir: Path, mp4: dict[str, Path], nested: bool = False) -> None:
    for split, rows in MELD_ROWS.items():
        clip_dir = root / (split if nested else "") / CLIP_DIR[split]
        clip_dir.mkdir(parents=True, exist_ok=True)
        csv_dir.mkdir(parents=True, exist_ok=True)
        with open(csv_dir / f"{split}_sent_emo.csv", "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(MELD_HEADER)
            for n, (dia, utt, text, spk, emo, kind) in enumerate(rows, start=1):
                w.writerow([n, text, spk, emo, "neutral", dia, utt, 4, 7, "00:20:57,256", "00:21:00,049"])
                if kind != "missing":
                    shutil.copyfile(mp4[kind], clip_dir / f"dia{dia}_utt{utt}.mp4")


def test_meld_raw_official_layout_and_cache(tmp_path: Path, mp4_sources: dict[str, Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "MELD.Raw"
    build_meld(root, root, mp4_sources)
    calls: list[Path] = []
    real_decode = meld_raw._decode

    def counting_decode(src: Path, dst: Path):
        calls.append(src)
        return real_decode(src, dst)

    monkeypatch.setattr(meld_raw, "_decode", counting_decode)
    with caplog.at_level(logging.WARNING):
        recs = load_meld_raw(root, workers=2)
    assert len(calls) == 8  # every clip present once, good or not
    assert "1 of 9 clips missing" in caplog.text and "2 of 9 clips have no decodable audio" in caplog.text

    assert [(r.split, r.dialogue, r.index) for r in recs] == [
        ("train", "train-0", 0), ("train", "train-0", 1), ("train", "train-0", 2), ("train", "train-1", 0),
        ("dev", "dev-0", 0), ("test", "test-3", 0),
    ]  # fmt: skip
    assert {r.label for r in recs} <= set(MELD_LABELS) and recs[0].label == "sadness"
    assert recs[0].text == "Oh my God, he's lost it." and recs[2].text == "It's fine - really..."
    assert [r.speaker for r in recs[:2]] == ["Phoebe", "Monica"]
    cache = root / ".hbaf_cache" / "wav16k"
    for r in recs:
        assert Path(r.audio).is_relative_to(cache)
        info = sf.info(r.audio)
        assert info.samplerate == SAMPLE_RATE and info.channels == 1 and info.frames > 1000
    assert not list(cache.rglob("*.tmp*"))

    # Second load: nothing decoded again, known-bad clips not retried, files untouched.
    mtimes = {r.audio: Path(r.audio).stat().st_mtime_ns for r in recs}
    calls.clear()
    again = load_meld_raw(root, workers=2)
    assert calls == [] and again == recs
    assert {a: Path(a).stat().st_mtime_ns for a in mtimes} == mtimes

    # A cached wav that was deleted is decoded again, and only that one.
    Path(recs[3].audio).unlink()
    assert load_meld_raw(root) == recs and len(calls) == 1

    # Loader output round-trips through a manifest.
    man = write_manifest(recs, tmp_path / "meld.jsonl")
    assert load_manifest(man, labels=MELD_LABELS) == recs


def test_meld_raw_nested_layout_csv_in_parent(tmp_path: Path, mp4_sources: dict[str, Path]) -> None:
    root = tmp_path / "data" / "MELD.Raw"
    build_meld(root, tmp_path / "data", mp4_sources, nested=True)
    recs = load_meld_raw(root, cache_dir=tmp_path / "cache")
    assert len(recs) == 6 and {r.split for r in recs} == {"train", "dev", "test"}
    assert all(Path(r.audio).is_relative_to(tmp_path / "cache") for r in recs)


def test_meld_raw_layout_errors(tmp_path: Path, mp4_sources: dict[str, Path]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(HBAFError) as ei:
        load_meld_raw(empty)
    msg = one_line_error(ei)
    for part in ("train_splits", "dev_splits_complete", "output_repeated_splits_test", "train_sent_emo.csv", "test_sent_emo.csv"):
        assert part in msg
    with pytest.raises(HBAFError, match="not found"):
        load_meld_raw(tmp_path / "absent")

    # Layout present but no clip at all -> error, not an empty list.
    root = tmp_path / "noclips"
    build_meld(root, root, mp4_sources)
    for p in root.rglob("*.mp4"):
        p.unlink()
    with pytest.raises(HBAFError) as ei:
        load_meld_raw(root, cache_dir=tmp_path / "c")
    assert "none of the 9 MELD utterances" in one_line_error(ei)


def test_normalize_text_repairs_mojibake() -> None:
    assert normalize_text("heâ€™s") == "he's"
    assert normalize_text("heâ\x80\x99s") == "he's"  # UTF-8 read as Latin-1
    assert normalize_text("you\x92re \x93so\x94 \x96 ok") == 'you\'re "so" - ok'  # raw Windows-1252 bytes
    assert normalize_text("\u201cCaf\u00e9\u201d \u2014 fine\u2026") == '"Caf\u00e9" - fine...'  # real accents survive


# ---------------------------------------------------------------- IEMOCAP

# dialog -> list of (utterance suffix, start, end, label, text); given out of time order on purpose
IEMOCAP_UTTS = [
    ("F002", 9.0, 10.5, "ang", "Stop it."),
    ("F000", 1.0, 2.5, "neu", "Excuse me."),
    ("M000", 3.0, 4.0, "xxx", "Yeah."),
    ("M001", 5.0, 6.5, "hap", "That's great [LAUGHTER]."),
    ("F001", 7.0, 8.0, "sur", "Oh!"),
    ("M002", 11.0, 12.0, "fru", "I waited for hours."),
]


def build_iemocap(root: Path, missing_wav: str | None = None) -> None:
    for n in range(1, 6):
        sess = root / f"Session{n}"
        for d, kind in enumerate(["impro01", "impro02", "script01_1"]):
            dialog = f"Ses0{n}{'FM'[d % 2]}_{kind}"
            ev = sess / "dialog" / "EmoEvaluation"
            tr = sess / "dialog" / "transcriptions"
            ev.mkdir(parents=True, exist_ok=True)
            tr.mkdir(parents=True, exist_ok=True)
            (ev / "Categorical").mkdir(exist_ok=True)
            lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
            tlines = []
            for suffix, start, end, label, text in IEMOCAP_UTTS:
                utt = f"{dialog}_{suffix}"
                lines += [f"[{start:.4f} - {end:.4f}]\t{utt}\t{label}\t[2.5000, 2.5000, 2.5000]", f"C-E1:\t{label};\t()", ""]
                tlines.append(f"{utt} [{start:08.4f}-{end:08.4f}]: {text}")
                if utt != missing_wav:
                    make_wav(sess / "sentences" / "wav" / dialog / f"{utt}.wav", seconds=0.1)
            (ev / f"{dialog}.txt").write_text("\n".join(lines) + "\n")
            (ev / f"._{dialog}.txt").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
            (tr / f"{dialog}.txt").write_text("\n".join(tlines) + "\n")


def test_iemocap_records_splits_and_order(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "IEMOCAP_full_release"
    build_iemocap(root, missing_wav="Ses02M_impro02_F000")
    with caplog.at_level(logging.WARNING):
        recs = load_iemocap(root)
    assert "1 of 60 utterances have no wav file" in caplog.text
    assert len(recs) == 5 * 3 * 4 - 1
    assert {r.label for r in recs} == {"hap", "sad", "neu", "ang", "exc", "fru"} - {"sad", "exc"}

    first = [r for r in recs if r.dialogue == "Ses01F_impro01"]
    assert [(r.index, r.label, r.speaker) for r in first] == [(0, "neu", "Ses01_F"), (2, "hap", "Ses01_M"), (4, "ang", "Ses01_F"), (5, "fru", "Ses01_M")]
    assert first[0].text == "Excuse me." and first[0].audio.endswith("Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav")
    assert Path(first[0].audio).is_absolute()

    assert {r.split for r in recs if r.dialogue.startswith("Ses05")} == {"test"}
    assert "test" not in {r.split for r in recs if not r.dialogue.startswith("Ses05")}
    dialog_splits = by_group(recs, "dialogue")
    assert all(len(s) == 1 for s in dialog_splits.values())
    dev = sorted(d for d, s in dialog_splits.items() if s == {"dev"})
    assert len(dev) == 1  # ~10% of 12 dialogs
    assert [r.split for r in load_iemocap(root)] == [r.split for r in recs]
    dev_by_seed = {tuple(sorted({r.dialogue for r in load_iemocap(root, seed=s) if r.split == "dev"})) for s in range(4)}
    assert len(dev_by_seed) > 1

    only = load_iemocap(root, classes=("ang", "neu"))
    assert {r.label for r in only} == {"ang", "neu"}


def test_iemocap_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(HBAFError, match="IEMOCAP folder not found"):
        load_iemocap(tmp_path / "absent")
    (tmp_path / "wrong" / "Session1").mkdir(parents=True)
    with pytest.raises(HBAFError) as ei:
        load_iemocap(tmp_path / "wrong")
    msg = one_line_error(ei)
    assert "Session1..Session5" in msg and "EmoEvaluation" in msg and "sentences/wav" in msg
    with pytest.raises(HBAFError, match="unknown IEMOCAP class"):
        load_iemocap(tmp_path / "wrong", classes=("happy",))
