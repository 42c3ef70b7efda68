"""Emotion events: one per utterance, to stdout (a readable line or JSON) and to a JSONL file.

The JSONL file is opened for appending and every line is written with one ``write``
and made durable (``fsync``) before the next event, so a file cut short by a crash,
``kill -9`` or a power cut holds only whole lines. A run ends with a
``{"summary": {...}}`` line. When a write fails mid-run (disk full, device gone)
the runtime warns once on stderr, removes the partial line when it can (every line
already in the file stays whole), keeps printing events on stdout, tries again at the
next event and counts the lost lines in the summary; the run then ends with the
summary and a one-line error naming the file and the fix (``failure()``), exit code 2.
"""

from __future__ import annotations

import errno
import json
import math
import logging
import os
import stat
import sys
import time
from copy import deepcopy
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Sequence, TextIO

import numpy as np

from edge_runtime.heads import Reading, read_heads
from hbaf.errors import HBAFError

log = logging.getLogger(__name__)

STDOUT_FORMATS = ("text", "json", "none")
HEAD_BYTES = 65536  # how much of an existing --output is read to check that it holds JSON lines
FIFO_WAIT_S = 10.0  # how long --output waits for a reader to open its FIFO


# an event's latency_ms, per stage: endpoint + queue + asr + features + fusion = speech_end (what a person
# waits after their last word), total = the same from the VAD's decision; vad_compute is the VAD's
# compute spent on the utterance's audio while it was spoken (not a wait)
STAGES = ("endpoint", "queue", "asr", "features", "fusion", "vad_compute")


def _digits(n: int) -> dict[str, int]:
    return {"round": n}


@dataclass
class Event:
    """What the runtime says about one utterance: the one event type of the command line's JSON
    lines and of the Python API (``edge_runtime.EmotionStream``).

    ``start``/``end`` are seconds of stream time; ``emotion`` is the top label, or
    ``"uncertain"`` when ``confidence`` (the top probability) is below the configured
    threshold (``uncertain`` is then True and ``probs`` still holds every label).
    ``gate`` is the mean fusion gate of each direction: how much the text flowed into
    the audio stream and how much the audio flowed into the text stream.
    ``latency_ms`` (``STAGES``): endpoint (last voiced sample -> the VAD's decision), queue, asr,
    features, fusion; speech_end = their sum (what the speaker waits), total = VAD decision ->
    event, vad_compute = the VAD's compute on the utterance.
    ``context`` is the number of earlier utterances in the dialogue memory.
    ``voice`` and ``words`` are what the audio-alone and the text-alone heads say (top emotion and
    its probability), ``disagree`` whether they part (``edge_runtime.heads.parts``: different top
    emotions, each head at least ``DISAGREE_MIN_CONFIDENCE`` sure). A model exported before the
    heads has none: the three are None and left out of the JSON.

    A field's ``round`` metadata is the number of decimals JSON gets for it (for a dict, for each
    value). An optional field (default None) is left out of the JSON while it is None, so adding
    one keeps every existing line as it was.
    """

    utterance: int
    start: float = field(metadata=_digits(3))
    end: float = field(metadata=_digits(3))
    text: str
    emotion: str
    confidence: float = field(metadata=_digits(4))
    probs: dict[str, float] = field(metadata=_digits(4))
    gate: dict[str, float] = field(metadata=_digits(4))
    latency_ms: dict[str, float] = field(metadata=_digits(1))
    uncertain: bool = False
    context: int = 0
    voice: Reading | None = field(default=None, metadata=_digits(4))
    words: Reading | None = field(default=None, metadata=_digits(4))
    disagree: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """The event's JSON object: fields in order, numbers rounded, optional fields that are None left out."""
        d: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None and f.default is None:
                continue
            value = asdict(value) if is_dataclass(value) else deepcopy(value)
            digits = f.metadata.get("round")
            d[f.name] = _rounded(value, digits) if digits is not None else value
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @property
    def top_label(self) -> str:
        return max(self.probs, key=self.probs.get) if self.probs else self.emotion

    def format_line(self) -> str:
        """``[00:12.3-00:14.1] joy 0.62  "Great, thanks."  (voice anger 0.71, words joy 0.88, DISAGREE)  433 ms``:
        the fused emotion, the transcript, what the voice and the words each say (``DISAGREE`` when
        they part), and what the speaker waited, last voiced sample -> event. A model without the
        uni-modal heads shows no parentheses. The gate is in the JSON only: measured, it does not
        vary with the utterance (docs/VOICES.md, "What the voice says and what the words say")."""
        label = f"uncertain ({self.top_label} {self.confidence:.2f})" if self.uncertain else f"{self.emotion} {self.confidence:.2f}"
        # the heads' confidences are cut, not rounded, to two decimals: 0.3956 shows as 0.39, so a
        # reading shown as 0.40 is at the disagreement threshold
        heads = [f"{name} {r.emotion} {math.floor(r.confidence * 100 + 1e-9) / 100:.2f}"
                 for name, r in (("voice", self.voice), ("words", self.words)) if r]
        if self.disagree:
            heads.append("DISAGREE")
        said = f"  ({', '.join(heads)})" if heads else ""
        waited = self.latency_ms.get("speech_end", self.latency_ms.get("total", 0.0))
        return f"[{format_clock(self.start)}-{format_clock(self.end)}] {label}  \"{self.text}\"{said}  {waited:.0f} ms"


