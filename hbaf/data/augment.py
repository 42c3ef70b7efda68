"""Audio degradation and training augmentation for 16 kHz mono float32 speech.

Every function takes a wave in [-1, 1] and returns a new float32 wave in [-1, 1] of the same
length (``speed`` excepted: its length scales by ``1 / factor``). Randomness comes only from the
``np.random.Generator`` passed in, so a seed fixes the result.

Building blocks
    ``gain``, ``add_noise`` (white, pink, brown or babble-like noise at an SNR measured on
    active speech), ``reverberate`` (synthetic room impulse response), ``telephone`` (300-3400 Hz
    band through an 8 kHz, optionally mu-law, channel), ``speed`` (tempo and pitch together).

Training
    ``augment(wave, rng)`` applies a random chain (speed, reverb, noise, telephone, gain, each
    with its own probability) and returns ``(wave, applied)`` where ``applied`` records the
    chosen parameters (JSON-friendly) so a training run can log them.

Evaluation
    ``CONDITIONS`` are the fixed conditions of the degraded-audio test and
    ``degrade(wave, condition, seed)`` renders one, deterministically per (seed, condition).

Output is kept in [-1, 1]: a plain gain goes through a soft limiter (samples up to 0.9 are
untouched, louder ones are compressed smoothly below 1, like an overdriven input), the other
operations scale the whole wave down when their peak exceeds 1 (which keeps SNR and spectra).
"""

from __future__ import annotations

import zlib
from fractions import Fraction
from typing import Callable, Iterable, Mapping

import numpy as np

from hbaf.contract import SAMPLE_RATE
from hbaf.errors import HBAFError

NOISE_COLOURS = ("white", "pink", "brown", "babble-like")

FRAME_S = 0.02          # frame length of the active-speech detector
ACTIVE_RANGE_DB = 30.0  # frames within this many dB of the loud frames count as active speech
LIMIT_KNEE = 0.9        # the soft limiter leaves |x| <= LIMIT_KNEE untouched
PEAK = 0.999            # peak after scaling down an overshooting wave


# --------------------------------------------------------------------------- helpers

def _wave(wave: np.ndarray) -> np.ndarray:
    """A 1-D finite float32 copy of ``wave``; HBAFError for anything else."""
    x = np.asarray(wave, dtype=np.float32)
    if x.ndim != 1:
        raise HBAFError(f"augmentation expects a mono 1-D wave, got shape {x.shape}; mix down to mono first")
    if not np.all(np.isfinite(x)):
        x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)
    return x.copy()


def soft_limit(wave: np.ndarray, knee: float = LIMIT_KNEE) -> np.ndarray:
    """Leave |x| <= knee as is and compress louder samples smoothly into (knee, 1)."""
    x = np.asarray(wave, dtype=np.float64)
    mag = np.abs(x)
    over = mag > knee
    if np.any(over):
        head = 1.0 - knee
        x = x.copy()
        x[over] = np.sign(x[over]) * (knee + head * np.tanh((mag[over] - knee) / head))
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def scale_to_fit(wave: np.ndarray, peak: float = PEAK) -> np.ndarray:
    """Scale the whole wave down when its peak exceeds 1 (shape and SNR unchanged)."""
    x = np.asarray(wave, dtype=np.float64)
    top = float(np.max(np.abs(x))) if x.size else 0.0
    if top > 1.0:
        x = x * (peak / top)
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def _frame_power(wave: np.ndarray, rate: int = SAMPLE_RATE) -> tuple[np.ndarray, int]:
    """Mean power of consecutive non-overlapping frames (the last partial frame included)."""
    n = max(1, int(round(FRAME_S * rate)))
    x = np.asarray(wave, dtype=np.float64)
    pad = (-x.size) % n
    frames = np.pad(x, (0, pad)).reshape(-1, n)
    power = np.sum(frames ** 2, axis=1) / np.r_[np.full(frames.shape[0] - 1, n), n - pad]
    return power, n


