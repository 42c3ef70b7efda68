import numpy as np
import pytest

from hbaf.contract import SAMPLE_RATE
from hbaf.data import augment as aug
from hbaf.errors import HBAFError

SR = SAMPLE_RATE


def speechlike(seconds=2.0, seed=0, level=0.3):
    """Voiced 'syllables' (harmonics of a wandering 120-220 Hz pitch, 4 Hz on/off) with silent
    gaps and 0.3 s of leading and trailing silence: a stand-in for speech with pauses."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    f0 = 170 + 50 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    x = sum((1.0 / k) * np.sin(k * phase + rng.uniform(0, 6.28)) for k in range(1, 20))
    env = np.clip(np.sin(2 * np.pi * 4 * t), 0, None)
    x = x * env
    x[: int(0.3 * SR)] = 0
    x[-int(0.3 * SR):] = 0
    return (level * x / np.max(np.abs(x))).astype(np.float32)


def band_energy_fraction(x, lo, hi):
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(x.size, 1 / SR)
    return spec[(f >= lo) & (f < hi)].sum() / spec.sum()


def check_wave(y, n):
    assert y.dtype == np.float32 and y.ndim == 1 and y.size == n
    assert np.all(np.isfinite(y)) and np.max(np.abs(y)) <= 1.0


@pytest.mark.parametrize("colour", aug.NOISE_COLOURS)
@pytest.mark.parametrize("snr", [5.0, 10.0, 30.0])
def test_noise_snr_is_measured_on_active_speech(colour, snr):
    x = speechlike()
    y = aug.add_noise(x, snr, np.random.default_rng(1), colour)
    check_wave(y, x.size)
    assert abs(aug.measure_snr(x, y) - snr) < 0.5
    # the silent lead-in gets noise too (it is not measured against silence)
    assert np.std(y[: int(0.25 * SR)]) > 0


def test_noise_snr_survives_the_clipping_guard():
    x = speechlike(level=0.95)
    y = aug.add_noise(x, 5.0, np.random.default_rng(2), "white")
    assert np.max(np.abs(y)) <= 1.0
    scale = np.dot(y, x) / np.dot(x, x)  # the guard scales the mix as a whole
    assert abs(aug.measure_snr(scale * x, y) - 5.0) < 0.5


def test_noise_colours_have_their_slopes():
    rng = np.random.default_rng(0)
    tilt = {}
    for c in ("white", "pink", "brown"):
        n = aug.make_noise(SR * 2, rng, c)
        tilt[c] = 10 * np.log10(band_energy_fraction(n, 100, 1000) / band_energy_fraction(n, 1000, 8000))
    # 100-1000 Hz against 1000-8000 Hz: -9.0 dB white, +0.5 dB pink (1/f), +10.1 dB brown (1/f^2)
    assert abs(tilt["white"] + 9.0) < 1 and abs(tilt["pink"] - 0.5) < 1 and abs(tilt["brown"] - 10.1) < 1.5
    with pytest.raises(HBAFError, match="noise colour"):
        aug.make_noise(10, rng, "purple")


def test_silence_gets_no_noise_and_no_crash():
    z = np.zeros(SR, dtype=np.float32)
    np.testing.assert_array_equal(aug.add_noise(z, 10, np.random.default_rng(0)), z)
    for cond in aug.CONDITIONS:
        check_wave(aug.degrade(z, cond, 0), z.size)


def test_telephone_band():
    x = aug.make_noise(SR * 2, np.random.default_rng(3)).astype(np.float32)
    x = 0.3 * x / np.max(np.abs(x))
    for companding in (True, False):
        y = aug.telephone(x, companding=companding)
        check_wave(y, x.size)
        assert band_energy_fraction(y, 4000, SR / 2) < 1e-3
        assert band_energy_fraction(y, 0, 200) < 1e-2
        assert band_energy_fraction(y, 300, 3400) > 0.95


def burst_then_silence():
    """1 s of a modulated 200 Hz tone plus noise, then 0.5 s of digital silence."""
    t = np.arange(SR) / SR
    burst = 0.3 * np.sin(2 * np.pi * 200 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    burst += 0.05 * np.random.default_rng(1).standard_normal(SR)
    return np.concatenate([burst, np.zeros(SR // 2)]).astype(np.float32)


def level_db(y, a, b, ref):
    return 10 * np.log10(np.mean(y[a:b].astype(np.float64) ** 2) / ref + 1e-30)


def test_reverb_lengthens_decay_and_keeps_level():
    x = burst_then_silence()
    assert np.all(x[SR:] == 0)
    tails = []
    for rt60 in (0.2, 0.5, 0.8):
        y = aug.reverberate(x, np.random.default_rng(4), rt60)
        check_wave(y, x.size)
        assert abs(10 * np.log10(aug.active_power(y) / aug.active_power(x))) <= 3.0
        ref = np.mean(y[SR - 1600:SR].astype(np.float64) ** 2)  # the last 100 ms of the burst
        early = level_db(y, SR + 800, SR + 1600, ref)   # 50-100 ms after the offset
        late = level_db(y, SR + 1600, SR + 3200, ref)   # 100-200 ms after
        est = 60.0 / (early - late) * 0.075  # RT60 from the decay slope between the window centres
        assert abs(est - rt60) < 0.3 * rt60, (rt60, est)
        tails.append(early)
    assert tails[0] > -30 and tails[0] < tails[1] < tails[2]
    # speech with pauses keeps its level too
    sp = speechlike()
    y = aug.reverberate(sp, np.random.default_rng(0))
    assert abs(10 * np.log10(aug.active_power(y) / aug.active_power(sp))) <= 3.0
    rir = aug.room_impulse_response(np.random.default_rng(0), 0.5)
    assert abs(np.sum(rir ** 2) - 1) < 1e-9 and rir.size == int(SR * 0.55) + 1
    with pytest.raises(HBAFError, match="RT60"):
        aug.reverberate(x, np.random.default_rng(0), 10.0)


@pytest.mark.parametrize("db", [-12.0, -3.0, 0.0, 6.0])
def test_gain_is_exact(db):
    x = speechlike(level=0.2)
    y = aug.gain(x, db)
    check_wave(y, x.size)
    np.testing.assert_allclose(y, x * 10 ** (db / 20), rtol=1e-6, atol=1e-7)


def test_gain_overdrive_is_soft_limited():
    x = speechlike(level=0.5)
    y = aug.gain(x, 12.0)
    check_wave(y, x.size)
    small = np.abs(x * 10 ** (12 / 20)) <= aug.LIMIT_KNEE
    np.testing.assert_allclose(y[small], (x * 10 ** (12 / 20))[small], rtol=1e-6, atol=1e-7)
    assert 0.95 < np.max(np.abs(y)) <= 1.0
    assert np.all(np.diff(aug.soft_limit(np.linspace(-5, 5, 1001))) >= 0)  # monotonic
    assert np.all(np.diff(aug.soft_limit(np.linspace(-1.2, 1.2, 241))) > 0)


@pytest.mark.parametrize("factor", [0.9, 0.95, 1.05, 1.1])
def test_speed_scales_length_and_pitch(factor):
    x = np.sin(2 * np.pi * 440 * np.arange(SR) / SR).astype(np.float32) * 0.5
    y = aug.speed(x, factor)
    assert y.dtype == np.float32 and np.all(np.isfinite(y)) and np.max(np.abs(y)) <= 1.0
    assert abs(y.size - x.size / factor) <= 1
    f = np.fft.rfftfreq(y.size, 1 / SR)[np.argmax(np.abs(np.fft.rfft(y)))]
    assert abs(f - 440 * factor) < 3
    with pytest.raises(HBAFError, match="speed factor"):
        aug.speed(x, 3.0)


def test_conditions_are_deterministic_and_well_formed():
    assert list(aug.CONDITIONS) == ["clean", "noise-10db", "reverb", "telephone", "gain+12", "gain-12"]
    x = speechlike(1.5)
    outs = {}
    for cond in aug.CONDITIONS:
        a, b = aug.degrade(x, cond, seed=7), aug.degrade(x, cond, seed=7)
        check_wave(a, x.size)
        np.testing.assert_array_equal(a, b)
        outs[cond] = a
    np.testing.assert_array_equal(outs["clean"], x)
    assert abs(aug.measure_snr(x, outs["noise-10db"]) - 10) < 0.5
    assert not np.array_equal(aug.degrade(x, "noise-10db", 7), aug.degrade(x, "noise-10db", 8))
    # the room is fixed: the same for every utterance seed
    np.testing.assert_array_equal(aug.degrade(x, "reverb", 1), aug.degrade(x, "reverb", 2))
    np.testing.assert_allclose(outs["gain-12"], x * 10 ** (-12 / 20), rtol=1e-6, atol=1e-7)
    with pytest.raises(HBAFError, match="condition"):
        aug.degrade(x, "underwater", 0)


def test_augment_chain_records_and_repeats():
    x = speechlike(1.5)
    y1, applied1 = aug.augment(x, np.random.default_rng(11), p=1.0)
    y2, applied2 = aug.augment(x, np.random.default_rng(11), p=1.0)
    np.testing.assert_array_equal(y1, y2)
    assert applied1 == applied2 and list(applied1) == list(aug.AUGMENTATIONS)
    assert 0.9 <= applied1["speed"]["factor"] <= 1.1 and 5 <= applied1["noise"]["snr_db"] <= 30
    assert -12 <= applied1["gain"]["db"] <= 12 and 0.2 <= applied1["reverb"]["rt60_s"] <= 0.8
    assert abs(y1.size - x.size / applied1["speed"]["factor"]) <= 1
    assert np.all(np.isfinite(y1)) and np.max(np.abs(y1)) <= 1.0

    y0, applied0 = aug.augment(x, np.random.default_rng(11), p=0.0)
    assert applied0 == {} and np.array_equal(y0, x)
    _, only = aug.augment(x, np.random.default_rng(11), p=1.0, which=["gain", "noise"])
    assert list(only) == ["noise", "gain"]

    seen = set()
    rng = np.random.default_rng(5)
    for _ in range(20):
        y, applied = aug.augment(x, rng)
        assert np.all(np.isfinite(y)) and np.max(np.abs(y)) <= 1.0
        seen.update(applied)
    assert {"noise", "gain"} <= seen
    with pytest.raises(HBAFError, match="augmentation"):
        aug.augment(x, rng, which=["echo"])
    with pytest.raises(HBAFError, match="probability"):
        aug.augment(x, rng, p={"noise": 2.0})


def test_bad_input_is_a_user_error():
    with pytest.raises(HBAFError, match="mono"):
        aug.gain(np.zeros((2, 100), dtype=np.float32), 3)
    y = aug.gain(np.array([np.nan, np.inf, 0.1], dtype=np.float32), 0)
    assert np.all(np.isfinite(y)) and np.max(np.abs(y)) <= 1.0
