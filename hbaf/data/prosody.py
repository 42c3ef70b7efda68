"""Emotion prosody of MELD-TTS: what each label does to a voice, and the sox stage that does it.

Every family's raw synthesis goes through one shared sox stage (``sox_effects``): pitch shift,
intonation contour depth (sox bend), tempo, gain, overdrive and treble (anger), low-pass
(sadness), tremolo and F0 jitter (fear), a final rise (surprise), ...; espeak-ng also gets the
pitch range through SSML (``RenderParams.range_pct``).

How strongly prosody follows the label is set by ``strength`` in [0, 1]: each emotional
utterance draws an intensity ``i ~ U(0, 2 * strength)`` clipped to [0, 1], and its prosody is
``neutral + i * (emotion - neutral)`` plus small label-independent jitter; each speaker's version
of an emotion is scaled by a seeded factor in SPEAKER_EMOTION_SCALE. At the default 0.5 many
emotional utterances sound almost neutral, so neither the audio nor the text alone solves the task.

``render_params`` draws all of one utterance's parameters from seeds derived from (seed, split,
dialogue, utterance), so renders are reproducible whatever the order, subset or worker count.
A change here changes the corpus: raise ``hbaf.data.meld_tts.GENERATOR_VERSION`` with it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from hbaf.contract import SAMPLE_RATE
from hbaf.data.records import MELD_LABELS
from hbaf.data.voices import Voice, _rng, speaker_voice
from hbaf.errors import HBAFError

DEFAULT_STRENGTH = 0.5  # how strongly prosody follows the label (0..1)
DEFAULT_NOISE_SNR_DB = (15.0, 30.0)  # range of the background noise's signal-to-noise ratio


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


def pitch_track(params: RenderParams, speech_end_s: float, seed: int) -> list[tuple[float, float]]:
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


def sox_effects(params: RenderParams, speech_end_s: float, seed: int = 0, in_rate: int = SAMPLE_RATE) -> list[str]:
    """The shared emotion stage: pitch, contour, tempo, level colour, ..., resampling to 16 kHz.
    ``in_rate``: the synthesizer's rate (an 8 kHz voice has nothing above 4 kHz to low-pass)."""
    fx: list[str] = []
    if abs(params.pitch_cents) >= 5.0:
        fx += ["pitch", "-q", f"{params.pitch_cents:.0f}"]
    pts = pitch_track(params, speech_end_s, seed)
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
