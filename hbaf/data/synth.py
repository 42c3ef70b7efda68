"""Synthesis of one MELD-TTS utterance: the family's synthesizer, the emotion stage, level and noise.

Per utterance: one synthesizer call (espeak-ng, flite or festival; hbaf.data.voices) and one sox
call (hbaf.data.prosody.sox_effects), raw audio through pipes, then a little numpy: the speech is
brought to its level (measured on active frames), padded with a short lead and tail, and mixed
with background noise (white / pink / brown) at a seeded signal-to-noise ratio measured against
the active speech level. The audio is SYNTHETIC speech and must always be reported as such.
A change here changes the corpus: raise ``hbaf.data.meld_tts.GENERATOR_VERSION`` with it.
"""

from __future__ import annotations

import functools
import os
import shutil
import struct
import subprocess
import wave
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape as _xml_escape

import numpy as np

from hbaf.contract import SAMPLE_RATE
from hbaf.data.prosody import RenderParams, sox_effects
from hbaf.data.voices import _TOOL_HINT, FAMILIES, _require_tools, _seed_int, _tool_output
from hbaf.errors import HBAFError
from hbaf.io import atomic_path

_SUBPROCESS_TIMEOUT_S = 120

# Speech level before the per-speaker and per-emotion gains (dBFS, RMS of active frames).
_REFERENCE_LEVEL_DB = -24.0


@functools.lru_cache(maxsize=None)
def tool_versions() -> dict[str, str]:
    """First version lines of espeak-ng, sox and the other installed synthesizers (recorded in corpus.json)."""
    _require_tools()
    esp = _tool_output(["espeak-ng", "--version"]).strip().splitlines()
    sox = _tool_output(["sox", "--version"]).strip().splitlines()
    esp_line = esp[0] if esp else "unknown"
    esp_line = esp_line.split("Data at:")[0].strip()
    out = {"espeak-ng": esp_line, "sox": (sox[0].strip() if sox else "unknown")}
    if shutil.which("flite"):
        lines = [x for x in _tool_output(["flite", "--version"]).splitlines() if "flite" in x.lower()]
        out["flite"] = lines[0].strip() if lines else "unknown"
    if shutil.which("festival"):
        lines = _tool_output(["festival", "--version"]).strip().splitlines()
        out["festival"] = lines[0].strip() if lines else "unknown"
    return out


class RenderFailure(Exception):
    """One utterance could not be rendered (the build reports it and keeps the others)."""