def active_mask(wave: np.ndarray, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Boolean per-sample mask of active speech: the 20 ms frames within ``ACTIVE_RANGE_DB`` of
    the loud (95th percentile) frames. All False for a silent wave."""
    power, n = _frame_power(wave, rate)
    mask = np.zeros(np.asarray(wave).size, dtype=bool)
    if power.size == 0 or not np.any(power > 0):
        return mask
    loud = np.percentile(power, 95)
    active = power >= loud * 10.0 ** (-ACTIVE_RANGE_DB / 10.0)
    active &= power > 0
    return np.repeat(active, n)[: mask.size]


def active_power(wave: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean power of ``wave`` over the active-speech samples (the whole wave when none are)."""
    x = np.asarray(wave, dtype=np.float64)
    if x.size == 0:
        return 0.0
    mask = active_mask(x) if mask is None else mask
    sel = x[mask] if np.any(mask) else x
    return float(np.mean(sel ** 2))


def measure_snr(clean: np.ndarray, noisy: np.ndarray) -> float:
    """SNR in dB of ``noisy`` against ``clean``, both measured on the active speech of ``clean``."""
    clean = np.asarray(clean, dtype=np.float64)
    noise = np.asarray(noisy, dtype=np.float64) - clean
    mask = active_mask(clean)
    return 10.0 * np.log10(active_power(clean, mask) / max(active_power(noise, mask), 1e-30))


# --------------------------------------------------------------------------- operations

def gain(wave: np.ndarray, db: float) -> np.ndarray:
    """Multiply by ``10 ** (db / 20)``; samples pushed past 0.9 go through the soft limiter."""
    return soft_limit(_wave(wave).astype(np.float64) * 10.0 ** (float(db) / 20.0))


def _shaped_noise(n: int, rng: np.random.Generator, exponent: float, rate: int) -> np.ndarray:
    """Gaussian noise whose power spectrum falls as ``1 / f ** exponent`` (flat below 20 Hz)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / rate)
    shape = np.maximum(freqs, 20.0) ** (-exponent / 2.0)
    shape[0] = 0.0
    return np.fft.irfft(spec * shape, n)


def _babble(n: int, rng: np.random.Generator, rate: int, talkers: int = 6) -> np.ndarray:
    """Speech-shaped noise from several 'talkers': band-passed noise with a random voice-band
    tilt, gated by a syllable-rate (3-6 Hz) envelope, summed."""
    from scipy.signal import butter, sosfilt

    t = np.arange(n) / rate
    out = np.zeros(n)
    for _ in range(talkers):
        lo, hi = rng.uniform(100, 300), rng.uniform(2500, 4500)
        sos = butter(4, [lo, min(hi, 0.45 * rate)], btype="bandpass", fs=rate, output="sos")
        voice = sosfilt(sos, _shaped_noise(n, rng, 1.0, rate))
        rate_hz = rng.uniform(3.0, 6.0)
        env = np.clip(np.sin(2 * np.pi * rate_hz * t + rng.uniform(0, 2 * np.pi)), 0.0, None) ** 2
        out += voice / (np.std(voice) + 1e-12) * env
    return out


def make_noise(n: int, rng: np.random.Generator, colour: str = "white", rate: int = SAMPLE_RATE) -> np.ndarray:
    """``n`` samples of zero-mean noise of the given colour (unit-free; callers scale it)."""
    if colour == "white":
        return rng.standard_normal(n)
    if colour == "pink":
        return _shaped_noise(n, rng, 1.0, rate)
    if colour == "brown":
        return _shaped_noise(n, rng, 2.0, rate)
    if colour == "babble-like":
        return _babble(n, rng, rate)
    raise HBAFError(f"unknown noise colour {colour!r}; use one of {', '.join(NOISE_COLOURS)}")


def add_noise(wave: np.ndarray, snr_db: float, rng: np.random.Generator, colour: str = "white") -> np.ndarray:
    """Add ``colour`` noise so that speech power / noise power over the active-speech samples is
    ``snr_db``. A silent wave (no SNR to speak of) comes back unchanged. If the mix overshoots,
    the whole mix is scaled down, which keeps the SNR."""
    x = _wave(wave).astype(np.float64)
    mask = active_mask(x)
    if x.size == 0 or not np.any(mask):
        return x.astype(np.float32)
    noise = make_noise(x.size, rng, colour)
    target = active_power(x, mask) / 10.0 ** (float(snr_db) / 10.0)
    noise *= np.sqrt(target / max(active_power(noise, mask), 1e-30))
    return scale_to_fit(x + noise)


def room_impulse_response(rng: np.random.Generator, rt60_s: float, rate: int = SAMPLE_RATE) -> np.ndarray:
    """A synthetic room impulse response: the direct path, a few early reflections (3-40 ms) and
    an exponentially decaying noise tail reaching -60 dB after ``rt60_s``; unit energy."""
    length = int(rate * rt60_s * 1.1) + 1
    t = np.arange(length) / rate
    decay = np.exp(-3.0 * np.log(10.0) * t / rt60_s)  # amplitude -60 dB at t = rt60
    tail = rng.standard_normal(length) * decay
    onset = int(0.005 * rate)
    tail[:onset] *= np.linspace(0.0, 1.0, onset, endpoint=False)  # the diffuse field builds up
    tail *= np.sqrt(rt60_s / (np.sum(tail ** 2) + 1e-12))  # reverberant energy grows with RT60
    rir = tail
    rir[0] += 1.0
    for _ in range(int(rng.integers(4, 9))):
        k = int(rng.uniform(0.003, 0.040) * rate)
        rir[k] += rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 0.6) * np.exp(-3.0 * np.log(10.0) * k / rate / rt60_s)
    return rir / np.sqrt(np.sum(rir ** 2))


def reverberate(wave: np.ndarray, rng: np.random.Generator, rt60_s: float | None = None) -> np.ndarray:
    """Convolve with a synthetic room impulse response (RT60 drawn from 0.2-0.8 s unless given),
    keep the first ``len(wave)`` samples and restore the active-speech level of the input."""
    from scipy.signal import fftconvolve

    x = _wave(wave).astype(np.float64)
    if rt60_s is None:
        rt60_s = float(rng.uniform(0.2, 0.8))
    if not 0.05 <= rt60_s <= 3.0:
        raise HBAFError(f"RT60 {rt60_s} s is out of range; use 0.05-3 s (rooms are 0.2-0.8 s)")
    if x.size == 0:
        return x.astype(np.float32)
    y = fftconvolve(x, room_impulse_response(rng, rt60_s))[: x.size]
    before, after = active_power(x), active_power(y)
    if after > 0:
        y *= np.sqrt(before / after)
    return scale_to_fit(y)


def mu_law(wave: np.ndarray, mu: int = 255) -> np.ndarray:
    """G.711-style mu-law companding: compress, quantise to 8 bits, expand."""
    x = np.clip(np.asarray(wave, dtype=np.float64), -1.0, 1.0)
    comp = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    q = np.round((comp + 1.0) / 2.0 * mu) / mu * 2.0 - 1.0
    return np.sign(q) * np.expm1(np.abs(q) * np.log1p(mu)) / mu


def telephone(wave: np.ndarray, companding: bool = True) -> np.ndarray:
    """A narrow-band telephone channel: 300-3400 Hz band-pass, down to 8 kHz (mu-law companded
    unless ``companding=False``) and back up to 16 kHz."""
    from scipy.signal import butter, resample_poly, sosfiltfilt

    x = _wave(wave).astype(np.float64)
    if x.size < 64:
        return np.zeros_like(x, dtype=np.float32)
    sos = butter(6, [300.0, 3400.0], btype="bandpass", fs=SAMPLE_RATE, output="sos")
    y = sosfiltfilt(sos, x)
    narrow = resample_poly(y, 1, SAMPLE_RATE // 8000)
    if companding:
        narrow = mu_law(narrow)
    y = resample_poly(narrow, SAMPLE_RATE // 8000, 1)
    y = sosfiltfilt(sos, y)  # the receiving end's band limit (removes companding noise outside)
    y = np.pad(y, (0, max(0, x.size - y.size)))[: x.size]
    return scale_to_fit(y)


def speed(wave: np.ndarray, factor: float) -> np.ndarray:
    """Play ``factor`` times faster by resampling: tempo and pitch change together and the length
    becomes ``len(wave) / factor`` (rounded up). Factors 0.5-2 are accepted (training uses 0.9-1.1)."""
    from scipy.signal import resample_poly

    if not 0.5 <= float(factor) <= 2.0:
        raise HBAFError(f"speed factor {factor} is out of range; use 0.5-2 (0.9-1.1 for training)")
    x = _wave(wave).astype(np.float64)
    frac = Fraction(float(factor)).limit_denominator(200)
    if frac == 1 or x.size == 0:
        return x.astype(np.float32)
    y = resample_poly(x, frac.denominator, frac.numerator)
    return soft_limit(y)


# --------------------------------------------------------------------------- training chain

# name -> f(wave, rng) -> (wave, parameters); the order here is the order of the chain:
# the talker (speed), the room (reverb), the surroundings (noise), the channel, the input level.
def _aug_speed(w, rng):
    f = round(float(rng.uniform(0.9, 1.1)), 3)
    return speed(w, f), {"factor": f}


def _aug_reverb(w, rng):
    rt60 = round(float(rng.uniform(0.2, 0.8)), 3)
    return reverberate(w, rng, rt60), {"rt60_s": rt60}


def _aug_noise(w, rng):
    snr = round(float(rng.uniform(5.0, 30.0)), 2)
    colour = str(rng.choice(NOISE_COLOURS))
    return add_noise(w, snr, rng, colour), {"snr_db": snr, "colour": colour}


def _aug_telephone(w, rng):
    mu = bool(rng.random() < 0.5)
    return telephone(w, companding=mu), {"mu_law": mu}


def _aug_gain(w, rng):
    db = round(float(rng.uniform(-12.0, 12.0)), 2)
    return gain(w, db), {"db": db}


AUGMENTATIONS: dict[str, Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, dict]]] = {
    "speed": _aug_speed,
    "reverb": _aug_reverb,
    "noise": _aug_noise,
    "telephone": _aug_telephone,
    "gain": _aug_gain,
}

DEFAULT_P: dict[str, float] = {"speed": 0.3, "reverb": 0.3, "noise": 0.5, "telephone": 0.1, "gain": 0.5}


def augment(wave: np.ndarray, rng: np.random.Generator, p: Mapping[str, float] | float | None = None,
            which: Iterable[str] | None = None) -> tuple[np.ndarray, dict]:
    """A random augmentation chain for training.

    Each augmentation in ``which`` (default: all of ``AUGMENTATIONS``) is applied with its
    probability from ``p`` (a mapping name -> probability, missing names taking ``DEFAULT_P``;
    or one float for all). Returns the new wave and ``{name: parameters}`` of those applied,
    in chain order. A probability is drawn for every augmentation in ``which`` whether or not
    it fires, so the draws stay aligned across settings of ``p``.
    """
    names = list(AUGMENTATIONS) if which is None else list(which)
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise HBAFError(f"unknown augmentation {unknown[0]!r}; use some of {', '.join(AUGMENTATIONS)}")
    if isinstance(p, (int, float)):
        probs = {n: float(p) for n in AUGMENTATIONS}
    else:
        probs = {**DEFAULT_P, **(dict(p) if p else {})}
    for n, v in probs.items():
        if not 0.0 <= v <= 1.0:
            raise HBAFError(f"augmentation probability for {n!r} is {v}; use a value in 0-1")
    y = _wave(wave)
    applied: dict[str, dict] = {}
    for name in AUGMENTATIONS:  # fixed chain order whatever the order of ``which``
        if name not in names:
            continue
        if rng.random() < probs.get(name, 0.0):
            y, params = AUGMENTATIONS[name](y, rng)
            applied[name] = params
    return y.astype(np.float32), applied


# --------------------------------------------------------------------------- evaluation

REVERB_SEED = 20240501  # one fixed room for every utterance of the "reverb" condition
REVERB_RT60_S = 0.5

CONDITIONS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "clean": lambda w, rng: _wave(w),
    "noise-10db": lambda w, rng: add_noise(w, 10.0, rng, "white"),
    "reverb": lambda w, rng: reverberate(w, np.random.default_rng(REVERB_SEED), REVERB_RT60_S),
    "telephone": lambda w, rng: telephone(w, companding=True),
    "gain+12": lambda w, rng: gain(w, 12.0),
    "gain-12": lambda w, rng: gain(w, -12.0),
}
"""The degraded-audio test conditions: clean; white noise at 10 dB SNR on active speech; one fixed
room (RT60 0.5 s, fixed seed); the telephone channel with mu-law; +12 dB (soft-limited) and -12 dB."""


def degrade(wave: np.ndarray, condition: str, seed: int) -> np.ndarray:
    """``wave`` under one of ``CONDITIONS``; the same (wave, condition, seed) gives the same output."""
    if condition not in CONDITIONS:
        raise HBAFError(f"unknown degradation condition {condition!r}; use one of {', '.join(CONDITIONS)}")
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(condition.encode())])
    return CONDITIONS[condition](wave, rng).astype(np.float32)


__all__ = [
    "AUGMENTATIONS", "CONDITIONS", "DEFAULT_P", "NOISE_COLOURS", "active_mask", "active_power", "add_noise",
    "augment", "degrade", "gain", "make_noise", "measure_snr", "mu_law", "reverberate", "room_impulse_response",
    "scale_to_fit", "soft_limit", "speed", "telephone",
]
