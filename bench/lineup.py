"""Which rows a benchmark run has, and opening their backends.

Every backend the benchmark knows gets a row, runnable or not: a row that cannot run here
says why (``unavailable: ...``, ``skipped: ...``), one that breaks while measured says where
(``failed: <stage>: ...``). User files that are wrong (not a checkpoint, a corrupt ONNX file,
a model exported from another checkpoint) are one-line errors instead.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.backends import INT8_LABELS, Spec, onnx_info, open_spec, size_mb
from bench.machine import rss_mb
from edge_runtime.backends import Backend
from edge_runtime.model_files import model_kind
from hbaf.errors import HBAFError

log = logging.getLogger(__name__)

BASELINE = "torch-fp32"
TEACHER = "teacher-torch-fp32"


@dataclass
class Settings:
    """What one fusion benchmark run measures (from the command line)."""

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


def one_line(err: BaseException, limit: int = 160) -> str:
    """An exception as one short line (whitespace collapsed), for a row's status."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
        self.status = f"failed: {stage}: {one_line(err)}"
        log.warning("%s %s", self.backend, self.status)


class Lineup:
    """The rows of one run and the backends opened for them (by row key)."""

    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.rows: list[Row] = []
        self.backends: dict[str, Backend] = {}

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        return row

    def row(self, key: str) -> Row:
        return next(r for r in self.rows if r.key == key)

    def runnable(self) -> list[Row]:
        """Rows still ok with an open backend, in table order."""
        return [r for r in self.rows if r.ok and r.key in self.backends]

    def open(self, row: Row, *, fatal: bool) -> None:
        """Open ``row.spec``; user-file errors are fatal (one line, exit 2) when ``fatal``,
        otherwise the row says why the backend is unavailable here."""
        assert row.spec is not None
        rss0 = rss_mb()
        try:
            backend = open_spec(row.spec, self.s.threads)
        except Exception as err:  # HBAFError, or an optional runtime that is installed but broken (CUDA, TensorRT)
            if fatal:
                raise
            row.status = f"unavailable: {one_line(err)}"
            return
        row.cold_start = {"mode": "inline", "load_s": backend.load_seconds, "rss_growth_mb": rss_mb() - rss0}
        if row.spec.kind == "onnx" and getattr(backend, "providers", None):
            row.notes.append("providers: " + ", ".join(backend.providers))
        self.backends[row.key] = backend

    def check_compatible(self, row: Row) -> None:
        """An exported model must be the baseline checkpoint's (labels, K, D, feature width)."""
        self.backends[row.key].spec.check_same_model(
            self.backends[BASELINE].spec, f"{row.path} and --checkpoint {self.s.checkpoint}",
            "pass the models exported from this checkpoint")


def open_lineup(s: Settings) -> Lineup:
    """Plan every row and open what this machine can run (see the package docstring)."""
    import torch

    lineup = Lineup(s)
    ckpt = str(s.checkpoint)
    if model_kind(s.checkpoint) != "torch":
        raise HBAFError(f"--checkpoint {s.checkpoint} is not a checkpoint folder; pass the folder `hbaf train --out` wrote")
    base = lineup.add(Row(BASELINE, "PyTorch eager (baseline)", "fp32", path=ckpt, size_mb=size_mb(s.checkpoint),
                          spec=Spec(BASELINE, "PyTorch eager", "torch", ckpt)))
    lineup.open(base, fatal=True)

    comp = lineup.add(Row("torch-compile-fp32", "PyTorch torch.compile", "fp32", path=ckpt, size_mb=base.size_mb,
                          spec=Spec("torch-compile-fp32", "PyTorch torch.compile", "torch-compile", ckpt)))
    if s.compile == "off":
        comp.status = "skipped: --compile off"
    elif s.compile == "auto" and s.quick:
        comp.status = "skipped: --quick (compiling takes minutes; pass --compile on to include it)"
    else:
        lineup.open(comp, fatal=False)

    _add_onnx_rows(lineup)
    _add_engine_rows(lineup)

    if torch.cuda.is_available():
        for prec, fp16 in (("fp32", False), ("fp16", True)):
            key = f"torch-cuda-{prec}"
            row = lineup.add(Row(key, "PyTorch CUDA", prec, path=ckpt, size_mb=base.size_mb,
                                 spec=Spec(key, "PyTorch CUDA", "torch", ckpt, device="cuda", fp16=fp16)))
            lineup.open(row, fatal=False)
    else:
        lineup.add(Row("torch-cuda", "PyTorch CUDA", "fp32/fp16", status=f"unavailable: PyTorch {torch.__version__} sees no CUDA GPU"))

    trt_row = lineup.add(Row("torch-trt-fp16", "Torch-TensorRT", "fp16", path=ckpt,
                             spec=Spec("torch-trt-fp16", "Torch-TensorRT", "torch-trt", ckpt, device="cuda", fp16=True)))
    if importlib.util.find_spec("torch_tensorrt") is None:
        trt_row.status = "unavailable: torch-tensorrt is not installed (pip install .[jetson] on x86; NVIDIA's wheel on Jetson)"
    elif not torch.cuda.is_available():
        trt_row.status = "unavailable: Torch-TensorRT needs a CUDA GPU"
    else:
        lineup.open(trt_row, fatal=False)

    _add_teacher_row(lineup)
    return lineup


