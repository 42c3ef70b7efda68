"""Small helpers shared by the test files (pytest puts tests/ on sys.path)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import torch

from hbaf.checkpoint import save_checkpoint
from hbaf.contract import TOKENIZER_FILE
from hbaf.model import HBAF, preset
from hbaf.text import resolve_text_encoder


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