def _rounded(value: Any, digits: int) -> Any:
    """Numbers rounded to ``digits`` decimals, also inside dicts; anything else as it is."""
    if isinstance(value, dict):
        return {k: _rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        return round(float(value), digits)
    return value


def latency_ms(stages: dict[str, float], vad_seconds: float, total: float, speech_end: float) -> dict[str, float]:
    """An event's ``latency_ms`` from seconds: each stage, vad_compute, total and speech_end."""
    return {**{k: v * 1000.0 for k, v in stages.items()}, "vad_compute": vad_seconds * 1000.0,
            "total": total * 1000.0, "speech_end": speech_end * 1000.0}


def assemble_event(number: int, utterance: Any, text: str, fused: dict[str, Any], labels: Sequence[str], *,
                   min_confidence: float | None, context: int, latency: dict[str, float]) -> Event:
    """The event of one utterance from what the fusion call returned (``offline.fuse_utterance``):
    the top label and its probability, ``"uncertain"`` below ``min_confidence``, ``"invalid"``
    (confidence 0, probabilities 0) when the model's outputs are not finite; ``voice``, ``words``
    and ``disagree`` from the uni-modal heads when the model has them (``edge_runtime.heads``)."""
    probs = fused["probs"][0]
    if fused["finite"]:
        top = int(np.argmax(probs))
        confidence, emotion = float(probs[top]), labels[top]
    else:
        probs = np.zeros(len(labels), dtype=np.float32)
        confidence, emotion = 0.0, "invalid"
    uncertain = emotion == "invalid" or (min_confidence is not None and confidence < min_confidence)
    if uncertain and emotion != "invalid":
        emotion = "uncertain"
    gate = fused["gate"][0]
    heads = read_heads(fused, labels) if fused["finite"] else None
    return Event(
        utterance=number,
        start=float(utterance.start),
        end=float(utterance.end),
        text=text,
        emotion=emotion,
        confidence=confidence,
        probs={label: float(p) for label, p in zip(labels, probs)},
        gate={"text_to_audio": float(gate[0]), "audio_to_text": float(gate[1])},
        latency_ms=latency,
        uncertain=uncertain,
        context=context,
        voice=heads.voice if heads else None,
        words=heads.words if heads else None,
        disagree=heads.disagree if heads else None,
    )


def format_clock(seconds: float) -> str:
    """Stream time as ``MM:SS.s`` (``H:MM:SS.s`` past an hour)."""
    tenths = int(round(max(0.0, seconds) * 10))
    minutes, rest = divmod(tenths, 600)
    hours, minutes = divmod(minutes, 60)
    clock = f"{minutes:02d}:{rest // 10:02d}.{rest % 10}"
    return f"{hours}:{clock}" if hours else clock


def check_output_path(path: Path, protect: Sequence[tuple[str, str | Path]] = ()) -> None:
    """Refuse an ``--output`` that is one of the run's own inputs: ``protect`` holds (what, path)
    pairs (the model, the source, the recogniser; a folder protects the files in it) and the
    packaged assets are always protected. Appending events there would destroy it."""
    from hbaf.io import ASSETS_DIR

    try:
        target = path.resolve()
    except (OSError, RuntimeError):
        return
    exists = target.exists()
    for what, other in [*protect, ("the packaged models of hbaf-edge", ASSETS_DIR)]:
        try:
            other = Path(other).expanduser().resolve()
        except (OSError, RuntimeError):
            continue
        # a pipe, FIFO or device cannot be destroyed by appending to it: only files and folders count
        same = exists and target.is_file() and other.exists() and os.path.samefile(target, other)
        inside = other.is_dir() and (exists or other == ASSETS_DIR) and other in target.parents
        if same or inside:
            where = what if same else f"inside {what} ({other})"
            raise HBAFError(f"--output {path} is {where}; appending events would destroy it: pass a new file name such as events.jsonl")


_MAGIC = (
    (b"RIFF", "a WAV audio file"), (b"fLaC", "a FLAC audio file"), (b"OggS", "an Ogg audio file"), (b"ID3", "an MP3 audio file"),
    (b"\xff\xfb", "an MP3 audio file"), (b"\xff\xf3", "an MP3 audio file"), (b"PK\x03\x04", "a zip archive"),
    (b"\x80\x04", "a Python pickle"), (b"\x7fELF", "a program"), (b"\x08", "binary data (an ONNX model?)"),
)


def describe_non_jsonl(head: bytes) -> str | None:
    """None when ``head`` (the start of a file) reads as JSON lines, else what it looks like.

    JSON lines: UTF-8 text whose first non-blank line starts with ``{`` and in which at least
    one whole line parses as a JSON object (a first line cut short by a crash is tolerated)."""
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    if b"\x00" in head:
        return "binary data"
    if len(head) == HEAD_BYTES:  # only the first part of a long file: leave out its last, partial line
        head = head[: head.rfind(b"\n") + 1]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "binary data"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return None  # blank lines only
    if not lines[0].startswith("{"):
        return "a text file" if all(ch.isprintable() or ch.isspace() for ch in text) else "binary data"
    if len(lines) == 1:
        return None  # one line, perhaps the first event of a run cut short
    for ln in lines[:50]:
        try:
            if isinstance(json.loads(ln), dict):
                return None
        except ValueError:
            continue
    return "a JSON document or text that is not JSON lines"


def _open_fifo(path: Path, stderr: TextIO) -> int:
    """Open a FIFO for writing without hanging: wait up to ``FIFO_WAIT_S`` for a reader (saying so
    once on stderr), then fail in one line."""
    said = False
    t0 = time.monotonic()
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as err:
            if err.errno != errno.ENXIO:  # ENXIO: nobody reads it yet
                raise HBAFError(f"cannot write events to FIFO {path} ({err.strerror or err}); pass another --output") from err
        else:
            os.set_blocking(fd, True)  # a slow reader slows the writer down, it does not lose lines
            return fd
        if time.monotonic() - t0 >= FIFO_WAIT_S:
            raise HBAFError(f"no process reads the FIFO {path} (waited {FIFO_WAIT_S:.0f} s); start its reader first "
                            f"(e.g. `cat {path} &`) or pass a regular file as --output")
        if not said:
            said = True
            try:
                stderr.write(f"hbaf-edge: waiting up to {FIFO_WAIT_S:.0f} s for a reader of the FIFO {path}\n")
                stderr.flush()
            except (OSError, ValueError):
                pass
        time.sleep(0.05)


@dataclass
class WriterStats:
    events: int = 0
    jsonl_lines_written: int = 0
    jsonl_lines_lost: int = 0
    stdout_lost: bool = False
    cut_line_found: bool = False  # the events file ended inside a line (an earlier run cut short)
    errors: list[str] = field(default_factory=list)


class EventWriter:
    """Events to stdout (``stdout_format``: text | json | none) and, if ``path`` is given,
    appended to a JSONL file, one durable line per event.

    Opening a path that cannot be written (missing folder, read-only folder or file
    system, a folder in the way) raises a one-line HBAFError at construction, before
    any model is loaded; so does a path that is one of the run's inputs (``protect``: the
    model, the source, ...; ``check_output_path``) or an existing file that is not JSON lines.
    A file whose last line has no newline gets the first new line on a line of its own
    (``stats.cut_line_found``). A FIFO is waited for until a reader opens it (at most
    ``FIFO_WAIT_S``); pipes, FIFOs and devices are written without ``fsync``, which they refuse.
    """

    def __init__(
        self,
        path: str | Path | None,
        *,
        stdout: TextIO | None = None,
        stdout_format: str = "text",
        stderr: TextIO | None = None,
        protect: Sequence[tuple[str, str | Path]] = (),
    ) -> None:
        if stdout_format not in STDOUT_FORMATS:
            raise HBAFError(f"unknown stdout format '{stdout_format}'; use one of {', '.join(STDOUT_FORMATS)}")
        self.path = Path(path).expanduser() if path is not None else None
        self.stdout = stdout if stdout is not None else sys.stdout
        self.stderr = stderr if stderr is not None else sys.stderr
        self.stdout_format = stdout_format
        self.stats = WriterStats()
        self._warned = False
        self._first_error: OSError | None = None
        self._torn = False  # a partial line could not be removed
        self._fd: int | None = None
        self._regular = False  # fsync only where it means something (not on a pipe, FIFO or device)
        self._fresh_line = False  # the file ended inside a line: the next write starts with a newline
        if self.path is not None:
            check_output_path(self.path, protect)
            self._fd = self._open(self.path, self.stderr)
            try:
                st = os.fstat(self._fd)
            except OSError:
                st = None
            self._regular = st is not None and stat.S_ISREG(st.st_mode)
            if self._regular and st is not None and st.st_size > 0:
                self._check_content(st.st_size)

    @staticmethod
    def _open(path: Path, stderr: TextIO) -> int:
        try:
            mode = os.stat(path).st_mode
        except OSError:
            mode = 0
        if stat.S_ISFIFO(mode):
            return _open_fifo(path, stderr)
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except FileNotFoundError as err:
            if not path.parent.is_dir():
                raise HBAFError(f"cannot write events to {path}: folder {path.parent} does not exist; create it or pass another --output") from err
            raise HBAFError(f"cannot write events to {path}: the folder {path.parent} exists but does not let files be created in it "
                            f"(a virtual file system such as /proc or /sys?); pass --output in a folder on a disk") from err
        except IsADirectoryError as err:
            raise HBAFError(f"cannot write events to {path}: it is a folder; pass a file name such as {path / 'events.jsonl'}") from err
        except PermissionError as err:
            raise HBAFError(f"cannot write events to {path}: permission denied; pass --output in a folder you can write") from err
        except OSError as err:
            if err.errno == errno.EROFS:
                raise HBAFError(f"cannot write events to {path}: read-only file system; pass --output on a writable disk") from err
            raise HBAFError(f"cannot write events to {path} ({err.strerror or err}); pass another --output") from err

    def _check_content(self, size: int) -> None:
        """An existing, non-empty file must be JSON lines (events of an earlier run): refuse
        anything else, and note a last line cut short, so that new events start on a fresh line."""
        assert self._fd is not None and self.path is not None
        try:
            with open(self.path, "rb") as fh:
                head = fh.read(HEAD_BYTES)
                fh.seek(size - 1)
                last = fh.read(1)
        except OSError as err:
            raise HBAFError(f"cannot read {self.path} to check it before appending ({err.strerror or err}); pass another --output") from err
        what = describe_non_jsonl(head)
        if what is not None:
            self.close()
            raise HBAFError(f"--output {self.path} is {what}, not a JSON-lines events file; events are appended to --output, "
                            "so pass a new file name (e.g. events.jsonl) or an events file of an earlier run")
        if last != b"\n":
            self._fresh_line = True
            self.stats.cut_line_found = True

    # -- output

    def write(self, event: Event) -> None:
        """Print ``event`` and append it to the JSONL file (flushed and fsynced)."""
        self.stats.events += 1
        line = event.to_json()
        if self.stdout_format == "text":
            self._print(event.format_line())
        elif self.stdout_format == "json":
            self._print(line)
        self._append(line)

    def write_summary(self, summary: dict[str, Any], *, to_jsonl: bool = True) -> None:
        """The final ``{"summary": ...}`` line of the JSONL file (and of stdout in json format)."""
        if to_jsonl:
            self._append(self._summary_line(summary))
        if self.stdout_format == "json":  # after the file: its count includes the summary line when that was lost too
            self._print(self._summary_line({**summary, "jsonl_lines_lost": self.stats.jsonl_lines_lost}))

    @staticmethod
    def _summary_line(summary: dict[str, Any]) -> str:
        line = json.dumps({"summary": summary}, ensure_ascii=False)
        # a source path with bytes that are not UTF-8 holds lone surrogates: write them as \udcXX escapes
        return line.encode("utf-8", "backslashreplace").decode("utf-8")

    def _print(self, text: str) -> None:
        if self.stats.stdout_lost:
            return
        try:
            self.stdout.write(text + "\n")
            self.stdout.flush()
        except (BrokenPipeError, ValueError, OSError):
            # the reader went away (e.g. piped into `head`); keep going with the JSONL file
            self.stats.stdout_lost = True
            log.warning("stdout closed; events continue to the JSONL file only")

    def _append(self, line: str) -> None:
        if self._fd is None:
            return
        data = (("\n" if self._fresh_line else "") + line + "\n").encode("utf-8")
        try:
            size = os.fstat(self._fd).st_size if self._regular else None
        except OSError:
            size = None
        view = memoryview(data)
        try:
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
            if self._regular:  # a pipe, FIFO or terminal cannot be fsynced (EINVAL): its bytes are delivered
                os.fsync(self._fd)
        except OSError as err:
            self._lost(err, size, wrote=len(view) < len(data))
            return
        self._fresh_line = False
        self.stats.jsonl_lines_written += 1

    def _lost(self, err: OSError, size: int | None, *, wrote: bool = True) -> None:
        self.stats.jsonl_lines_lost += 1
        if self._first_error is None:
            self._first_error = err
        if wrote:  # some bytes of the line (or all, unsynced) may be in the file
            try:
                if size is None:
                    raise OSError("size unknown")
                os.ftruncate(self._fd, size)  # drop the partial line, so the file stays valid JSONL
            except OSError:
                self._torn = self._regular  # a pipe's reader already has what got through
        reason = err.strerror or str(err)
        self.stats.errors.append(reason)
        if not self._warned:
            self._warned = True
            try:
                self.stderr.write(
                    f"warning: writing {self.path} failed ({reason}); {self._fix(err)}; events continue on stdout, "
                    "lost lines are counted in the summary and the run will exit with code 2\n"
                )
                self.stderr.flush()
            except (OSError, ValueError):
                pass

    @staticmethod
    def _fix(err: OSError) -> str:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            return "free disk space or pass another --output"
        return "check the disk or pass another --output"

    def failure(self) -> str | None:
        """One line for the end of a run in which JSONL lines were lost (None when none were):
        the file, how many lines, why, and the fix."""
        lost = self.stats.jsonl_lines_lost
        if not lost or self.path is None:
            return None
        reasons = list(dict.fromkeys(self.stats.errors))
        fix = self._fix(self._first_error) if self._first_error is not None else "pass another --output"
        return (
            f"{lost} of {lost + self.stats.jsonl_lines_written} line(s) could not be written to {self.path} "
            f"({'; '.join(reasons)}); "
            + ("its last line may be cut short; " if self._torn else "the lines in the file are whole; ")
            + fix
        )

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError as err:
                log.warning("closing %s failed: %s", self.path, err)

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
