"""MELD-TTS corpus builder: CSV reading, dialogue-whole subsets, rendering, determinism, resume."""

from __future__ import annotations

import json
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from hbaf.audio import load_audio
from hbaf.data import meld_text, prosody, synth
from hbaf.data import meld_tts as mt
from hbaf.data import voices as vc
from hbaf.errors import HBAFError
from hbaf.contract import SAMPLE_RATE
from hbaf.data.records import MELD_LABELS

needs_tools = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("sox") is None,
    reason="espeak-ng and sox are needed to render MELD-TTS (apt-get install espeak-ng sox)",
)

MANIFEST_FIELDS = {"audio", "text", "label", "speaker", "dialogue", "index", "split", "family", "voice"}


# ---------------------------------------------------------------------------------------- CSV


def test_read_meld_csv_counts_labels_and_order():
    expected = {"train": 9989, "dev": 1109, "test": 2610}
    for split, n in expected.items():
        rows = meld_text.read_meld_csv(split)
        assert len(rows) == n
        assert {r["label"] for r in rows} == set(MELD_LABELS)
        keys = [(r["dialogue_id"], r["utterance_id"]) for r in rows]
        assert keys == sorted(keys) and len(set(keys)) == len(keys)
        for r in rows:
            assert r["split"] == split and isinstance(r["utterance_id"], int)
            assert "  " not in r["text"] and r["text"] == r["text"].strip()
            assert not any(ch in r["text"] for ch in "\u2018\u2019\u201c\u201d\u2014\u2013\u2026\x92\x85\x96")
    first = meld_text.read_meld_csv("train")[0]
    assert first["speaker"] == "Chandler" and first["label"] == "neutral"
    assert first["text"] == "also I was the point person on my company's transition from the KL-5 to GR-6 system."


def test_normalize_text_fixes_cp1252_and_mojibake():
    assert meld_text.normalize_text("I\x92m  \x93here\x94\x85\n ok") == 'I\'m "here"... ok'
    assert meld_text.normalize_text("you\u2019re \u201cfine\u201d\u2026 uh\u2014wait") == "you're \"fine\"... uh - wait"
    assert meld_text.normalize_text("it\u00e2\u20ac\u2122s") == "it's"
    assert meld_text.normalize_text("Caf\u00e9  ok\u00a0") == "Caf\u00e9 ok"
    assert not meld_text.is_speakable(meld_text.normalize_text(" !  ")) and meld_text.is_speakable("Hm.")


def test_read_meld_csv_user_errors(tmp_path):
    with pytest.raises(HBAFError, match="unknown MELD split"):
        meld_text.read_meld_csv("validation")
    bad = tmp_path / "dev_sent_emo.csv"
    bad.write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(HBAFError, match="not a MELD CSV"):
        meld_text.read_meld_csv("dev", bad)
    cp = tmp_path / "cp.csv"
    cp.write_bytes(
        b"Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID\n"
        b"1,I\x92m here\x85,Ross,Joy,positive,4,0\n"
    )
    (row,) = meld_text.read_meld_csv("dev", cp)
    assert row["text"] == "I'm here..." and row["label"] == "joy" and row["dialogue_id"] == 4


# ---------------------------------------------------------------------------------------- subset


def test_limit_takes_whole_dialogues_in_seeded_order():
    utts = meld_text.read_meld_csv("train")
    sizes = Counter(u["dialogue_id"] for u in utts)
    chosen = mt.select_dialogues(utts, 150, seed=0, split="train")
    assert 140 <= len(chosen) <= 150
    got = Counter(u["dialogue_id"] for u in chosen)
    assert all(got[d] == sizes[d] for d in got), "a dialogue was cut"
    assert chosen == mt.select_dialogues(utts, 150, seed=0, split="train")
    other = mt.select_dialogues(utts, 150, seed=1, split="train")
    assert set(got) != {u["dialogue_id"] for u in other}
    assert len(mt.select_dialogues(utts, None)) == len(utts)


# ---------------------------------------------------------------------------------------- parameters


