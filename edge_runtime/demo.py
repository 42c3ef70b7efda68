"""`hbaf-edge run --source demo`: a short synthetic conversation.

``demo_conversation()`` renders (once; cached under ``$HBAF_HOME/demo`` or
``~/.cache/hbaf/demo``) a three-speaker, twelve-turn conversation of about 50 s with
espeak-ng: one voice per speaker, prosody (rate, pitch, loudness) shifted with the
scripted emotion, and 1-1.4 s pauses between turns so the VAD cuts one utterance
per turn. It is synthetic speech, meant to let a newcomer see events on a machine
without a microphone, not to measure accuracy. A JSON file next to the WAV holds the
script (speaker, text, emotion, start and end in seconds).

``meld_conversation()`` joins real MELD test dialogues (texts, speakers, labels) rendered
with the MELD-TTS voices into one longer recording with known turns: the conversation the
tests and the latency analysis run the whole pipeline on (also synthetic speech).

The model ``hbaf-edge run`` uses without ``--model`` is found by
``edge_runtime.model_files.default_model_path``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hbaf.audio import load_audio
from hbaf.contract import SAMPLE_RATE
from hbaf.errors import HBAFError
from hbaf.io import atomic_path, hbaf_home, write_json_atomic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Turn:
    speaker: str
    text: str
    emotion: str


SCRIPT: tuple[Turn, ...] = (
    Turn("Alex", "Hi Sam, did you get a chance to look at the report?", "neutral"),
    Turn("Sam", "I did, and I'm sorry, I don't think we can finish it this week.", "sadness"),
    Turn("Alex", "What? We promised the client it would be ready on Friday!", "anger"),
    Turn("Jo", "Let's stay calm and see what is actually missing.", "neutral"),
    Turn("Sam", "The numbers from last quarter are gone and I can't find them anywhere.", "fear"),
    Turn("Alex", "How can a whole quarter of numbers just disappear?", "surprise"),
    Turn("Jo", "Wait, I have a backup on my laptop with everything on it!", "joy"),
    Turn("Sam", "That's wonderful news, thank you so much!", "joy"),
    Turn("Alex", "Keeping the only copy on a shared drive was a terrible idea.", "disgust"),
    Turn("Jo", "Agreed, from now on we keep two copies of everything.", "neutral"),
    Turn("Sam", "I feel bad that I caused all this trouble.", "sadness"),
    Turn("Alex", "It's fine, let's finish the report tomorrow morning.", "neutral"),
)

VOICES = {"Alex": "en-us+m3", "Sam": "en-gb+f3", "Jo": "en-us+m7"}

# espeak-ng words per minute, pitch (0-99) and amplitude (0-200) by emotion
PROSODY = {
    "neutral": (160, 50, 100),
    "joy": (180, 72, 120),
    "sadness": (125, 32, 70),
    "anger": (190, 62, 175),
    "surprise": (170, 82, 125),
    "fear": (200, 76, 90),
    "disgust": (140, 38, 110),
}
PAUSES = (1.0, 1.2, 1.4)  # seconds of silence after each turn, cycled
LEAD_IN = 0.5


def espeak(why: str = "the demo conversation is rendered with espeak-ng", fix: str = "or pass --source FILE") -> str:
    """The espeak-ng executable; a one-line error (``why`` ... ``fix``) when it is not installed."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise HBAFError(f"{why}, which is not installed; apt-get install espeak-ng, {fix}")
    return exe


def espeak_version(exe: str) -> str:
    return subprocess.run([exe, "--version"], capture_output=True, text=True, check=False).stdout.strip()


def _cache_key(exe: str) -> str:
    spec = json.dumps([[asdict(t) for t in SCRIPT], VOICES, PROSODY, PAUSES, LEAD_IN, espeak_version(exe), SAMPLE_RATE])
    return hashlib.sha256(spec.encode()).hexdigest()[:12]


def render_turn(exe: str, turn: Turn, tmp: Path, voice: str | None = None) -> np.ndarray:
    """``turn`` spoken by espeak-ng with its emotion's prosody, in its speaker's voice (or
    ``voice``): mono float32 at the contract's rate. ``tmp``: a folder for the WAV espeak writes."""
    rate, pitch, amp = PROSODY[turn.emotion]
    out = tmp / "turn.wav"
    cmd = [exe, "-v", voice or VOICES[turn.speaker], "-s", str(rate), "-p", str(pitch), "-a", str(amp), "-w", str(out), turn.text]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not out.exists():
        raise HBAFError(f"espeak-ng failed to render the demo ({proc.stderr.strip()[:120]}); check `espeak-ng --voices=en`, or pass --source FILE")
    return load_audio(out)


