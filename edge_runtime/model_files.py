"""Model files: which model runs when none is named, what a path holds (checked against its
name), and the Backend that runs it.

``default_model_path()`` is the model ``hbaf-edge run`` (and ``EmotionStream``) uses without
``--model``: one packaged in ``hbaf/assets/``, else ``$HBAF_HOME/models/default``.

``open_backend(path)`` is the one way the runtime turns a model path into a Backend
(``edge_runtime.backends``: PyTorch checkpoint or ONNX Runtime; ``edge_runtime.trt_backend``:
TensorRT engine). The file's first bytes are read before anything heavy is loaded, so an
ONNX renamed ``.engine``, a text file named ``.onnx`` or a truncated file gives one line naming
the file and what to pass instead.
"""

from __future__ import annotations

import struct
from pathlib import Path

from edge_runtime.backends import Backend, OnnxBackend, TorchBackend
from edge_runtime.trt_backend import TensorRTBackend
from hbaf.errors import HBAFError
from hbaf.io import hbaf_home

WHAT_TO_PASS = (
    "pass a checkpoint folder (hbaf train --out), a .onnx model (hbaf-export onnx) "
    "or a TensorRT .engine (hbaf-export engine)"
)


def sniff(path: Path) -> str:
    """What a file's first bytes say it is: onnx | safetensors | pickle | zip | wav | flac | ogg | mp3 |
    text | unknown."""
    with open(path, "rb") as fh:
        head = fh.read(4096)
    size = path.stat().st_size
    if len(head) >= 9:
        (n,) = struct.unpack("<Q", head[:8])
        if 2 <= n <= size - 8 and head[8:9] == b"{":
            return "safetensors"
    audio = _audio_kind(head)
    if audio is not None:
        return audio
    if _looks_like_onnx(head):
        return "onnx"
    if head[:2] == b"PK":
        return "zip"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    if head and b"\x00" not in head:
        try:
            head.decode("utf-8")
            return "text"
        except UnicodeDecodeError:
            pass
    return "unknown"


def _audio_kind(head: bytes) -> str | None:
    """wav | flac | ogg | mp3 when ``head`` starts like that audio container, else None."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE" or head[:4] == b"RF64":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:3] == b"ID3" or (len(head) >= 4 and head[0] == 0xFF and head[1] & 0xE6 == 0xE2 and head[2] & 0xF0 != 0xF0):
        return "mp3"
    return None


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while i < len(buf):
        b = buf[i]
        value |= (b & 0x7F) << shift
        i += 1
        if not b & 0x80:
            return value, i
        shift += 7
        if shift > 63:
            break
    raise ValueError("bad varint")


def _looks_like_onnx(head: bytes) -> bool:
    """A serialized ModelProto starts with ir_version (field 1, varint 3..20) followed by
    producer/domain/opset/graph fields; walk the first few protobuf fields to confirm."""
    if not head.startswith(b"\x08"):
        return False
    try:
        ir, i = _varint(head, 1)
        if not 3 <= ir <= 20:
            return False
        for _ in range(3):
            if i >= len(head):
                return True
            tag, i = _varint(head, i)
            field, wire = tag >> 3, tag & 7
            if field not in (2, 3, 4, 5, 6, 7, 8, 14, 20, 25):
                return False
            if wire == 0:
                _, i = _varint(head, i)
            elif wire == 2:
                length, i = _varint(head, i)
                i += length
            else:
                return False
        return True
    except ValueError:
        return False


_KIND_NAMES = {
    "onnx": "an ONNX model", "safetensors": "a safetensors weights file", "pickle": "a Python pickle",
    "zip": "a zip archive (e.g. a torch .pt file)", "text": "a text file", "unknown": "not a recognised model file",
    "wav": "a WAV audio file", "flac": "a FLAC audio file", "ogg": "an Ogg audio file", "mp3": "an MP3 audio file",
}
AUDIO_KINDS = ("wav", "flac", "ogg", "mp3")


def model_kind(path: str | Path) -> str:
    """``torch`` | ``onnx`` | ``engine`` for ``path``, after checking the content matches the name.

    Raises a one-line HBAFError naming the file and what to pass when it does not.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise HBAFError(f"model not found: {p}; {WHAT_TO_PASS}")
    if p.is_dir():
        if not (p / "config.json").is_file():
            onnx_inside = sorted(p.glob("*.onnx"))
            hint = f" (it holds {onnx_inside[0].name}: pass that file)" if onnx_inside else ""
            raise HBAFError(f"{p} is not a checkpoint folder (no config.json){hint}; {WHAT_TO_PASS}")
        return "torch"
    if p.stat().st_size == 0:
        raise HBAFError(f"model file is empty (0 bytes): {p}; copy it again, or {WHAT_TO_PASS}")
    suffix = p.suffix.lower()
    kind = sniff(p)
    if suffix == ".safetensors":
        if kind != "safetensors":
            raise HBAFError(f"{p} is {_KIND_NAMES[kind]}, not safetensors weights (truncated or renamed?); copy the checkpoint folder again")
        return "torch"
    if kind in AUDIO_KINDS:  # whatever its name: audio passed as the model
        raise HBAFError(f"{p} is {_KIND_NAMES[kind]}, not a model (audio goes to --source); {WHAT_TO_PASS}")
    if suffix == ".onnx":
        if kind in ("safetensors", "pickle", "zip", "text"):
            raise HBAFError(f"{p} is {_KIND_NAMES[kind]}, not an ONNX model; {WHAT_TO_PASS}")
        return "onnx"
    if suffix in (".engine", ".plan", ".trt"):
        if kind != "unknown":
            fix = "rename it to .onnx" if kind == "onnx" else WHAT_TO_PASS
            raise HBAFError(f"{p} is {_KIND_NAMES[kind]}, not a TensorRT engine; {fix}, or build an engine with `hbaf-export engine --onnx MODEL.onnx`")
        return "engine"
    if suffix == ".json" and p.name == "config.json":
        return "torch"
    raise HBAFError(f"{p}: unknown model type '{suffix or p.name}'; {WHAT_TO_PASS}")