def _parse_wav(buf: bytes) -> tuple[int, np.ndarray]:
    """espeak-ng's streamed WAV (sizes may be placeholders) -> (rate, int16 samples)."""
    if len(buf) < 12 or buf[:4] != b"RIFF" or buf[8:12] != b"WAVE":
        raise RenderFailure("espeak-ng did not write a WAV stream")
    pos, rate = 12, 0
    while pos + 8 <= len(buf):
        cid, size = buf[pos : pos + 4], struct.unpack("<I", buf[pos + 4 : pos + 8])[0]
        if cid == b"fmt ":
            _fmt, channels, rate = struct.unpack("<HHI", buf[pos + 8 : pos + 16])
            bits = struct.unpack("<H", buf[pos + 22 : pos + 24])[0]
            if channels != 1 or bits != 16:
                raise RenderFailure(f"unexpected espeak-ng output format ({channels} ch, {bits} bit)")
        elif cid == b"data":
            data = buf[pos + 8 :]
            data = data[: len(data) // 2 * 2]
            return rate, np.frombuffer(data, dtype="<i2")
        pos += 8 + size + (size & 1)
    raise RenderFailure("espeak-ng WAV stream has no data chunk")


def _ssml(text: str, params: RenderParams) -> str:
    return f'<speak><prosody range="{params.range_pct}%">{_xml_escape(text)}</prosody></speak>'


def _noise(colour: str, n: int, rng: np.random.Generator) -> np.ndarray:
    white = rng.standard_normal(n)
    if colour == "white" or n < 4:
        out = white
    else:
        alpha = 1.0 if colour == "pink" else 2.0
        spec = np.fft.rfft(white)
        freqs = np.fft.rfftfreq(n, d=1.0 / SAMPLE_RATE)
        freqs[0] = freqs[1]
        spec *= np.maximum(freqs, 20.0) ** (-alpha / 2.0)
        out = np.fft.irfft(spec, n=n)
    rms = float(np.sqrt(np.mean(out**2))) or 1.0
    return out / rms


def active_rms(x: np.ndarray, frame: int = 320) -> float:
    """RMS over frames within 35 dB of the loudest frame (speech level, pauses excluded)."""
    n = x.size // frame
    if n == 0:
        return float(np.sqrt(np.mean(x**2))) if x.size else 0.0
    power = (x[: n * frame].astype(np.float64).reshape(n, frame) ** 2).mean(axis=1)
    active = power[power >= power.max() * 10 ** (-35 / 10)]
    return float(np.sqrt(active.mean())) if active.size else 0.0


def _soft_limit(y: np.ndarray, knee: float = 0.5) -> np.ndarray:
    mag = np.abs(y)
    over = mag > knee
    if np.any(over):
        y = y.copy()
        y[over] = np.sign(y[over]) * (knee + (1.0 - knee) * np.tanh((mag[over] - knee) / (1.0 - knee)))
    return y


def _run(cmd: list[str], data: bytes, what: str) -> bytes:
    try:
        proc = subprocess.run(cmd, input=data, capture_output=True, timeout=_SUBPROCESS_TIMEOUT_S, check=False)
    except FileNotFoundError as err:
        raise HBAFError(f"{cmd[0]} not found; {_TOOL_HINT}") from err
    except subprocess.TimeoutExpired as err:
        raise RenderFailure(f"{cmd[0]} timed out on {what}") from err
    if proc.returncode != 0:
        msg = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise RenderFailure(f"{cmd[0]} failed on {what}: {msg[-1] if msg else f'exit code {proc.returncode}'}")
    return proc.stdout


def _synth_raw(text: str, params: RenderParams) -> tuple[int, np.ndarray]:
    """Run the family's synthesizer -> (rate, int16 samples), before any effect."""
    what = repr(text[:40])
    if params.family == "espeak-ng":
        esp = ["espeak-ng", "-m", "-v", params.voice, "-p", str(params.pitch), "-s", str(params.rate), "--stdin", "--stdout"]
        return _parse_wav(_run(esp, _ssml(text, params).encode("utf-8"), what))
    if params.family == "flite":
        return _parse_wav(_run(["flite", "-voice", params.voice, "-t", text, "-o", "/dev/stdout"], b"", what))
    if params.family == "festival":
        cmd = ["text2wave", "-eval", f"(voice_{params.voice})", "-o", "-"]
        return _parse_wav(_run(cmd, (text + "\n").encode("utf-8"), what))
    raise HBAFError(f"unknown synthesizer family {params.family!r}; choose from {', '.join(FAMILIES)}")


def synthesize(text: str, params: RenderParams, noise_seed: int = 0) -> np.ndarray:
    """Render ``text`` with ``params`` -> float32 waveform, 16 kHz mono, in [-1, 1]."""
    rate, pcm = _synth_raw(text, params)
    if pcm.size == 0 or not np.any(pcm):
        raise RenderFailure(f"{params.family} produced no audio for {text[:40]!r}")
    loud = np.flatnonzero(np.abs(pcm) > 0.02 * np.abs(pcm).max())
    speech_end_s = (loud[-1] + 1) / rate if loud.size else pcm.size / rate
    sox = ["sox", "-V1", "-t", "raw", "-r", str(rate), "-e", "signed-integer", "-b", "16", "-c", "1", "-",
           "-t", "raw", "-e", "floating-point", "-b", "32", "-c", "1", "-r", str(SAMPLE_RATE), "-"]
    sox += sox_effects(params, speech_end_s, seed=noise_seed, in_rate=rate)
    out = _run(sox, pcm.astype("<i2").tobytes(), repr(text[:40]))
    speech = np.frombuffer(out, dtype="<f4").astype(np.float64)
    if speech.size == 0:
        raise RenderFailure(f"sox produced no audio for {text[:40]!r}")

    level = active_rms(speech)
    if level <= 0.0:
        raise RenderFailure(f"silent render for {text[:40]!r}")
    target = 10 ** ((_REFERENCE_LEVEL_DB + params.gain_db) / 20.0)
    speech *= target / level
    lead, tail = int(round(params.lead_s * SAMPLE_RATE)), int(round(params.tail_s * SAMPLE_RATE))
    speech = np.concatenate([np.zeros(lead), speech, np.zeros(tail)])
    rng = np.random.default_rng(noise_seed)
    noise = _noise(params.noise, speech.size, rng) * (target / 10 ** (params.snr_db / 20.0))
    return _soft_limit(speech + noise).astype(np.float32)


def utterance_name(utt: dict[str, Any]) -> str:
    return f"dia{int(utt['dialogue_id'])}_utt{int(utt['utterance_id'])}"


def render_utterance(utt: dict[str, Any], out_path: str | os.PathLike, params: RenderParams, *, seed: int = 0) -> float:
    """Render one utterance to a 16 kHz mono 16-bit WAV (written atomically); returns its duration in seconds."""
    wave_f = synthesize(utt["text"], params, noise_seed=_seed_int(seed, utt["split"], utt["dialogue_id"], utt["utterance_id"], "noise"))
    pcm = np.clip(np.round(wave_f.astype(np.float64) * 32767.0), -32768, 32767).astype("<i2")
    with atomic_path(out_path) as tmp:
        with wave.open(str(tmp), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(SAMPLE_RATE)
            w.writeframes(pcm.tobytes())
    return pcm.size / SAMPLE_RATE


def wav_duration(path: str | os.PathLike) -> float | None:
    """Duration of a complete 16 kHz mono 16-bit WAV, or None when missing/truncated/not that format."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with wave.open(str(path), "rb") as w:
            ok = w.getnchannels() == 1 and w.getsampwidth() == 2 and w.getframerate() == SAMPLE_RATE
            frames = w.getnframes()
    except (OSError, EOFError, wave.Error, struct.error):
        return None
    if not ok or frames <= 0 or size < 44 + 2 * frames:
        return None
    return frames / SAMPLE_RATE
