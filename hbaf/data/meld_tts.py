"""MELD-TTS: a synthetic speech emotion corpus built offline from MELD's dialogues.

The real MELD dialogue texts, speakers and emotion labels (vendored in
``hbaf/data/meld_csv``, GPL-3.0) are rendered to speech with espeak-ng:

* one voice per speaker (accent, voice variant, base pitch, rate, pitch range and
  level drawn from a seeded hash of the speaker name; the six main characters get
  distinct voices of their gender);
* emotion-dependent prosody: espeak-ng pitch, pitch range (SSML ``<prosody range>``)
  and rate, an output gain, and sox effects (overdrive and treble for anger,
  low-pass for sadness, tremolo for fear, a rising pitch bend for surprise, ...);
* background noise (white / pink / brown, one colour per dialogue) mixed at a
  seeded signal-to-noise ratio measured against the active speech level.

How strongly prosody follows the label is set by ``strength`` in [0, 1]: each
emotional utterance draws an intensity ``i ~ U(0, 2 * strength)`` clipped to
[0, 1], and its prosody is ``neutral + i * (emotion - neutral)`` plus small
label-independent jitter. At the default 0.5 many emotional utterances sound
almost neutral, so neither the audio nor the text alone solves the task.

Every random draw comes from a seed derived from (seed, split, dialogue,
utterance) (voices: from (seed, speaker)), so renders are reproducible and do
not depend on the order, the subset or the number of workers. The audio is
SYNTHETIC speech and must always be reported as such (see docs/CORPUS.md).

Per utterance the cost is one espeak-ng call and one sox call (raw audio through
pipes) plus a little numpy; builds are resumable: complete WAVs are kept.

This module is longer than the others on purpose: everything that shapes a render (text
clean-up, voices, prosody, effects, noise, selection) sits under one ``GENERATOR_VERSION``,
so whoever changes one of them finds the others, and the version, in the same file.
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import functools
import hashlib
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
GENERATOR_VERSION = "1.0"
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
# Seeds
# ----------------------------------------------------------------------------------------


def _seed_int(*parts: object) -> int:
    digest = hashlib.sha256("|".join(str(p) for p in ("meld-tts", *parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little")


def _rng(*parts: object) -> np.random.Generator:
    return np.random.default_rng(_seed_int(*parts))


# ----------------------------------------------------------------------------------------
# Tools
# ----------------------------------------------------------------------------------------


def _require_tools() -> None:
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise HBAFError(f"{tool} not found; {_TOOL_HINT}")


def _tool_output(cmd: Sequence[str]) -> str:
    try:
        proc = subprocess.run(list(cmd), capture_output=True, timeout=_SUBPROCESS_TIMEOUT_S, check=False)
    except FileNotFoundError as err:
        raise HBAFError(f"{cmd[0]} not found; {_TOOL_HINT}") from err
    return (proc.stdout or proc.stderr).decode("utf-8", "replace")


@functools.lru_cache(maxsize=None)
def tool_versions() -> dict[str, str]:
    """First version lines of espeak-ng and sox (recorded in corpus.json)."""
    _require_tools()
    esp = _tool_output(["espeak-ng", "--version"]).strip().splitlines()
    sox = _tool_output(["sox", "--version"]).strip().splitlines()
    esp_line = esp[0] if esp else "unknown"
    esp_line = esp_line.split("Data at:")[0].strip()
    return {"espeak-ng": esp_line, "sox": (sox[0].strip() if sox else "unknown")}


@functools.lru_cache(maxsize=None)
def _installed_voices() -> tuple[frozenset[str], frozenset[str]]:
    """(English language voices, variant file names) that this espeak-ng installation lists."""
    _require_tools()
    langs: set[str] = set()
    for line in _tool_output(["espeak-ng", "--voices=en"]).splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 5 and not cols[4].startswith("mb/"):
            langs.add(cols[1])
    variants: set[str] = set()
    for line in _tool_output(["espeak-ng", "--voices=variant"]).splitlines()[1:]:
        cols = line.split()
        for col in cols:
            if col.startswith("!v/"):
                variants.add(col[3:])
    return frozenset(langs), frozenset(variants)


# ----------------------------------------------------------------------------------------
# Voices
# ----------------------------------------------------------------------------------------

# espeak-ng English accents and their weights (Friends is American: US accents dominate).
ACCENTS: tuple[tuple[str, float], ...] = (
    ("en-us", 5.0),
    ("en-us-nyc", 2.0),
    ("en-gb", 1.0),
    ("en-gb-x-rp", 1.0),
    ("en-gb-scotland", 0.7),
    ("en-029", 0.7),
    ("en-gb-x-gbclan", 0.6),
    ("en-gb-x-gbcwmd", 0.6),
)
MALE_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7")
FEMALE_VARIANTS = ("f1", "f2", "f3", "f4", "f5")
MAIN_CAST = {"Chandler": "m", "Joey": "m", "Ross": "m", "Monica": "f", "Rachel": "f", "Phoebe": "f"}


@dataclass(frozen=True)
class Voice:
    """One speaker's voice: espeak-ng voice name and the speaker's base prosody."""

    name: str  # espeak-ng -v argument, e.g. "en-us+m3"
    gender: str  # "m" or "f"
    pitch: int  # espeak-ng -p (0-99) before emotion
    rate: int  # words per minute before emotion
    range_pct: float  # pitch range, % of the espeak-ng default
    level_db: float  # speaking level relative to the reference


def speaker_voice(speaker: str, seed: int = 0) -> Voice:
    """The voice of ``speaker`` (deterministic in (seed, speaker); main characters get distinct variants)."""
    langs, variants = _installed_voices()
    accents = [(a, w) for a, w in ACCENTS if a in langs] or [("en-us", 1.0)]
    male = [v for v in MALE_VARIANTS if v in variants] or list(MALE_VARIANTS[:1])
    female = [v for v in FEMALE_VARIANTS if v in variants] or list(FEMALE_VARIANTS[:1])
    rng = _rng(seed, "voice", speaker)
    gender = MAIN_CAST.get(speaker) or ("m" if rng.random() < 0.5 else "f")
    pool = male if gender == "m" else female
    if speaker in MAIN_CAST:
        # Main characters: a seeded permutation of the variants, so no two share one.
        order = list(pool)
        random.Random(_seed_int(seed, "cast", gender)).shuffle(order)
        cast = sorted(k for k, g in MAIN_CAST.items() if g == gender)
        variant = order[cast.index(speaker) % len(order)]
        accent_pool = [(a, w) for a, w in accents if a.startswith("en-us")] or accents
    else:
        variant = pool[int(rng.integers(len(pool)))]
        accent_pool = accents
    weights = np.array([w for _, w in accent_pool], dtype=np.float64)
    accent = accent_pool[int(rng.choice(len(accent_pool), p=weights / weights.sum()))][0]
    lo, hi = (35, 62) if gender == "m" else (42, 68)
    return Voice(
        name=f"{accent}+{variant}",
        gender=gender,
        pitch=int(rng.integers(lo, hi + 1)),
        rate=int(rng.integers(150, 191)),
        range_pct=float(np.round(rng.uniform(80.0, 125.0), 1)),
        level_db=float(np.round(rng.uniform(-2.0, 2.0), 2)),
    )


# ----------------------------------------------------------------------------------------
# Emotion prosody
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prosody:
    """Full-intensity prosody of one emotion, as offsets from the speaker's neutral voice."""

    pitch: float = 0.0  # espeak-ng -p units added to the speaker's pitch
    range_mult: float = 1.0  # pitch range multiplier
    rate_mult: float = 1.0  # speaking rate multiplier
    gain_db: float = 0.0  # level change
    treble_db: float = 0.0  # high shelf at 3 kHz (brightness)
    drive_db: float = 0.0  # sox overdrive gain (harshness)
    lowpass_oct: float = 0.0  # low-pass cutoff, octaves below 8 kHz (dullness)
    nasal_db: float = 0.0  # peaking EQ at 1.2 kHz
    tremolo_pct: float = 0.0  # amplitude tremolo depth (shaky voice)
    bend_cents: float = 0.0  # pitch bend over the end of the utterance (rising question)


