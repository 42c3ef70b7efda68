"""MELD-TTS: a synthetic speech emotion corpus built offline from MELD's dialogues.

The real MELD dialogue texts, speakers and emotion labels (vendored in
``hbaf/data/meld_csv``, GPL-3.0) are rendered to speech by several synthesizer
families (espeak-ng, flite, festival; see hbaf.data.voices):

* one family per dialogue (seeded, so a family can be held out by its dialogues), and
  per speaker a voice of that family, distinct within the dialogue;
* emotion-dependent prosody applied after synthesis by one shared sox stage for every
  family: pitch shift, intonation contour depth (sox bend), tempo, gain, overdrive and
  treble (anger), low-pass (sadness), tremolo and F0 jitter (fear), a final rise
  (surprise), ...; espeak-ng also gets the pitch range through SSML;
* background noise (white / pink / brown, one colour per dialogue) mixed at a
  seeded signal-to-noise ratio measured against the active speech level.

How strongly prosody follows the label is set by ``strength`` in [0, 1]: each
emotional utterance draws an intensity ``i ~ U(0, 2 * strength)`` clipped to
[0, 1], and its prosody is ``neutral + i * (emotion - neutral)`` plus small
label-independent jitter, and each speaker's version of an emotion is scaled by a
seeded factor in SPEAKER_EMOTION_SCALE. At the default 0.5 many emotional utterances sound
almost neutral, so neither the audio nor the text alone solves the task.

Every random draw comes from a seed derived from (seed, split, dialogue,
utterance) (voices: from (seed, speaker)), so renders are reproducible and do
not depend on the order, the subset or the number of workers. The audio is
SYNTHETIC speech and must always be reported as such (see docs/CORPUS.md).

Per utterance the cost is one synthesizer call and one sox call (raw audio through
pipes) plus a little numpy; builds are resumable: complete WAVs are kept.

This module is longer than the others on purpose: everything that shapes a render (text
clean-up, voices, prosody, effects, noise, selection) sits under one ``GENERATOR_VERSION``,
so whoever changes one of them finds the others, and the version, in the same file.
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import functools
import io
import json
import logging
import math
import os
import random
import re
import shutil
import struct
import subprocess
import time
import wave
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence
from xml.sax.saxutils import escape as _xml_escape

import numpy as np

from hbaf.contract import SAMPLE_RATE
from hbaf.data.records import MELD_LABELS, SPLITS
from hbaf.errors import HBAFError
from hbaf.io import atomic_path, hbaf_home, write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)

GENERATOR = "hbaf.data.meld_tts"
GENERATOR_VERSION = "2.0"
MANIFEST_NAME = "manifest.jsonl"
CORPUS_CARD_NAME = "corpus.json"
RENDERS_NAME = "render_params.jsonl"
DEFAULT_STRENGTH = 0.5  # how strongly prosody follows the label (0..1)
DEFAULT_NOISE_SNR_DB = (15.0, 30.0)  # range of the background noise's signal-to-noise ratio

_CSV_DIR = Path(__file__).resolve().parent / "meld_csv"
_TOOL_HINT = "apt-get install espeak-ng sox"
_SUBPROCESS_TIMEOUT_S = 120

# Speech level before the per-speaker and per-emotion gains (dBFS, RMS of active frames).
_REFERENCE_LEVEL_DB = -24.0


# ----------------------------------------------------------------------------------------
# Paths
# ----------------------------------------------------------------------------------------


def default_corpus_dir(name: str = "meld-tts") -> Path:
    """Where corpora live by default: ``$HBAF_HOME/corpora/<name>`` (HBAF_HOME defaults to ~/.cache/hbaf)."""
    return hbaf_home() / "corpora" / name


def meld_csv_path(split: str) -> Path:
    """Path of the vendored MELD CSV of ``split`` ("train", "dev" or "test")."""
    if split not in SPLITS:
        raise HBAFError(f"unknown MELD split {split!r}; use one of {', '.join(SPLITS)}")
    return _CSV_DIR / f"{split}_sent_emo.csv"


# ----------------------------------------------------------------------------------------
# Text
# ----------------------------------------------------------------------------------------

_PUNCT_MAP = {
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "\u00b4": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
    "\u2013": "-", "\u2012": "-", "\u2010": "-", "\u2011": "-", "\u2212": "-",
    "\u2014": " - ", "\u2015": " - ",
    "\u2026": "...",
    "\u00a0": " ", "\u2009": " ", "\u200a": " ", "\u202f": " ",
    "\u200b": "", "\u200c": "", "\u200d": "", "\ufeff": "",
    # Windows-1252 bytes that ended up as C1 control characters.
    "\x91": "'", "\x92": "'", "\x93": '"', "\x94": '"', "\x85": "...", "\x96": "-", "\x97": " - ",
}
_PUNCT_TABLE = str.maketrans(_PUNCT_MAP)
# UTF-8 punctuation that was decoded as Windows-1252 ("â€™" and friends).
_MOJIBAKE = {
    "\u00e2\u20ac\u2122": "'", "\u00e2\u20ac\u02dc": "'", "\u00e2\u20ac\u0153": '"',
    "\u00e2\u20ac\u009d": '"', "\u00e2\u20ac\u201c": "-", "\u00e2\u20ac\u201d": " - ",
    "\u00e2\u20ac\u00a6": "...", "\u00c2\u00a0": " ",
}
_SPEAKABLE = re.compile(r"[^\W_]", re.UNICODE)


def normalize_text(text: str) -> str:
    """MELD utterance text -> plain text espeak-ng reads well.

    Curly quotes, dashes, ellipses, Windows-1252 leftovers ('\\x92', '\\x85', '\\x96', ...)
    and their UTF-8-read-as-cp1252 mojibake become ASCII; whitespace is collapsed.
    Accented letters are kept.
    """
    if "\u00e2\u20ac" in text or "\u00c3" in text:
        try:
            text = text.encode("cp1252").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            for bad, good in _MOJIBAKE.items():
                text = text.replace(bad, good)
    text = text.translate(_PUNCT_TABLE)
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    return " ".join(text.split())


def is_speakable(text: str) -> bool:
    """True when the text holds at least one letter or digit (espeak-ng has something to say)."""
    return bool(_SPEAKABLE.search(text))


def _decode_csv_bytes(raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


def read_meld_csv(split: str, path: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Read a MELD ``*_sent_emo.csv`` (the vendored copy of ``split`` unless ``path`` is given).

    Returns one dict per utterance, sorted by (dialogue_id, utterance_id), with keys
    split, dialogue_id (int), utterance_id (int), speaker, text (normalised), label
    (lower case, one of MELD_LABELS), sentiment, season, episode, start_time, end_time.
    """
    if split not in SPLITS:
        raise HBAFError(f"unknown MELD split {split!r}; use one of {', '.join(SPLITS)}")
    csv_path = Path(path) if path is not None else meld_csv_path(split)
    if not csv_path.is_file():
        raise HBAFError(f"MELD CSV not found: {csv_path}; reinstall hbaf-edge or pass the path of {split}_sent_emo.csv")
    reader = csv.DictReader(io.StringIO(_decode_csv_bytes(csv_path.read_bytes()), newline=""))
    fields = {name.strip(): name for name in (reader.fieldnames or [])}
    needed = ("Utterance", "Speaker", "Emotion", "Dialogue_ID", "Utterance_ID")
    missing = [c for c in needed if c not in fields]
    if missing:
        raise HBAFError(f"{csv_path} is not a MELD CSV (missing columns {', '.join(missing)}); use the official *_sent_emo.csv")

    def col(row: dict[str, str], name: str) -> str:
        key = fields.get(name)
        return (row.get(key) or "") if key is not None else ""

    out: list[dict[str, Any]] = []
    for line_no, row in enumerate(reader, start=2):
        label = col(row, "Emotion").strip().lower()
        if label not in MELD_LABELS:
            raise HBAFError(f"{csv_path} line {line_no}: unknown emotion {label!r}; expected one of {', '.join(MELD_LABELS)}")
        try:
            dia = int(col(row, "Dialogue_ID").strip())
            utt = int(col(row, "Utterance_ID").strip())
        except ValueError as err:
            raise HBAFError(f"{csv_path} line {line_no}: Dialogue_ID/Utterance_ID are not integers; fix or re-download the CSV") from err
        out.append(
            {
                "split": split,
                "dialogue_id": dia,
                "utterance_id": utt,
                "speaker": normalize_text(col(row, "Speaker")),
                "text": normalize_text(col(row, "Utterance")),
                "label": label,
                "sentiment": col(row, "Sentiment").strip().lower(),
                "season": col(row, "Season").strip(),
                "episode": col(row, "Episode").strip(),
                "start_time": col(row, "StartTime").strip(),
                "end_time": col(row, "EndTime").strip(),
            }
        )
    out.sort(key=lambda r: (r["dialogue_id"], r["utterance_id"]))
    return out