@needs_tools
def test_strength_controls_intensity_and_zero_means_neutral():
    utts = [u for u in meld_text.read_meld_csv("dev") if u["label"] != "neutral"]
    for strength, mean in ((0.25, 0.25), (0.5, 0.5)):
        vals = [prosody.render_params(u, strength=strength).intensity for u in utts]
        assert abs(float(np.mean(vals)) - mean) < 0.05
    full = [prosody.render_params(u, strength=1.0).intensity for u in utts]
    assert 0.4 < np.mean(np.isclose(full, 1.0)) < 0.6
    u = utts[0]
    assert prosody.render_params(u, strength=0.0) == prosody.render_params({**u, "label": "neutral"}, strength=0.7)
    assert prosody.render_params(u, seed=3) == prosody.render_params(dict(u), seed=3)
    assert prosody.render_params(u, seed=3) != prosody.render_params(u, seed=4)


@needs_tools
def test_speaker_voices_stable_and_main_cast_distinct():
    cast = [vc.speaker_voice(s, seed=0) for s in vc.MAIN_CAST]
    assert len({v.name.split("+")[1] for v in cast}) == 6
    assert vc.speaker_voice("Janice", 0) == vc.speaker_voice("Janice", 0)
    assert vc.speaker_voice("Ross", 0).gender == "m" and vc.speaker_voice("Rachel", 0).gender == "f"


# ---------------------------------------------------------------------------------------- rendering


def _levels(path: Path) -> tuple[float, float, float]:
    x = load_audio(path).astype(np.float64)
    spec = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(x.size, 1.0 / SAMPLE_RATE)
    rms_db = 20 * np.log10(synth.active_rms(x))
    return rms_db, float((spec * freqs).sum() / spec.sum()), x.size / SAMPLE_RATE


@needs_tools
@pytest.mark.slow
def test_prosody_differs_by_label(tmp_path):
    base = {"split": "dev", "dialogue_id": 7, "utterance_id": 2, "speaker": "Monica",
            "text": "I can't believe you did that to me again, after everything!"}
    out = {}
    for label in ("anger", "sadness", "neutral"):
        u = {**base, "label": label}
        p = prosody.render_params(u, strength=1.0, intensity=1.0, noise_snr_db=(30.0, 30.0))
        path = tmp_path / f"{label}.wav"
        synth.render_utterance(u, path, p)
        out[label] = _levels(path)
    (a_db, a_cent, a_dur), (s_db, s_cent, s_dur), (n_db, _, _) = out["anger"], out["sadness"], out["neutral"]
    assert a_db > s_db + 8.0  # louder
    assert a_cent > 1.5 * s_cent  # brighter
    assert s_dur > 1.3 * a_dur  # slower
    assert a_db > n_db > s_db


# ---------------------------------------------------------------------------------------- build


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("meldtts") / "corpus"
    manifest = mt.build_corpus(out, limit=18, splits=("dev",), seed=0, workers=2)
    assert manifest == out / "manifest.jsonl"
    return out