def demo_conversation(cache_dir: str | Path | None = None) -> Path:
    """The demo WAV (rendered on first use, then reused); its script is ``<wav>.json``."""
    from tqdm import tqdm

    exe = espeak()
    folder = Path(cache_dir) if cache_dir is not None else hbaf_home() / "demo"
    wav = folder / f"conversation-{_cache_key(exe)}.wav"
    script_file = wav.with_suffix(".json")
    if wav.is_file() and script_file.is_file():
        return wav
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise HBAFError(f"cannot create the demo cache {folder} ({err.strerror or err}); set HBAF_HOME to a writable folder") from err
    pieces = [np.zeros(int(LEAD_IN * SAMPLE_RATE), dtype=np.float32)]
    t = LEAD_IN
    turns = []
    with tempfile.TemporaryDirectory(prefix="hbaf-demo-") as tmp:
        for i, turn in enumerate(tqdm(SCRIPT, desc="rendering demo conversation", unit="turn", leave=False)):
            audio = render_turn(exe, turn, Path(tmp))
            pause = PAUSES[i % len(PAUSES)]
            turns.append({**asdict(turn), "voice": VOICES[turn.speaker], "start": round(t, 3), "end": round(t + audio.size / SAMPLE_RATE, 3)})
            pieces += [audio, np.zeros(int(pause * SAMPLE_RATE), dtype=np.float32)]
            t += audio.size / SAMPLE_RATE + pause
    signal = np.concatenate(pieces)
    peak = float(np.max(np.abs(signal))) or 1.0
    signal = (signal * min(1.0, 0.9 / peak)).astype(np.float32)

    import soundfile as sf

    with atomic_path(wav) as tmp_wav:
        sf.write(str(tmp_wav), signal, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    write_json_atomic(script_file, {"sample_rate": SAMPLE_RATE, "seconds": round(signal.size / SAMPLE_RATE, 3), "synthetic": True, "turns": turns})
    log.info("demo conversation rendered to %s (%.1f s, %d turns)", wav, signal.size / SAMPLE_RATE, len(turns))
    return wav


def meld_conversation(out_dir: str | Path, *, min_seconds: float = 60.0, pause_s: float = 1.2,
                      intensity: float | None = None) -> tuple[Path, list[dict], list[np.ndarray]]:
    """MELD test utterances of >= 4 words, in dialogue order, rendered with the MELD-TTS voices
    and prosody (strength 0.5, 30 dB SNR) and joined with ``pause_s`` pauses until the
    recording lasts ``min_seconds``.

    Returns (wav path, turns, waves): each turn has start/end (s), text, label, speaker and
    MELD dialogue id; ``waves`` are the rendered clips, in order. ``intensity`` None: the
    corpus's emotion prosody; 0: every utterance with neutral prosody.
    """
    import soundfile as sf

    from hbaf.data.meld_text import read_meld_csv
    from hbaf.data.prosody import render_params
    from hbaf.data.synth import synthesize

    utts = [u for u in read_meld_csv("test") if len(u["text"].split()) >= 4]
    rng = np.random.default_rng(0)
    pieces, turns, waves, t = [np.zeros(int(0.5 * SAMPLE_RATE), np.float32)], [], [], 0.5
    for u in utts:
        params = render_params(u, seed=0, strength=0.5, noise_snr_db=(30.0, 30.0), intensity=intensity)
        wave = synthesize(u["text"], params, noise_seed=int(rng.integers(1 << 30)))
        pieces += [wave, np.zeros(int(pause_s * SAMPLE_RATE), np.float32)]
        waves.append(wave)
        turns.append({"start": t, "end": t + wave.size / SAMPLE_RATE, "text": u["text"], "label": u["label"],
                      "speaker": u["speaker"], "dialogue": int(u["dialogue_id"])})
        t += wave.size / SAMPLE_RATE + pause_s
        if t >= min_seconds:
            break
    path = Path(out_dir) / f"conversation-{intensity}.wav"
    sf.write(path, np.concatenate(pieces), SAMPLE_RATE, subtype="PCM_16")
    return path, turns, waves


def demo_script(wav: str | Path) -> list[dict]:
    """The turns (speaker, text, emotion, start, end) of a rendered demo WAV."""
    return json.loads(Path(wav).with_suffix(".json").read_text())["turns"]