# ----------------------------------------------------------------------------------------
# Seeds, tools and voices (hbaf.data.voices)
# ----------------------------------------------------------------------------------------

from hbaf.data.voices import (  # noqa: E402  (re-exported: part of this module's API)
    ACCENTS, FAMILIES, FAMILY_PACKAGES, FEMALE_VARIANTS, MAIN_CAST, MALE_VARIANTS, Voice, _installed_voices,
    _require_tools, _rng, _seed_int, _tool_output, check_families, dialogue_family, dialogue_voices,
    family_voices, installed_families, speaker_voice,
)


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


# ----------------------------------------------------------------------------------------
# Emotion prosody
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prosody:
    """Full-intensity prosody of one emotion, as offsets from the speaker's neutral voice.

    All of it is applied after synthesis by sox, the same way for every family; espeak-ng
    additionally gets the pitch range through SSML.
    """

    pitch_cents: float = 0.0  # mean F0 shift
    range_mult: float = 1.0  # pitch range multiplier (contour depth)
    rate_mult: float = 1.0  # speaking rate multiplier (sox tempo)
    gain_db: float = 0.0  # level change
    treble_db: float = 0.0  # high shelf at 3 kHz (brightness)
    drive_db: float = 0.0  # sox overdrive gain (harshness)
    lowpass_oct: float = 0.0  # low-pass cutoff, octaves below 8 kHz (dullness)
    nasal_db: float = 0.0  # peaking EQ at 1.2 kHz
    tremolo_pct: float = 0.0  # amplitude tremolo depth (shaky voice)
    bend_cents: float = 0.0  # rising pitch over the end of the utterance
    jitter_cents: float = 0.0  # fast random F0 perturbation (trembling)