def _add_onnx_rows(lineup: Lineup) -> None:
    """The FP32 export(s), every INT8 model, and ONNX Runtime CUDA where onnxruntime has it."""
    import onnxruntime as ort

    s = lineup.s
    onnx_files: list[tuple[Path, bool]] = ([(s.onnx, False)] if s.onnx else []) + [(p, False) for p in s.onnx_extra] \
        + [(p, True) for p in s.int8]
    for path, _ in onnx_files:
        if model_kind(path) != "onnx":
            raise HBAFError(f"{path} is not an ONNX model; pass the .onnx files written by `hbaf-export onnx` / `hbaf-export int8`")
    if s.onnx is None:
        lineup.add(Row("ort-fp32", "ONNX Runtime", "fp32",
                       status="unavailable: no --onnx given (make one with `hbaf-export onnx --checkpoint DIR --out model.onnx`)"))
    keys: set[str] = set()
    for path, is_int8 in onnx_files:
        quant, cpu_graph = onnx_info(path)
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
        row = lineup.add(Row(key, label, precision, path=str(path), size_mb=size_mb(path),
                             spec=Spec(key, label, "onnx", str(path), providers=["CPUExecutionProvider"])))
        lineup.open(row, fatal=True)
        lineup.check_compatible(row)
        b = lineup.backends[row.key]
        if b.precision == "fp32" and (is_int8 or quant):
            row.notes.append("the file carries no INT8 operators")
        row.precision = precision if b.precision == "int8" else b.precision
        if quant.get("method"):
            row.notes.append(f"calibration {quant['method']}")
    if not s.int8:
        lineup.add(Row("ort-int8", "ONNX Runtime INT8", "int8",
                       status="unavailable: no --int8 given (make them with `hbaf-export int8 --onnx model.onnx --manifest M --out DIR`)"))
    if s.onnx is not None and "CUDAExecutionProvider" in ort.get_available_providers():
        row = lineup.add(Row("ort-cuda-fp32", "ONNX Runtime CUDA", "fp32", path=str(s.onnx), size_mb=size_mb(s.onnx),
                             spec=Spec("ort-cuda-fp32", "ONNX Runtime CUDA", "onnx", str(s.onnx),
                                       providers=["CUDAExecutionProvider", "CPUExecutionProvider"])))
        lineup.open(row, fatal=False)


def _add_engine_rows(lineup: Lineup) -> None:
    s = lineup.s
    if not s.engines:
        why = "no --engine given (build one on the device with `hbaf-export engine --onnx MODEL.onnx`)"
        if importlib.util.find_spec("tensorrt") is None:
            why += "; TensorRT is not installed here"
        lineup.add(Row("trt-engine", "TensorRT engine", "-", status=f"unavailable: {why}"))
        return
    from edge_runtime.trt_backend import read_engine

    for path in s.engines:
        if model_kind(path) != "engine":
            raise HBAFError(f"{path} is not a TensorRT engine; pass the .engine files written by `hbaf-export engine`")
        _, sidecar = read_engine(path)  # file and sidecar checks need no TensorRT: a bad file is a user error
        precision = str(sidecar.precision or "unknown")
        key = f"trt-{precision}"
        if any(r.key == key for r in lineup.rows):
            key = f"{key}-{path.name.split('.')[0]}"
        row = lineup.add(Row(key, "TensorRT engine", precision, path=str(path), size_mb=size_mb(path),
                             spec=Spec(key, "TensorRT engine", "engine", str(path))))
        lineup.open(row, fatal=False)  # no TensorRT here, or an engine for another GPU/version: a status, not an error
        if row.ok:
            lineup.check_compatible(row)


def _add_teacher_row(lineup: Lineup) -> None:
    s = lineup.s
    if s.teacher is None:
        lineup.add(Row(TEACHER, "PyTorch eager (teacher)", "fp32", family="teacher", status="unavailable: no --teacher given"))
        return
    if model_kind(s.teacher) != "torch":
        raise HBAFError(f"--teacher {s.teacher} is not a checkpoint folder; pass the folder `hbaf train --preset teacher --out` wrote")
    row = lineup.add(Row(TEACHER, "PyTorch eager (teacher)", "fp32", family="teacher", path=str(s.teacher),
                         size_mb=size_mb(s.teacher), spec=Spec(TEACHER, "PyTorch eager (teacher)", "torch", str(s.teacher), family="teacher")))
    lineup.open(row, fatal=True)
    student, teacher = lineup.backends[BASELINE], lineup.backends[TEACHER]
    if teacher.labels != student.labels:
        raise HBAFError(f"--teacher {s.teacher} has labels {teacher.labels}, the student {student.labels}; "
                        "pass the teacher the student was distilled from")