NEUTRAL = Prosody()
EMOTION_PROSODY: dict[str, Prosody] = {
    "neutral": NEUTRAL,
    "joy": Prosody(pitch=10, range_mult=1.6, rate_mult=1.10, gain_db=3, treble_db=5),
    "surprise": Prosody(pitch=14, range_mult=1.8, rate_mult=1.05, gain_db=3, treble_db=2, bend_cents=450),
    "anger": Prosody(pitch=5, range_mult=1.4, rate_mult=1.15, gain_db=7, treble_db=6, drive_db=14),
    "sadness": Prosody(pitch=-12, range_mult=0.45, rate_mult=0.75, gain_db=-6, lowpass_oct=1.6),
    "disgust": Prosody(pitch=-8, range_mult=0.7, rate_mult=0.85, gain_db=1, nasal_db=7, lowpass_oct=0.4),
    "fear": Prosody(pitch=10, range_mult=0.8, rate_mult=1.20, gain_db=-3, tremolo_pct=55),
}

NOISE_COLOURS = ("white", "pink", "brown")


@dataclass(frozen=True)
class RenderParams:
    """Everything that decides one utterance's audio (a pure function of seed, ids, label, speaker)."""

    voice: str
    pitch: int
    rate: int
    range_pct: int
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def render_params(
    utt: dict[str, Any],
    *,
    seed: int = 0,
    strength: float = DEFAULT_STRENGTH,
    noise_snr_db: tuple[float, float] = DEFAULT_NOISE_SNR_DB,
    intensity: float | None = None,
) -> RenderParams:
    """Draw the rendering parameters of one utterance (``utt`` as returned by read_meld_csv).

    ``intensity`` overrides the drawn emotion intensity (0 = neutral prosody, 1 = full profile).
    """
    split, dia, idx = utt["split"], int(utt["dialogue_id"]), int(utt["utterance_id"])
    label = utt["label"]
    if label not in EMOTION_PROSODY:
        raise HBAFError(f"unknown emotion {label!r} for {split} dia{dia}_utt{idx}; expected one of {', '.join(MELD_LABELS)}")
    voice = speaker_voice(utt["speaker"], seed)
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
    noise = NOISE_COLOURS[int(_rng(seed, split, dia, "noise").integers(len(NOISE_COLOURS)))]

    prof = EMOTION_PROSODY[label]
    i = 0.0 if label == "neutral" else (drawn if intensity is None else float(np.clip(intensity, 0.0, 1.0)))

    def lin(name: str) -> float:
        return getattr(NEUTRAL, name) + i * (getattr(prof, name) - getattr(NEUTRAL, name))

    pitch = int(np.clip(round(voice.pitch + lin("pitch") + jit_pitch), 0, 99))
    rate = int(np.clip(round(voice.rate * prof.rate_mult**i * jit_rate), 80, 450))
    range_pct = int(np.clip(round(voice.range_pct * prof.range_mult**i * jit_range), 10, 400))
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