NEUTRAL = Prosody()
EMOTION_PROSODY: dict[str, Prosody] = {
    "neutral": NEUTRAL,
    "joy": Prosody(pitch_cents=250, range_mult=1.9, rate_mult=1.10, gain_db=3, treble_db=4),
    "surprise": Prosody(pitch_cents=300, range_mult=2.0, rate_mult=1.05, gain_db=3, treble_db=2, bend_cents=400),
    "anger": Prosody(pitch_cents=200, range_mult=1.8, rate_mult=1.15, gain_db=7, treble_db=6, drive_db=12),
    "sadness": Prosody(pitch_cents=-250, range_mult=0.35, rate_mult=0.78, gain_db=-6, lowpass_oct=1.6),
    "disgust": Prosody(pitch_cents=-180, range_mult=0.7, rate_mult=0.85, gain_db=1, nasal_db=7, lowpass_oct=0.4),
    "fear": Prosody(pitch_cents=280, range_mult=0.9, rate_mult=1.18, gain_db=-3, tremolo_pct=35, jitter_cents=35),
}
# Per speaker and emotion, the profile is scaled by a seeded factor in this range, so no
# fixed offset identifies a label.
SPEAKER_EMOTION_SCALE = (0.6, 1.4)
CONTOUR_CENTS = 100.0  # neutral intonation depth added by sox (scaled by range)

NOISE_COLOURS = ("white", "pink", "brown")


