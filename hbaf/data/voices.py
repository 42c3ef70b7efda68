"""Synthesizer families and speaker voices of MELD-TTS (espeak-ng, flite, festival).

A *family* is one speech synthesizer. MELD-TTS assigns a family per dialogue (so a family
can be held out by dropping its dialogues) and a voice per speaker within that family.
flite and festival ship only a few English voices, so a voice there is a base voice plus
a speaker-specific pitch shift (applied by sox), which makes speakers of one dialogue
distinct. Part of the renderer: changes here change renders (see GENERATOR_VERSION in
hbaf.data.meld_tts).
"""

from __future__ import annotations

import functools
import hashlib
import random
import shutil
import subprocess
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from hbaf.errors import HBAFError

_TOOL_HINT = "apt-get install espeak-ng sox"
_SUBPROCESS_TIMEOUT_S = 120

FAMILIES = ("espeak-ng", "flite", "festival")
# Binary checked for each family, and the apt packages that provide it.
FAMILY_BINARY = {"espeak-ng": "espeak-ng", "flite": "flite", "festival": "text2wave"}
FAMILY_PACKAGES = {
    "espeak-ng": "espeak-ng",
    "flite": "flite",
    "festival": "festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts",
}
# (voice, gender): flite built-in voices and festival's English voices.
FLITE_VOICES = (("kal16", "m"), ("awb", "m"), ("rms", "m"), ("kal", "m"), ("slt", "f"))
FESTIVAL_VOICES = (("kal_diphone", "m"), ("ked_diphone", "m"), ("cmu_us_slt_arctic_hts", "f"))
_FESTIVAL_DIRS = ("/usr/share/festival/voices", "/usr/lib/festival/voices")


# ----------------------------------------------------------------------------------------
# Seeds and tools
# ----------------------------------------------------------------------------------------