def _sox_effects(params: RenderParams, speech_end_s: float) -> list[str]:
    fx: list[str] = []
    if params.drive_db > 0.5:
        fx += ["overdrive", f"{params.drive_db:.2f}", "20"]
    if params.nasal_db > 0.3:
        fx += ["equalizer", "1200", "1.0q", f"{params.nasal_db:.2f}"]
    if params.treble_db > 0.3:
        fx += ["treble", f"{params.treble_db:.2f}", "3000", "0.5s"]
    if params.lowpass_hz > 0:
        fx += ["lowpass", "-2", f"{params.lowpass_hz:.1f}"]
    if params.tremolo_pct > 2.0:
        fx += ["tremolo", f"{params.tremolo_hz:.3f}", f"{params.tremolo_pct:.2f}"]
    if params.bend_cents > 10.0 and speech_end_s > 0.3:
        start, length = 0.55 * speech_end_s, 0.4 * speech_end_s
        fx += ["bend", "-o", "8", f"{start:.3f},{params.bend_cents:.0f},{length:.3f}"]
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


def synthesize(text: str, params: RenderParams, noise_seed: int = 0) -> np.ndarray:
    """Render ``text`` with ``params`` -> float32 waveform, 16 kHz mono, in [-1, 1]."""
    ssml = _ssml(text, params).encode("utf-8")
    esp = ["espeak-ng", "-m", "-v", params.voice, "-p", str(params.pitch), "-s", str(params.rate), "--stdin", "--stdout"]
    rate, pcm = _parse_wav(_run(esp, ssml, repr(text[:40])))
    if pcm.size == 0 or not np.any(pcm):
        raise _RenderFailure(f"espeak-ng produced no audio for {text[:40]!r}")
    loud = np.flatnonzero(np.abs(pcm) > 0.02 * np.abs(pcm).max())
    speech_end_s = (loud[-1] + 1) / rate if loud.size else pcm.size / rate
    sox = ["sox", "-V1", "-t", "raw", "-r", str(rate), "-e", "signed-integer", "-b", "16", "-c", "1", "-",
           "-t", "raw", "-e", "floating-point", "-b", "32", "-c", "1", "-r", str(SAMPLE_RATE), "-"]
    sox += _sox_effects(params, speech_end_s)
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