@dataclass(frozen=True)
class RenderParams:
    """Everything that decides one utterance's audio (a pure function of seed, ids, label, speaker, family)."""

    voice: str
    pitch: int  # espeak-ng -p
    rate: int  # espeak-ng -s
    range_pct: int  # espeak-ng SSML range
    intensity: float
    gain_db: float
    treble_db: float
    drive_db: float
    lowpass_hz: float  # 0 = none
    nasal_db: float
    tremolo_pct: float
    tremolo_hz: float
    bend_cents: float
    noise: str
    snr_db: float
    lead_s: float
    tail_s: float
    family: str = "espeak-ng"
    voice_label: str = ""
    pitch_cents: float = 0.0  # sox pitch shift (speaker timbre + emotion)
    tempo: float = 1.0  # sox tempo factor
    contour_cents: float = 0.0  # intonation depth added by sox bends
    jitter_cents: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def render_params(
    utt: dict[str, Any],
    *,
    seed: int = 0,
    strength: float = DEFAULT_STRENGTH,
    noise_snr_db: tuple[float, float] = DEFAULT_NOISE_SNR_DB,
    intensity: float | None = None,
    family: str = "espeak-ng",
    voice: Voice | None = None,
) -> RenderParams:
    """Draw the rendering parameters of one utterance (``utt`` as returned by read_meld_csv).

    ``intensity`` overrides the drawn emotion intensity (0 = neutral prosody, 1 = full profile).
    ``family`` picks the synthesizer; ``voice`` overrides the speaker's voice (build_corpus
    passes the dialogue-distinct voice).
    """
    split, dia, idx = utt["split"], int(utt["dialogue_id"]), int(utt["utterance_id"])
    label = utt["label"]
    if label not in EMOTION_PROSODY:
        raise HBAFError(f"unknown emotion {label!r} for {split} dia{dia}_utt{idx}; expected one of {', '.join(MELD_LABELS)}")
    if voice is None:
        voice = speaker_voice(utt["speaker"], seed, family)
    family = voice.family
    rng = _rng(seed, split, dia, idx)
    drawn = float(np.clip(rng.uniform(0.0, 2.0 * strength), 0.0, 1.0))
    jit_pitch = float(rng.normal(0.0, 2.0))
    jit_rate = float(np.exp(rng.normal(0.0, 0.04)))
    jit_range = float(np.exp(rng.normal(0.0, 0.08)))
    jit_gain = float(rng.normal(0.0, 1.0))
    tremolo_hz = float(rng.uniform(5.5, 8.0))
    lead_s = float(rng.uniform(0.05, 0.35))
    tail_s = float(rng.uniform(0.05, 0.25))
    snr_lo, snr_hi = noise_snr_db
    snr = float(rng.uniform(snr_lo, snr_hi))
    jit_cents = float(rng.normal(0.0, 25.0))
    noise = NOISE_COLOURS[int(_rng(seed, split, dia, "noise").integers(len(NOISE_COLOURS)))]

    prof = EMOTION_PROSODY[label]
    i = 0.0 if label == "neutral" else (drawn if intensity is None else float(np.clip(intensity, 0.0, 1.0)))
    lo, hi = SPEAKER_EMOTION_SCALE
    scale = float(_rng(seed, "emotion-scale", family, utt["speaker"], label).uniform(lo, hi))
    k = i * scale  # effective intensity of this speaker's version of the emotion

    def lin(name: str) -> float:
        return getattr(NEUTRAL, name) + k * (getattr(prof, name) - getattr(NEUTRAL, name))

    range_mult = prof.range_mult**k * jit_range
    pitch = int(np.clip(round(voice.pitch + jit_pitch), 0, 99))
    rate = int(np.clip(round(voice.rate * jit_rate), 80, 450))
    range_pct = int(np.clip(round(voice.range_pct * range_mult), 10, 400))
    tempo = prof.rate_mult**k * (1.0 if family == "espeak-ng" else voice.rate / 170.0 * jit_rate)
    lowpass_oct = lin("lowpass_oct")
    return RenderParams(
        voice=voice.name,
        pitch=pitch,
        rate=rate,
        range_pct=range_pct,
        intensity=round(i, 4),
        gain_db=round(voice.level_db + lin("gain_db") + jit_gain, 3),
        treble_db=round(lin("treble_db"), 3),
        drive_db=round(lin("drive_db"), 3),
        lowpass_hz=round(8000.0 / 2.0**lowpass_oct, 1) if lowpass_oct > 0.05 else 0.0,
        nasal_db=round(lin("nasal_db"), 3),
        tremolo_pct=round(lin("tremolo_pct"), 3),
        tremolo_hz=round(tremolo_hz, 3),
        bend_cents=round(lin("bend_cents"), 1),
        noise=noise,
        snr_db=round(snr, 3),
        lead_s=round(lead_s, 4),
        tail_s=round(tail_s, 4),
        family=family,
        voice_label=voice.label,
        pitch_cents=round(voice.shift_cents + lin("pitch_cents") + jit_cents, 1),
        tempo=round(float(np.clip(tempo, 0.5, 2.0)), 4),
        contour_cents=round(CONTOUR_CENTS * voice.range_pct / 100.0 * range_mult, 1),
        jitter_cents=round(lin("jitter_cents"), 1),
    )


# ----------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------


class _RenderFailure(Exception):
    pass