def open_backend(
    path: str | Path,
    *,
    device: str = "cpu",
    fp16: bool = False,
    threads: int | None = None,
    providers: list[str] | None = None,
) -> Backend:
    """Open ``path`` with the backend its kind calls for (see the module docstring)."""
    p = Path(path).expanduser()
    kind = model_kind(p)
    if kind == "torch":
        return TorchBackend(p, device=device, fp16=fp16, threads=threads)
    if fp16:
        raise HBAFError(f"--fp16 applies to PyTorch checkpoints; {p.name} has its precision fixed at export, drop --fp16")
    if kind == "onnx":
        return OnnxBackend(p, threads=threads, providers=providers)
    return TensorRTBackend(p)  # imports TensorRT itself only when it opens the engine


# ----------------------------------------------------------------------------- the default model


def _model_in(folder: Path) -> Path | None:
    """A model inside ``folder``: default.onnx, model.onnx, another .onnx (sorted), or the folder
    itself when it is a checkpoint (config.json + model.safetensors)."""
    if not folder.is_dir():
        return None
    for name in ("default.onnx", "model.onnx"):
        if (folder / name).is_file():
            return folder / name
    onnx_files = sorted(p for p in folder.glob("*.onnx") if not p.name.startswith("."))  # skip atomic-write temporaries
    if onnx_files:
        return onnx_files[0]
    if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        return folder
    return None


def default_model_path() -> Path:
    """The model used when ``--model`` is omitted: one packaged in ``hbaf/assets/``, else
    ``$HBAF_HOME/models/default`` (``~/.cache/hbaf/models/default``)."""
    from hbaf import io

    assets = io.ASSETS_DIR
    home = hbaf_home() / "models" / "default"
    for folder in (assets, home):
        found = _model_in(folder)
        if found is not None:
            return found
    raise HBAFError(f"no default model (none packaged in {assets}, none in {home}); reinstall hbaf-edge, "
                   "or pass --model FILE (a checkpoint from `hbaf train` or an ONNX from `hbaf-export all`)")