def _seed_int(*parts: object) -> int:
    digest = hashlib.sha256("|".join(str(p) for p in ("meld-tts", *parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little")


def _rng(*parts: object) -> np.random.Generator:
    return np.random.default_rng(_seed_int(*parts))


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
        for col in line.split():
            if col.startswith("!v/"):
                variants.add(col[3:])
    return frozenset(langs), frozenset(variants)


@functools.lru_cache(maxsize=None)
def family_voices(family: str) -> tuple[tuple[str, str], ...]:
    """The installed (voice, gender) pairs of a flite/festival family (empty when not installed)."""
    if family == "flite":
        if shutil.which("flite") is None:
            return ()
        listed = set(_tool_output(["flite", "-lv"]).replace("Voices available:", "").split())
        return tuple(v for v in FLITE_VOICES if v[0] in listed)
    if family == "festival":
        if shutil.which("text2wave") is None:
            return ()
        import glob

        have = {p.rstrip("/").split("/")[-1] for d in _FESTIVAL_DIRS for p in glob.glob(f"{d}/*/*/")}
        return tuple(v for v in FESTIVAL_VOICES if v[0] in have)
    raise HBAFError(f"unknown synthesizer family {family!r}; choose from {', '.join(FAMILIES)}")


def family_installed(family: str) -> bool:
    if family not in FAMILIES:
        return False
    if family == "espeak-ng":
        return shutil.which("espeak-ng") is not None
    return bool(family_voices(family))


def installed_families() -> tuple[str, ...]:
    """The families whose synthesizer and English voices are installed, in FAMILIES order."""
    return tuple(f for f in FAMILIES if family_installed(f))


def check_families(families: Iterable[str] | str | None) -> tuple[str, ...]:
    """Validate a family selection (None: all installed); one-line HBAFError naming the apt package."""
    if families is None:
        got = installed_families()
        if not got:
            raise HBAFError(f"no speech synthesizer found; {_TOOL_HINT}")
        return got
    if isinstance(families, str):
        families = [f for f in families.split(",") if f.strip()]
    out: list[str] = []
    for f in (x.strip() for x in families):
        if f not in FAMILIES:
            raise HBAFError(f"unknown synthesizer family {f!r}; choose from {', '.join(FAMILIES)}")
        if not family_installed(f):
            raise HBAFError(f"synthesizer family {f!r} is not installed; apt-get install {FAMILY_PACKAGES[f]}")
        if f not in out:
            out.append(f)
    if not out:
        raise HBAFError(f"no synthesizer family given; choose from {', '.join(FAMILIES)}")
    return tuple(sorted(out, key=FAMILIES.index))


def dialogue_family(seed: int, split: str, dialogue_id: int, families: Sequence[str]) -> str:
    """The family of one dialogue: highest seeded score among ``families`` (rendezvous hashing).

    Shares are roughly equal, and a dialogue keeps its family when other families are removed
    from the selection, so holding a family out only drops that family's dialogues.
    """
    if not families:
        raise HBAFError("no synthesizer family to choose from")
    return max(families, key=lambda f: _seed_int(seed, "family", split, int(dialogue_id), f))


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
# Speaker timbre shifts (cents, applied by sox) of flite/festival voices, by gender of
# speaker vs base voice; a female speaker on a male base voice is shifted up, and so on.
_SHIFTS = {("m", "m"): (-200, 150), ("f", "f"): (-150, 250), ("f", "m"): (450, 750), ("m", "f"): (-750, -500)}


@dataclass(frozen=True)
class Voice:
    """One speaker's voice: synthesizer voice name and the speaker's base prosody."""

    name: str  # espeak-ng -v argument ("en-us+m3"), flite -voice or festival voice name
    gender: str  # "m" or "f"
    pitch: int  # espeak-ng -p (0-99) before emotion (other families: unused)
    rate: int  # words per minute before emotion (other families: sox tempo rate / 170)
    range_pct: float  # pitch range, % of the default
    level_db: float  # speaking level relative to the reference
    family: str = "espeak-ng"
    shift_cents: int = 0  # speaker timbre shift applied by sox (flite/festival)

    @property
    def label(self) -> str:
        """Name of the voice in manifests: base voice plus espeak-ng pitch or sox shift."""
        if self.family == "espeak-ng":
            return f"{self.name}:p{self.pitch}"
        return f"{self.name}{self.shift_cents:+d}c"


def _espeak_voice(speaker: str, seed: int, attempt: int) -> Voice:
    langs, variants = _installed_voices()
    accents = [(a, w) for a, w in ACCENTS if a in langs] or [("en-us", 1.0)]
    male = [v for v in MALE_VARIANTS if v in variants] or list(MALE_VARIANTS[:1])
    female = [v for v in FEMALE_VARIANTS if v in variants] or list(FEMALE_VARIANTS[:1])
    rng = _rng(seed, "voice", speaker) if attempt == 0 else _rng(seed, "voice", speaker, attempt)
    gender = MAIN_CAST.get(speaker) or ("m" if _rng(seed, "voice", speaker).random() < 0.5 else "f")
    if attempt:
        rng.random()
    pool = male if gender == "m" else female
    if speaker in MAIN_CAST and attempt == 0:
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


def _family_voice(speaker: str, seed: int, family: str, attempt: int) -> Voice:
    voices = family_voices(family)
    if not voices:
        raise HBAFError(f"synthesizer family {family!r} is not installed; apt-get install {FAMILY_PACKAGES[family]}")
    rng = _rng(seed, family, "voice", speaker, attempt)
    gender = MAIN_CAST.get(speaker) or ("m" if _rng(seed, "voice", speaker).random() < 0.5 else "f")
    same = [v for v, g in voices if g == gender]
    # Mostly a base voice of the speaker's gender; sometimes (or when none) the other one, shifted.
    if same and (rng.random() < 0.75 or len(same) == len(voices)):
        base, base_g = same[int(rng.integers(len(same)))], gender
    else:
        other = [(v, g) for v, g in voices if g != gender] or list(voices)
        base, base_g = other[int(rng.integers(len(other)))]
    lo, hi = _SHIFTS[(gender, base_g)]
    shift = int(round(rng.uniform(lo, hi) / 50.0) * 50)
    return Voice(
        name=base,
        gender=gender,
        pitch=50,
        rate=int(rng.integers(150, 191)),
        range_pct=float(np.round(rng.uniform(80.0, 125.0), 1)),
        level_db=float(np.round(rng.uniform(-2.0, 2.0), 2)),
        family=family,
        shift_cents=shift,
    )


def speaker_voice(speaker: str, seed: int = 0, family: str = "espeak-ng", *, attempt: int = 0) -> Voice:
    """The voice of ``speaker`` in ``family`` (deterministic in (seed, family, speaker, attempt)).

    espeak-ng: the six main characters get distinct variants of their gender.
    ``attempt`` > 0 draws an alternative voice (used to keep speakers of one dialogue distinct).
    """
    if family == "espeak-ng":
        return _espeak_voice(speaker, seed, attempt)
    if family not in FAMILIES:
        raise HBAFError(f"unknown synthesizer family {family!r}; choose from {', '.join(FAMILIES)}")
    return _family_voice(speaker, seed, family, attempt)


def _voice_key(v: Voice) -> tuple[str, int]:
    if v.family == "espeak-ng":
        return v.name, v.pitch // 6
    return v.name, int(round(v.shift_cents / 150.0))


def dialogue_voices(speakers: Sequence[str], seed: int, family: str) -> dict[str, Voice]:
    """Voices of a dialogue's speakers (in order of appearance), distinct within the dialogue."""
    out: dict[str, Voice] = {}
    taken: set[tuple[str, int]] = set()
    for spk in dict.fromkeys(speakers):
        voice = speaker_voice(spk, seed, family)
        for attempt in range(1, 40):
            if _voice_key(voice) not in taken:
                break
            voice = speaker_voice(spk, seed, family, attempt=attempt)
        taken.add(_voice_key(voice))
        out[spk] = voice
    return out