def _parse_wav(buf: bytes) -> tuple[int, np.ndarray]:
    """espeak-ng's streamed WAV (sizes may be placeholders) -> (rate, int16 samples)."""
    if len(buf) < 12 or buf[:4] != b"RIFF" or buf[8:12] != b"WAVE":
        raise _RenderFailure("espeak-ng did not write a WAV stream")
    pos, rate = 12, 0
    while pos + 8 <= len(buf):
        cid, size = buf[pos : pos + 4], struct.unpack("<I", buf[pos + 4 : pos + 8])[0]
        if cid == b"fmt ":
            _fmt, channels, rate = struct.unpack("<HHI", buf[pos + 8 : pos + 16])
            bits = struct.unpack("<H", buf[pos + 22 : pos + 24])[0]
            if channels != 1 or bits != 16:
                raise _RenderFailure(f"unexpected espeak-ng output format ({channels} ch, {bits} bit)")
        elif cid == b"data":
            data = buf[pos + 8 :]
            data = data[: len(data) // 2 * 2]
            return rate, np.frombuffer(data, dtype="<i2")
        pos += 8 + size + (size & 1)
    raise _RenderFailure("espeak-ng WAV stream has no data chunk")


def _ssml(text: str, params: RenderParams) -> str:
    return f'<speak><prosody range="{params.range_pct}%">{_xml_escape(text)}</prosody></speak>'


def _pitch_track(params: RenderParams, speech_end_s: float, seed: int) -> list[tuple[float, float]]:
    """Target F0 offsets (time s, cents) of the intonation contour, jitter and final rise."""
    if speech_end_s <= 0.3:
        return []
    rise = params.bend_cents > 10.0
    end = 0.55 * speech_end_s if rise else speech_end_s
    step = 0.12 if params.jitter_cents > 3.0 else 0.45
    n = max(2, int(end / step))
    rng = np.random.default_rng(seed)
    pts = []
    for j in range(1, n + 1):
        t = end * j / n
        hat = params.contour_cents * (int(t / 0.45) % 2 if step < 0.45 else j % 2)
        pts.append((t, hat + (float(rng.normal(0.0, params.jitter_cents)) if params.jitter_cents > 3.0 else 0.0)))
    if rise:
        pts.append((0.55 * speech_end_s + 0.4 * speech_end_s, pts[-1][1] + params.bend_cents))
    return pts


def _sox_effects(params: RenderParams, speech_end_s: float, seed: int = 0, in_rate: int = SAMPLE_RATE) -> list[str]:
    """The shared emotion stage: pitch, contour, tempo, level colour, ..., resampling to 16 kHz.
    ``in_rate``: the synthesizer's rate (an 8 kHz voice has nothing above 4 kHz to low-pass)."""
    fx: list[str] = []
    if abs(params.pitch_cents) >= 5.0:
        fx += ["pitch", "-q", f"{params.pitch_cents:.0f}"]
    pts = _pitch_track(params, speech_end_s, seed)
    if pts:
        segs, prev_t, prev_end, prev_c = [], 0.0, 0.0, 0.0
        for t, c in pts:
            start, dur = prev_t + 0.1 * (t - prev_t), 0.8 * (t - prev_t)
            if abs(c - prev_c) >= 1.0 and dur > 0.02:
                segs.append(f"{start - prev_end:.3f},{c - prev_c:.0f},{dur:.3f}")
                prev_end, prev_c = start + dur, c
            prev_t = t
        if segs:
            fx += ["bend", "-f", "50", "-o", "8", *segs]
    if abs(params.tempo - 1.0) > 0.01:
        fx += ["tempo", "-s", f"{params.tempo:.4f}"]
    if params.drive_db > 0.5:
        fx += ["overdrive", f"{params.drive_db:.2f}", "20"]
    if params.nasal_db > 0.3:
        fx += ["equalizer", "1200", "1.0q", f"{params.nasal_db:.2f}"]
    if params.treble_db > 0.3:
        fx += ["treble", f"{params.treble_db:.2f}", "3000", "0.5s"]
    # sox's pitch effect lowers the rate inside the chain when it shifts down: a low-pass above
    # that Nyquist frequency (an 8 kHz voice, or a deep shift) has nothing to cut and sox refuses it
    if 0 < params.lowpass_hz < 0.499 * in_rate * min(1.0, 2.0 ** (params.pitch_cents / 1200.0)):
        fx += ["lowpass", "-2", f"{params.lowpass_hz:.1f}"]
    if params.tremolo_pct > 2.0:
        fx += ["tremolo", f"{params.tremolo_hz:.3f}", f"{params.tremolo_pct:.2f}"]
    fx += ["rate", "-h", str(SAMPLE_RATE)]
    return fx


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


def _active_rms(x: np.ndarray, frame: int = 320) -> float:
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
        raise _RenderFailure(f"{cmd[0]} timed out on {what}") from err
    if proc.returncode != 0:
        msg = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise _RenderFailure(f"{cmd[0]} failed on {what}: {msg[-1] if msg else f'exit code {proc.returncode}'}")
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
        raise _RenderFailure(f"{params.family} produced no audio for {text[:40]!r}")
    loud = np.flatnonzero(np.abs(pcm) > 0.02 * np.abs(pcm).max())
    speech_end_s = (loud[-1] + 1) / rate if loud.size else pcm.size / rate
    sox = ["sox", "-V1", "-t", "raw", "-r", str(rate), "-e", "signed-integer", "-b", "16", "-c", "1", "-",
           "-t", "raw", "-e", "floating-point", "-b", "32", "-c", "1", "-r", str(SAMPLE_RATE), "-"]
    sox += _sox_effects(params, speech_end_s, seed=noise_seed, in_rate=rate)
    out = _run(sox, pcm.astype("<i2").tobytes(), repr(text[:40]))
    speech = np.frombuffer(out, dtype="<f4").astype(np.float64)
    if speech.size == 0:
        raise _RenderFailure(f"sox produced no audio for {text[:40]!r}")

    level = _active_rms(speech)
    if level <= 0.0:
        raise _RenderFailure(f"silent render for {text[:40]!r}")
    target = 10 ** ((_REFERENCE_LEVEL_DB + params.gain_db) / 20.0)
    speech *= target / level
    lead, tail = int(round(params.lead_s * SAMPLE_RATE)), int(round(params.tail_s * SAMPLE_RATE))
    speech = np.concatenate([np.zeros(lead), speech, np.zeros(tail)])
    rng = np.random.default_rng(noise_seed)
    noise = _noise(params.noise, speech.size, rng) * (target / 10 ** (params.snr_db / 20.0))
    return _soft_limit(speech + noise).astype(np.float32)


def _utt_name(utt: dict[str, Any]) -> str:
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


# ----------------------------------------------------------------------------------------
# Corpus
# ----------------------------------------------------------------------------------------


def select_dialogues(utts: Sequence[dict[str, Any]], limit: int | None, *, seed: int = 0, split: str = "") -> list[dict[str, Any]]:
    """Whole dialogues in a seeded order, adding each one that still fits, until ``limit`` utterances.

    Returns the chosen utterances in (dialogue_id, utterance_id) order. ``limit=None`` keeps all.
    """
    if limit is None:
        return sorted(utts, key=lambda u: (u["dialogue_id"], u["utterance_id"]))
    by_dia: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for u in utts:
        by_dia[int(u["dialogue_id"])].append(u)
    order = sorted(by_dia)
    random.Random(_seed_int(seed, split, "dialogue-order")).shuffle(order)
    chosen: list[int] = []
    total = 0
    for dia in order:
        n = len(by_dia[dia])
        if total + n <= limit:
            chosen.append(dia)
            total += n
            if total == limit:
                break
    out = [u for dia in sorted(chosen) for u in by_dia[dia]]
    return sorted(out, key=lambda u: (u["dialogue_id"], u["utterance_id"]))


def _render_key(strength: float, seed: int, noise_snr_db: tuple[float, float], families: Sequence[str]) -> dict[str, Any]:
    return {"generator_version": GENERATOR_VERSION, "strength": float(strength), "seed": int(seed),
            "noise_snr_db": [float(noise_snr_db[0]), float(noise_snr_db[1])], "families": list(families)}


def _check_args(limit: int | None, splits: Iterable[str], strength: float, workers: int | None,
                noise_snr_db: tuple[float, float]) -> tuple[list[str], int]:
    splits = list(splits)
    bad = [s for s in splits if s not in SPLITS]
    if bad or not splits:
        raise HBAFError(f"unknown split(s) {', '.join(bad) or '(none)'}; choose from {', '.join(SPLITS)}")
    if not (0.0 <= float(strength) <= 1.0) or math.isnan(float(strength)):
        raise HBAFError(f"strength must be in [0, 1], got {strength}; e.g. --strength {DEFAULT_STRENGTH}")
    if limit is not None and int(limit) < 1:
        raise HBAFError(f"limit must be a positive number of utterances per split, got {limit}; omit it for the full corpus")
    lo, hi = (float(v) for v in noise_snr_db)
    if not lo <= hi:
        raise HBAFError(f"noise_snr_db must be (low, high) with low <= high, got {noise_snr_db}")
    n_workers = int(workers) if workers is not None else (os.cpu_count() or 1)
    if n_workers < 1:
        raise HBAFError(f"workers must be >= 1, got {workers}")
    return splits, n_workers


def build_corpus(
    out_dir: str | os.PathLike,
    *,
    limit: int | None = None,
    splits: Sequence[str] = SPLITS,
    strength: float = DEFAULT_STRENGTH,
    seed: int = 0,
    workers: int | None = None,
    noise_snr_db: tuple[float, float] = DEFAULT_NOISE_SNR_DB,
    families: Sequence[str] | str | None = None,
) -> Path:
    """Build (or resume) the MELD-TTS corpus in ``out_dir``; returns the path of ``manifest.jsonl``.

    ``limit`` caps utterances per split (whole dialogues, seeded order). Existing complete
    WAVs are kept, so an interrupted build resumes and a rebuild renders nothing. A folder
    built with another seed/strength/noise range is refused (its WAVs would not match).
    Also writes ``corpus.json`` (parameters, counts, durations; "synthetic": true) and
    ``render_params.jsonl`` (each utterance's voice, intensity and effects).
    ``families`` (None: all installed) are the synthesizers; each dialogue gets one of them
    (seeded, roughly equal shares) and its speakers distinct voices of that family.
    """
    split_list, n_workers = _check_args(limit, splits, strength, workers, noise_snr_db)
    noise_snr_db = (float(noise_snr_db[0]), float(noise_snr_db[1]))
    _require_tools()
    fams = check_families(families)
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    card_path = out / CORPUS_CARD_NAME
    key = _render_key(strength, seed, noise_snr_db, fams)
    if card_path.exists():
        try:
            old = json.loads(card_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise HBAFError(f"{card_path} is unreadable; delete {out} or choose another output folder") from err
        old_key = old.get("render_key")
        if old_key != key:
            raise HBAFError(f"{out} holds a MELD-TTS corpus built with other parameters ({old_key}); "
                            f"rebuild with the same --seed/--strength/--families, delete the folder, or choose another --out")
    versions = tool_versions()
    parameters = {"limit": limit, "splits": split_list, "strength": float(strength), "seed": int(seed),
                  "noise_snr_db": list(noise_snr_db), "families": list(fams)}
    write_json_atomic(card_path, {"name": "MELD-TTS", "synthetic": True, "status": "building", "generator": GENERATOR,
                                  "generator_version": GENERATOR_VERSION, "render_key": key, "parameters": parameters,
                                  "tools": versions})

    # Selection.
    selected: list[dict[str, Any]] = []
    skipped_empty: dict[str, int] = {}
    for split in split_list:
        utts = read_meld_csv(split)
        speakable = [u for u in utts if is_speakable(u["text"])]
        skipped_empty[split] = len(utts) - len(speakable)
        selected.extend(select_dialogues(speakable, limit, seed=seed, split=split))

    jobs: list[tuple[dict[str, Any], RenderParams, str]] = []
    by_dia: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for u in selected:
        by_dia[(u["split"], int(u["dialogue_id"]))].append(u)
    voices: dict[tuple[str, int], dict[str, Voice]] = {
        k: dialogue_voices([u["speaker"] for u in us], seed, dialogue_family(seed, k[0], k[1], fams))
        for k, us in by_dia.items()}
    for u in selected:
        rel = f"wav/{u['split']}/{_utt_name(u)}.wav"
        v = voices[(u["split"], int(u["dialogue_id"]))][u["speaker"]]
        jobs.append((u, render_params(u, seed=seed, strength=strength, noise_snr_db=noise_snr_db, voice=v), rel))

    durations: dict[str, float] = {}
    todo: list[tuple[dict[str, Any], RenderParams, str]] = []
    for job in jobs:
        dur = wav_duration(out / job[2])
        if dur is None:
            todo.append(job)
        else:
            durations[job[2]] = dur
    reused = len(jobs) - len(todo)
    log.info("MELD-TTS: %d utterances selected, %d already rendered, %d to render with %d workers",
             len(jobs), reused, len(todo), n_workers)

    t0 = time.perf_counter()
    failures: list[str] = []
    if todo:
        from tqdm.auto import tqdm

        pool = cf.ThreadPoolExecutor(max_workers=n_workers)
        try:
            futs = {pool.submit(render_utterance, u, out / rel, p, seed=seed): rel for u, p, rel in todo}
            with tqdm(total=len(futs), desc="MELD-TTS", unit="utt", dynamic_ncols=True) as bar:
                for fut in cf.as_completed(futs):
                    rel = futs[fut]
                    try:
                        durations[rel] = fut.result()
                    except _RenderFailure as err:
                        failures.append(f"{rel}: {err}")
                        log.warning("render failed: %s: %s", rel, err)
                    bar.update(1)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
    elapsed = time.perf_counter() - t0
    rendered = len(todo) - len(failures)
    if failures:
        raise HBAFError(f"{len(failures)} of {len(todo)} utterances failed to render (first: {failures[0]}); "
                        f"rerun the same command to retry them (finished ones are kept)")

    # Manifest, per-utterance parameters, corpus card.
    manifest_lines, render_lines = [], []
    counts: dict[str, Counter] = {s: Counter() for s in split_list}
    dur_split: dict[str, float] = {s: 0.0 for s in split_list}
    dialogues: dict[str, set] = {s: set() for s in split_list}
    speakers: dict[str, set] = {s: set() for s in split_list}
    fam_counts: Counter = Counter()
    for u, p, rel in jobs:
        s = u["split"]
        rec = {"audio": rel, "text": u["text"], "label": u["label"], "speaker": u["speaker"],
               "dialogue": f"{s}-{u['dialogue_id']}", "index": int(u["utterance_id"]), "split": s,
               "family": p.family, "voice": p.voice_label}
        manifest_lines.append(json.dumps(rec, ensure_ascii=False))
        render_lines.append(json.dumps({"audio": rel, "duration_s": round(durations[rel], 4), **p.to_dict()}))
        counts[s][u["label"]] += 1
        dur_split[s] += durations[rel]
        dialogues[s].add(u["dialogue_id"])
        speakers[s].add(u["speaker"])
        fam_counts[p.family] += 1
    manifest = out / MANIFEST_NAME
    write_text_atomic(out / RENDERS_NAME, "\n".join(render_lines) + ("\n" if render_lines else ""))
    write_text_atomic(manifest, "\n".join(manifest_lines) + ("\n" if manifest_lines else ""))
    licence = _CSV_DIR / "LICENSE"
    if licence.is_file():
        with atomic_path(out / "LICENSE.meld-text") as tmp:
            shutil.copyfile(licence, tmp)

    total_dur = sum(dur_split.values())
    card = {
        "name": "MELD-TTS",
        "synthetic": True,
        "description": "Synthetic speech: MELD dialogue texts, speakers and emotion labels rendered with "
                       f"{', '.join(fams)} (one family per dialogue, one voice per speaker, label-dependent "
                       "prosody of seeded strength applied by sox, background noise).",
        "status": "complete",
        "generator": GENERATOR,
        "generator_version": GENERATOR_VERSION,
        "render_key": key,
        "parameters": parameters,
        "tools": versions,
        "sample_rate": SAMPLE_RATE,
        "labels": list(MELD_LABELS),
        "utterances": {s: sum(counts[s].values()) for s in split_list} | {"total": len(jobs)},
        "dialogues": {s: len(dialogues[s]) for s in split_list},
        "speakers": {s: len(speakers[s]) for s in split_list},
        "counts": {s: {lab: counts[s][lab] for lab in MELD_LABELS} for s in split_list},
        "duration_s": {s: round(dur_split[s], 2) for s in split_list} | {"total": round(total_dur, 2)},
        "duration_h": round(total_dur / 3600.0, 3),
        "skipped_empty": skipped_empty,
        "families": {f: fam_counts[f] for f in fams},
        "emotion_prosody": {lab: asdict(p) for lab, p in EMOTION_PROSODY.items()},
        "build": {"rendered": rendered, "reused": reused, "workers": n_workers, "render_s": round(elapsed, 2),
                  "utterances_per_s": round(rendered / elapsed, 2) if rendered and elapsed > 0 else None},
        "source": "MELD text annotations (Poria et al., ACL 2019), GPL-3.0; see LICENSE.meld-text",
        "licence": "GPL-3.0 (texts and labels from MELD; the rendered audio derives from them)",
    }
    write_json_atomic(card_path, card)
    log.info("MELD-TTS: wrote %s (%d utterances, %.1f min of synthetic speech; %d rendered in %.1f s)",
             manifest, len(jobs), total_dur / 60.0, rendered, elapsed)
    return manifest
