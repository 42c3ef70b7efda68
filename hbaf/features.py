"""Model inputs: the one waveform -> model-input call (``utterance_features``), and the log-mel.

Decoding, down-mixing and resampling are ``hbaf.audio``'s; this module starts from 16 kHz mono
float samples.

A model's input format is a contract fact (``hbaf.contract.FEATURE_FORMATS``): Whisper encoder
states for new models (hbaf.encoder), or the log-mel below (release 1's models, and the
ablation row). The sample rate, the bin count, the hop and the frame cap are contract facts.

The log-mel:

80 mel bins, 16 kHz, 25 ms Hann window (400 samples), 10 ms hop (160 samples),
512-point FFT, Slaney-style mel filters, log10 with a floor, then a fixed affine
scaling. There is deliberately no per-utterance normalisation: loudness is an
emotion cue and must survive into the features.
"""

from __future__ import annotations

import functools

import numpy as np

from hbaf.contract import FEATURE_FORMATS, FEATURE_KIND, HOP_LENGTH, LOG_MEL, SAMPLE_RATE, feature_format
from hbaf.errors import HBAFError

N_MELS = FEATURE_FORMATS[LOG_MEL].dim
WIN_LENGTH = 400
N_FFT = 512
LOG_FLOOR = 1e-10


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    f_sp = 200.0 / 3
    mel = hz / f_sp
    min_log_hz = 1000.0
    logstep = np.log(6.4) / 27.0
    return np.where(hz >= min_log_hz, min_log_hz / f_sp + np.log(np.maximum(hz, 1e-9) / min_log_hz) / logstep, mel)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_mel = 1000.0 / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(mel >= min_log_mel, 1000.0 * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)


@functools.lru_cache(maxsize=4)
def mel_filterbank(n_mels: int = N_MELS, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Slaney-normalised triangular mel filters, shape [n_mels, n_fft // 2 + 1]."""
    fft_freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    mel_pts = np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), n_mels + 2)
    hz_pts = _mel_to_hz(mel_pts)
    fdiff = np.diff(hz_pts)
    ramps = hz_pts[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (hz_pts[2 : n_mels + 2] - hz_pts[:n_mels]))[:, None]
    return weights.astype(np.float32)


@functools.lru_cache(maxsize=1)
def _window() -> np.ndarray:
    return np.hanning(WIN_LENGTH + 1)[:-1].astype(np.float32)


def num_frames(num_samples: int) -> int:
    """Frames ``log_mel`` returns for ``num_samples`` samples (centre padding, like librosa)."""
    return 1 + num_samples // HOP_LENGTH


def log_mel(wave: np.ndarray) -> np.ndarray:
    """16 kHz mono float waveform in [-1, 1] -> float32 log-mel, shape [T, 80], T = 1 + n // 160."""
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1:
        raise HBAFError(f"log_mel expects mono audio of shape [n], got {wave.shape}; down-mix with hbaf.audio.to_mono() first")
    wave = np.nan_to_num(wave, nan=0.0, posinf=1.0, neginf=-1.0)
    pad = N_FFT // 2
    padded = np.pad(wave, (pad, pad), mode="reflect" if wave.size > pad else "constant")
    n_frames = num_frames(wave.size)
    idx = np.arange(N_FFT)[None, :] + HOP_LENGTH * np.arange(n_frames)[:, None]
    frames = padded[idx]
    # Hann window of 400 samples centred inside the 512-point frame.
    win = np.zeros(N_FFT, dtype=np.float32)
    off = (N_FFT - WIN_LENGTH) // 2
    win[off : off + WIN_LENGTH] = _window()
    spec = np.abs(np.fft.rfft(frames * win, n=N_FFT, axis=1)) ** 2
    mel = spec.astype(np.float32) @ mel_filterbank().T
    logmel = np.log10(np.maximum(mel, LOG_FLOOR))
    return ((logmel + 4.0) / 4.0).astype(np.float32)


def utterance_features(wave: np.ndarray, kind: str = FEATURE_KIND) -> np.ndarray:
    """One utterance's model input of the format ``kind`` (a model's ``ModelSpec.feature_kind``):
    16 kHz mono waveform -> [T, F], cut to the format's 10 s. Training, calibration, the benchmark
    and the runtime all call this (the runtime takes the Whisper states from its recogniser's
    own encoder pass, which computes the same thing: hbaf.encoder).

    - ``log-mel``: ``log_mel``, [T, 80], T = 1 + samples // 160;
    - ``whisper-tiny.en``: ``hbaf.encoder.encoder_states``, [T, 384], T = ceil(samples / 320);
    - ``whisper-tiny.en:conv`` / ``:block1`` .. ``:block4``: an inner layer of the same encoder
      pass (our PyTorch encoder, ``hbaf.encoder.layer_states``), same T and width.
    """
    fmt = feature_format(kind)
    if fmt.kind == LOG_MEL:
        return log_mel(wave)[: fmt.max_frames]
    from hbaf.encoder import encoder_states

    return encoder_states(wave, fmt.kind)


@functools.lru_cache(maxsize=1024)
def _silence(kind: str, frames: int) -> np.ndarray:
    fmt = feature_format(kind)
    samples = max(0, frames - 1) * fmt.hop if fmt.kind == LOG_MEL else frames * fmt.hop
    out = utterance_features(np.zeros(samples, dtype=np.float32), kind)
    out.setflags(write=False)
    return out


def silence_features(kind: str, frames: int) -> np.ndarray:
    """The model input of ``frames`` frames of digital silence (what blank audio looks like to a
    model of format ``kind``); cached, read-only."""
    return _silence(kind, int(frames))
