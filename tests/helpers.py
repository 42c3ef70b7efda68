"""Small helpers shared by the test files (pytest puts tests/ on sys.path)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import torch

from hbaf.checkpoint import save_checkpoint
from hbaf.contract import TOKENIZER_FILE
from hbaf.model import HBAF, preset
from hbaf.text import resolve_text_encoder


def fake_states(seconds: float, seed: int = 0):
    """Unit-scale stand-ins of Whisper encoder states for ``seconds`` of audio ([T, 384], 50 frames/s):
    the shape the model takes, without running the encoder."""
    import numpy as np

    from hbaf.contract import FEATURE_FORMATS, FEATURE_KIND, SAMPLE_RATE

    fmt = FEATURE_FORMATS[FEATURE_KIND]
    frames = fmt.frames_for(int(seconds * SAMPLE_RATE))
    return np.random.default_rng(seed).standard_normal((frames, fmt.dim)).astype(np.float32)


def tiny_checkpoint(folder: Path, labels: list[str], seed: int = 0) -> Path:
    """An untrained tiny HBAF saved as a real checkpoint folder (runs in well under a second)."""
    torch.manual_seed(seed)
    return save_checkpoint(HBAF(preset("tiny"), labels).eval(), folder, resolve_text_encoder() / TOKENIZER_FILE)


def assert_one_line_error(proc: subprocess.CompletedProcess, *words: str) -> str:
    """Exit code 2, exactly one `error: ...` line on stderr (progress bars aside), no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip() and ": " in ln and "%|" not in ln]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def espeak_conversation(out: Path, turns: list[tuple[str, str]], pause_s: float, speed: int = 150) -> Path:
    """(voice, text) turns rendered with espeak-ng, 0.5 s of silence first and ``pause_s`` after
    each turn, as one 16 kHz 16-bit WAV at ``out``."""
    import numpy as np
    import soundfile as sf

    from hbaf.audio import load_audio
    from hbaf.contract import SAMPLE_RATE

    pieces = [np.zeros(SAMPLE_RATE // 2, np.float32)]
    for i, (voice, text) in enumerate(turns):
        path = out.with_name(f"{out.stem}-t{i}.wav")
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text], check=True, capture_output=True)
        pieces += [load_audio(path), np.zeros(int(pause_s * SAMPLE_RATE), np.float32)]
    sf.write(str(out), np.concatenate(pieces), SAMPLE_RATE, subtype="PCM_16")
    return out