def _render_key(strength: float, seed: int, noise_snr_db: tuple[float, float]) -> dict[str, Any]:
    return {"generator_version": GENERATOR_VERSION, "strength": float(strength), "seed": int(seed),
            "noise_snr_db": [float(noise_snr_db[0]), float(noise_snr_db[1])]}


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
) -> Path:
    """Build (or resume) the MELD-TTS corpus in ``out_dir``; returns the path of ``manifest.jsonl``.

    ``limit`` caps utterances per split (whole dialogues, seeded order). Existing complete
    WAVs are kept, so an interrupted build resumes and a rebuild renders nothing. A folder
    built with another seed/strength/noise range is refused (its WAVs would not match).
    Also writes ``corpus.json`` (parameters, counts, durations; "synthetic": true) and
    ``render_params.jsonl`` (each utterance's voice, intensity and effects).
    """
    split_list, n_workers = _check_args(limit, splits, strength, workers, noise_snr_db)
    noise_snr_db = (float(noise_snr_db[0]), float(noise_snr_db[1]))
    _require_tools()
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    card_path = out / CORPUS_CARD_NAME
    key = _render_key(strength, seed, noise_snr_db)
    if card_path.exists():
        try:
            old = json.loads(card_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise HBAFError(f"{card_path} is unreadable; delete {out} or choose another output folder") from err
        old_key = old.get("render_key")
        if old_key != key:
            raise HBAFError(f"{out} holds a MELD-TTS corpus built with other parameters ({old_key}); "
                            f"rebuild with the same --seed/--strength, delete the folder, or choose another --out")
    versions = tool_versions()
    parameters = {"limit": limit, "splits": split_list, "strength": float(strength), "seed": int(seed),
                  "noise_snr_db": list(noise_snr_db)}
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
    for u in selected:
        rel = f"wav/{u['split']}/{_utt_name(u)}.wav"
        jobs.append((u, render_params(u, seed=seed, strength=strength, noise_snr_db=noise_snr_db), rel))

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
    for u, p, rel in jobs:
        s = u["split"]
        rec = {"audio": rel, "text": u["text"], "label": u["label"], "speaker": u["speaker"],
               "dialogue": f"{s}-{u['dialogue_id']}", "index": int(u["utterance_id"]), "split": s}
        manifest_lines.append(json.dumps(rec, ensure_ascii=False))
        render_lines.append(json.dumps({"audio": rel, "duration_s": round(durations[rel], 4), **p.to_dict()}))
        counts[s][u["label"]] += 1
        dur_split[s] += durations[rel]
        dialogues[s].add(u["dialogue_id"])
        speakers[s].add(u["speaker"])
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
        "description": "Synthetic speech: MELD dialogue texts, speakers and emotion labels rendered with espeak-ng "
                       "(one voice per speaker, label-dependent prosody of seeded strength, background noise).",
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