@needs_tools
@pytest.mark.slow
def test_manifest_and_card_are_valid(small_corpus):
    lines = (small_corpus / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    recs = [json.loads(line) for line in lines]
    assert 12 <= len(recs) <= 18
    by_dia = defaultdict(list)
    for r in recs:
        assert set(r) == MANIFEST_FIELDS
        assert not Path(r["audio"]).is_absolute() and r["audio"].startswith("wav/dev/")
        assert r["label"] in MELD_LABELS and r["split"] == "dev" and isinstance(r["index"], int)
        assert r["dialogue"].startswith("dev-") and r["text"]
        assert synth.wav_duration(small_corpus / r["audio"]) > 0.3
        by_dia[r["dialogue"]].append(r["index"])
        assert r["family"] in vc.FAMILIES and r["voice"]
    fams, voices = defaultdict(set), defaultdict(dict)
    for r in recs:
        fams[r["dialogue"]].add(r["family"])
        voices[r["dialogue"]][r["speaker"]] = r["voice"]
    assert all(len(f) == 1 for f in fams.values()), "a dialogue mixes synthesizer families"
    for dia, spk in voices.items():
        assert len(set(spk.values())) == len(spk), f"speakers of {dia} share a voice"
    sizes = Counter(u["dialogue_id"] for u in meld_text.read_meld_csv("dev"))
    for dia, idx in by_dia.items():
        assert len(idx) == sizes[int(dia.split("-")[1])] and idx == sorted(idx)
    wav = load_audio(small_corpus / recs[0]["audio"])
    assert wav.ndim == 1 and np.abs(wav).max() <= 1.0 and np.abs(wav).max() > 0.05
    card = json.loads((small_corpus / "corpus.json").read_text(encoding="utf-8"))
    assert card["synthetic"] is True and card["status"] == "complete"
    assert card["utterances"]["dev"] == len(recs) == sum(card["counts"]["dev"].values())
    assert card["duration_s"]["total"] > 0 and card["parameters"]["strength"] == 0.5
    assert card["build"]["rendered"] == len(recs)
    params = [json.loads(x) for x in (small_corpus / "render_params.jsonl").read_text().splitlines()]
    assert [p["audio"] for p in params] == [r["audio"] for r in recs]
    assert (small_corpus / "LICENSE.meld-text").read_text().startswith(" " * 20 + "GNU GENERAL PUBLIC LICENSE")


@needs_tools
@pytest.mark.slow
def test_same_seed_same_bytes_any_worker_count(small_corpus, tmp_path):
    mt.build_corpus(tmp_path / "again", limit=18, splits=("dev",), seed=0, workers=1)
    wavs = sorted((small_corpus / "wav" / "dev").glob("*.wav"))
    assert wavs
    for w in wavs:
        assert (tmp_path / "again" / "wav" / "dev" / w.name).read_bytes() == w.read_bytes()
    assert (tmp_path / "again" / "manifest.jsonl").read_bytes() == (small_corpus / "manifest.jsonl").read_bytes()
    first = json.loads((small_corpus / "manifest.jsonl").read_text().splitlines()[0])
    dia, idx = int(first["dialogue"].split("-")[1]), first["index"]
    (u,) = [u for u in meld_text.read_meld_csv("dev") if (u["dialogue_id"], u["utterance_id"]) == (dia, idx)]
    synth.render_utterance(u, tmp_path / "seed5.wav", prosody.render_params(u, seed=5), seed=5)
    assert (tmp_path / "seed5.wav").read_bytes() != (small_corpus / first["audio"]).read_bytes()


@needs_tools
@pytest.mark.slow
def test_resume_keeps_complete_wavs_and_rerenders_broken(small_corpus, tmp_path):
    work = tmp_path / "copy"
    shutil.copytree(small_corpus, work)
    mt.build_corpus(work, limit=18, splits=("dev",), seed=0, workers=2)
    card = json.loads((work / "corpus.json").read_text())
    assert card["build"]["rendered"] == 0 and card["build"]["reused"] == card["utterances"]["total"]
    wavs = sorted((work / "wav" / "dev").glob("*.wav"))
    good = wavs[0].read_bytes()
    wavs[0].write_bytes(good[: len(good) // 2])  # truncated: header promises more
    wavs[1].unlink()
    mt.build_corpus(work, limit=18, splits=("dev",), seed=0, workers=2)
    card = json.loads((work / "corpus.json").read_text())
    assert card["build"]["rendered"] == 2
    assert wavs[0].read_bytes() == good and wavs[1].exists()
    assert not list((work / "wav" / "dev").glob(".*"))  # no temporaries left


@needs_tools
def test_refuses_folder_built_with_other_parameters(small_corpus):
    with pytest.raises(HBAFError, match="other parameters"):
        mt.build_corpus(small_corpus, limit=18, splits=("dev",), seed=0, strength=0.9)


def test_argument_and_tool_errors(tmp_path, monkeypatch):
    with pytest.raises(HBAFError, match="strength"):
        mt.build_corpus(tmp_path / "x", strength=1.5)
    with pytest.raises(HBAFError, match="split"):
        mt.build_corpus(tmp_path / "x", splits=("valid",))
    with pytest.raises(HBAFError, match="limit"):
        mt.build_corpus(tmp_path / "x", limit=0)
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(HBAFError, match="espeak-ng not found; apt-get install espeak-ng sox"):
        mt.build_corpus(tmp_path / "y", limit=5, splits=("dev",))
    assert not (tmp_path / "y").exists()


def test_default_corpus_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("HBAF_HOME", str(tmp_path))
    assert mt.default_corpus_dir() == tmp_path / "corpora" / "meld-tts"
    monkeypatch.delenv("HBAF_HOME")
    assert mt.default_corpus_dir("x") == Path.home() / ".cache" / "hbaf" / "corpora" / "x"


# ---------------------------------------------------------------------------------------- families



def test_family_assignment_per_dialogue_and_deterministic():
    fams = ("espeak-ng", "flite", "festival")
    dias = sorted({u["dialogue_id"] for u in meld_text.read_meld_csv("train")})
    got = [vc.dialogue_family(0, "train", d, fams) for d in dias]
    assert got == [vc.dialogue_family(0, "train", d, list(fams)) for d in dias]
    shares = Counter(got)
    assert set(shares) == set(fams) and min(shares.values()) > 0.25 * len(dias)
    assert got != [vc.dialogue_family(1, "train", d, fams) for d in dias]
    # Dropping a family only moves that family's dialogues.
    two = [vc.dialogue_family(0, "train", d, ("espeak-ng", "flite")) for d in dias]
    assert all(b == a for a, b in zip(got, two) if a != "festival")


def test_missing_or_unknown_family_is_a_one_line_error(monkeypatch):
    monkeypatch.setattr(vc, "family_installed", lambda f: f == "espeak-ng")
    with pytest.raises(HBAFError) as err:
        vc.check_families("espeak-ng,festival")
    assert "\n" not in str(err.value) and "apt-get install festival" in str(err.value)
    with pytest.raises(HBAFError, match="apt-get install flite"):
        vc.check_families(["flite"])
    with pytest.raises(HBAFError, match="unknown synthesizer family 'mbrolaX'"):
        vc.check_families("mbrolaX")
    assert vc.check_families("espeak-ng") == ("espeak-ng",)
    assert vc.check_families(None) == ("espeak-ng",)


def test_dialogue_voices_are_distinct():
    for fam in vc.installed_families():
        spk = ["Ross", "Rachel", "Monica", "Joey", "Chandler", "Phoebe", "Gunther", "Janice"]
        got = vc.dialogue_voices(spk, 0, fam)
        assert len({v.label for v in got.values()}) == len(spk)
        assert all(v.family == fam for v in got.values())


def _pitch_hz(x: np.ndarray) -> float:
    """Median autocorrelation F0 of the loud 40 ms frames (crude, but cheap)."""
    frame, out = 640, []
    thr = 0.3 * np.sqrt(np.mean(x**2)) * 3
    for i in range(0, x.size - frame, frame // 2):
        f = x[i : i + frame] - x[i : i + frame].mean()
        if np.sqrt(np.mean(f**2)) < thr / 3:
            continue
        ac = np.correlate(f, f, "full")[frame - 1 :]
        lo, hi = SAMPLE_RATE // 500, SAMPLE_RATE // 70
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] > 0.4 * ac[0]:
            out.append(SAMPLE_RATE / lag)
    return float(np.median(out)) if out else 0.0


@pytest.mark.parametrize("family", vc.FAMILIES)
def test_each_family_renders_and_anger_is_higher_and_louder_than_sadness(family):
    if not vc.family_installed(family):
        pytest.skip(f"{family} not installed (apt-get install {vc.FAMILY_PACKAGES[family]})")
    base = {"split": "dev", "dialogue_id": 3, "utterance_id": 1, "speaker": "Rachel",
            "text": "Why would you ever say that to me?"}
    got = {}
    for label in ("anger", "sadness"):
        u = {**base, "label": label}
        p = prosody.render_params(u, intensity=1.0, family=family, noise_snr_db=(40.0, 40.0))
        assert p.family == family
        x = synth.synthesize(u["text"], p, noise_seed=1).astype(np.float64)
        assert x.dtype == np.float64 and x.size > 0.5 * SAMPLE_RATE and np.abs(x).max() <= 1.0
        got[label] = (20 * np.log10(synth.active_rms(x)), _pitch_hz(x), x.size)
    (a_db, a_f0, a_n), (s_db, s_f0, s_n) = got["anger"], got["sadness"]
    assert a_db > s_db + 6.0
    assert a_f0 > 1.1 * s_f0 > 0
    assert s_n > a_n
