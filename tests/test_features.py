import numpy as np
import pytest
import soundfile as sf

from hbaf.audio import load_audio, resample, to_mono
from hbaf.contract import FEATURE_FORMATS, HOP_LENGTH, SAMPLE_RATE
from hbaf.errors import HBAFError
from hbaf.features import log_mel, mel_filterbank, num_frames, utterance_features


def tone(freq, seconds=1.0, rate=SAMPLE_RATE):
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_shape_and_frame_count():
    x = tone(440, 3.0)
    f = log_mel(x)
    assert f.shape == (num_frames(x.size), 80) == (1 + 3 * SAMPLE_RATE // HOP_LENGTH, 80)
    assert f.dtype == np.float32


def test_utterance_features_are_cut_to_the_contract():
    long = tone(440, 12.0)
    mel = FEATURE_FORMATS["log-mel"]
    f = utterance_features(long, "log-mel")
    assert f.shape == (mel.max_frames, 80) and f.dtype == np.float32
    np.testing.assert_array_equal(f, log_mel(long)[: mel.max_frames])


def test_whisper_states_are_the_utterance_frames_of_the_recogniser_encoder():
    from edge_runtime.asr import WhisperASR

    fmt = FEATURE_FORMATS["whisper-tiny.en"]
    long = tone(440, 12.0)
    f = utterance_features(long, fmt.kind)
    assert f.shape == (fmt.max_frames, 384) and f.dtype == np.float32 and np.isfinite(f).all()
    x = tone(300, 2.3)
    f = utterance_features(x, fmt.kind)
    assert f.shape == (fmt.frames_for(x.size), 384) == (115, 384)
    # the runtime's one encoder pass gives exactly the training features
    asr = WhisperASR(beam_size=1)
    np.testing.assert_array_equal(asr.transcribe(x, states=fmt.kind).states, f)
    # so do its other two paths: past the window (the first 10 s) and under 10 ms (nothing to decode)
    np.testing.assert_array_equal(asr.transcribe(long, states=fmt.kind).states, utterance_features(long, fmt.kind))
    blip = np.zeros(3, np.float32)
    assert utterance_features(blip, fmt.kind).shape == (1, 384)
    np.testing.assert_array_equal(asr.transcribe(blip, states=fmt.kind).states, utterance_features(blip, fmt.kind))


def test_tone_energy_lands_in_the_right_mel_bin():
    fb = mel_filterbank()
    freqs = np.linspace(0, SAMPLE_RATE / 2, fb.shape[1])
    centre = freqs[fb.argmax(axis=1)]
    for hz in (300, 1000, 4000):
        f = log_mel(tone(hz))
        peak_bin = int(np.median(f.argmax(axis=1)))
        assert abs(centre[peak_bin] - hz) / hz < 0.15


def test_loudness_is_preserved():
    quiet, loud = log_mel(tone(500) * 0.05), log_mel(tone(500))
    assert loud.mean() > quiet.mean() + 0.2


def test_silence_and_nan_are_finite():
    f = log_mel(np.zeros(1600, np.float32))
    assert np.isfinite(f).all()
    x = tone(300)
    x[100:200] = np.nan
    assert np.isfinite(log_mel(x)).all()


def test_resample_and_downmix(tmp_path):
    x48 = tone(440, 1.0, 48000)
    stereo = np.stack([x48, x48], axis=1)
    path = tmp_path / "s.wav"
    sf.write(path, stereo, 48000, subtype="PCM_24")
    y = load_audio(path)
    assert y.shape == (SAMPLE_RATE,)
    ref = tone(440, 1.0)
    assert np.corrcoef(y[200:-200], ref[200:-200])[0, 1] > 0.99
    assert resample(tone(440, 1.0, 8000), 8000).shape == (SAMPLE_RATE,)
    assert to_mono(stereo).shape == (48000,)


def test_resample_is_scipys_polyphase_filter():
    """The one resampler (files and streams) is scipy's resample_poly filter, down and up."""
    from math import gcd

    from scipy.signal import resample_poly

    x = (0.3 * np.random.default_rng(2).standard_normal(20000)).astype(np.float32)
    for orig, target in ((48000, SAMPLE_RATE), (44100, SAMPLE_RATE), (8000, SAMPLE_RATE), (SAMPLE_RATE, 48000)):
        g = gcd(orig, target)
        ref = resample_poly(x.astype(np.float64), target // g, orig // g)
        y = resample(x, orig, target)
        assert y.dtype == np.float32 and y.shape == ref.shape
        assert np.max(np.abs(y - ref)) < 1e-6, (orig, target)


def test_bad_files(tmp_path):
    with pytest.raises(HBAFError, match="not found"):
        load_audio(tmp_path / "missing.wav")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(HBAFError, match="empty"):
        load_audio(empty)
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 10)
    with pytest.raises(HBAFError, match="not a readable audio file"):
        load_audio(text)
