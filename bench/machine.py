"""The machine a benchmark runs on: CPU, memory, GPU, library versions and load for the report
header; this process's resident memory; thread pinning."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import platform
import resource
import subprocess
import sys
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


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


def load_average() -> float | None:
    """The 1-minute load average, rounded (None where the OS has none)."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


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
        "load_average_1min": load_average(),
    }


def rss_mb() -> float:
    """Current resident memory of this process in MB (Linux), else the peak."""
    for line in _read("/proc/self/status").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return peak_rss_mb()


def peak_rss_mb() -> float:
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
