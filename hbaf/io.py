"""Atomic file writes (a killed process never leaves a half file that a later run trusts), the
project's home folder, where the packaged model lives, and silencing chatty libraries."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the same folder; on success it is renamed onto ``path``.

    The temporary keeps the target's suffix (some writers pick the format from it).
    On any exception the temporary is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp creates 0600; finished files get the usual mode
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


ASSETS_DIR = Path(__file__).resolve().parent / "assets"  # what ships inside the package
PACKAGED_CHECKPOINT = "student"  # the packaged student checkpoint, a folder in ASSETS_DIR
PACKAGED_MODEL = "default.onnx"  # the packaged INT8 CPU model of that student, in ASSETS_DIR


def hbaf_home() -> Path:
    """Where corpora, caches and default models live: ``$HBAF_HOME``, else ``~/.cache/hbaf``."""
    return Path(os.environ.get("HBAF_HOME") or Path.home() / ".cache" / "hbaf").expanduser()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


@contextmanager
def quiet_output(loggers: Sequence[str], what: str, tail: int | None = None) -> Iterator[None]:
    """Silence chatty libraries: the named loggers ("" is the root logger) drop to ERROR, warnings
    are ignored and stdout is captured; what was printed goes to the debug log as ``what`` output
    (its last ``tail`` characters)."""
    buf = io.StringIO()
    noisy = [logging.getLogger(n) for n in loggers]
    levels = [lg.level for lg in noisy]
    for lg in noisy:
        lg.setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(buf):
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            for lg, level in zip(noisy, levels):
                lg.setLevel(level)
            text = buf.getvalue().strip()
            if text:
                logging.getLogger("hbaf").debug("%s output:\n%s", what, text[-tail:] if tail else text)
