"""The backends under test: how to open each (a ``Spec``, also sent to the cold-start child
process), the two that exist only here (``torch.compile`` and Torch-TensorRT programs), what
an ONNX file is, and fitting an input to a backend's limits."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.backends import Backend, OnnxBackend, TorchBackend
from hbaf.errors import HBAFError

# label and precision of an INT8 row by the flavour calibration recorded in the file
INT8_LABELS = {
    "cpu": ("ONNX Runtime INT8 (CPU form)", "int8 u8/s8"),
    "trt": ("ONNX Runtime Q/DQ s8 (TensorRT form)", "int8 s8/s8"),
    "cpu-dynamic": ("ONNX Runtime INT8 dynamic", "int8 dynamic"),
}


@dataclass
class Spec:
    """How to open one backend (also sent to the cold-start child process as JSON)."""

    key: str
    label: str
    kind: str  # torch | torch-compile | torch-trt | onnx | engine
    path: str
    family: str = "student"  # which model: "student" (the --checkpoint and its exports) or "teacher"
    device: str = "cpu"
    fp16: bool = False
    providers: list[str] | None = None


class CompiledTorchBackend(TorchBackend):
    """A checkpoint through ``torch.compile`` (Inductor, dynamic shapes). Compilation happens at
    the first call, so it shows up as first-inference time; a compiler failure surfaces there."""

    name = "torch.compile"

    def __init__(self, path: str | Path, *, threads: int | None = None) -> None:
        super().__init__(path, threads=threads)
        t0 = time.perf_counter()
        self.model = self._torch.compile(self.model, dynamic=True)
        self.load_seconds += time.perf_counter() - t0


class TorchTensorRTBackend(TorchBackend):
    """A checkpoint compiled with Torch-TensorRT (``export.torch_trt.compile_student``) on CUDA,
    for the contract's one optimization profile."""

    name = "torch-tensorrt"

    def __init__(self, path: str | Path, *, precision: str = "fp16") -> None:
        from export.torch_trt import compile_student
        from hbaf.contract import Profiles

        super().__init__(path, device="cuda")
        profiles = Profiles.for_spec(self.spec)
        t0 = time.perf_counter()
        self.model = compile_student(self.model, self.spec, profiles, precision=precision)
        self.load_seconds += time.perf_counter() - t0
        self.precision = precision
        self.min_frames, self.max_frames = profiles.min.frames, profiles.max.frames
        self.min_tokens, self.token_limit = profiles.min.tokens, profiles.max.tokens
        self.max_batch = profiles.max.batch


def open_spec(spec: Spec, threads: int) -> Backend:
    """Open the backend ``spec`` describes, with ``threads`` CPU threads where that applies."""
    if spec.kind == "torch":
        return TorchBackend(spec.path, device=spec.device, fp16=spec.fp16, threads=threads)
    if spec.kind == "torch-compile":
        return CompiledTorchBackend(spec.path, threads=threads)
    if spec.kind == "torch-trt":
        return TorchTensorRTBackend(spec.path, precision="fp16" if spec.fp16 else "fp32")
    if spec.kind == "onnx":
        return OnnxBackend(spec.path, threads=threads, providers=spec.providers)
    if spec.kind == "engine":
        from edge_runtime.trt_backend import TensorRTBackend  # TensorRT exists only on the GPU machine

        return TensorRTBackend(spec.path)
    raise HBAFError(f"unknown backend kind '{spec.kind}'")


def onnx_info(path: Path) -> tuple[dict[str, Any], bool]:
    """One read of an ONNX file: (the INT8 recipe calibration recorded in its metadata, {} if
    none; whether it is the ONNX Runtime CPU graph)."""
    from hbaf.contract import GRAPH_ORT_CPU, QUANT_METADATA_KEY, graph_kind, onnx_metadata, read_onnx

    proto = read_onnx(path, load_external_data=False)
    return onnx_metadata(proto, QUANT_METADATA_KEY), graph_kind(proto) == GRAPH_ORT_CPU


def size_mb(path: Path) -> float | None:
    """A model's size on disk: the file, or a checkpoint folder's weights."""
    target = path / "model.safetensors" if path.is_dir() else path
    try:
        return round(target.stat().st_size / 1e6, 3)
    except OSError:
        return None


def max_batch(backend: Backend) -> int | None:
    """The largest batch a backend accepts (an engine's optimization profile), None = any."""
    explicit = getattr(backend, "max_batch", None)
    return int(explicit) if explicit else None


def fit_feeds(feeds: dict[str, np.ndarray], backend: Backend) -> tuple[dict[str, np.ndarray] | None, str | None]:
    """``feeds`` within ``backend``'s input limits: padded (masked) up to its minimum frames and
    tokens; (None, why) when the batch, frames or tokens exceed what it accepts."""
    from hbaf.contract import pad_feeds

    b, t, length = backend.spec.feed_sizes(feeds)
    limit = max_batch(backend)
    if limit and b > limit:
        return None, f"batch {b} exceeds its profile's maximum {limit}"
    if t > backend.max_frames:
        return None, f"{t} frames exceed its maximum {backend.max_frames}"
    if length > backend.max_tokens:
        return None, f"{length} tokens exceed its maximum {backend.max_tokens}"
    return pad_feeds(feeds, min_frames=backend.min_frames, min_tokens=backend.min_tokens), None
