"""Cold start: library import, model load, first inference and memory of each backend.

By default each backend starts in a fresh process (``python -m bench --cold-start-child JOB``),
which reports one tagged JSON line; ``--quick`` keeps the numbers measured in the benchmark
process itself (load time and memory growth while opening, then the first call).
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from bench.backends import Spec, fit_feeds, open_spec
from bench.cases import Family
from bench.lineup import BASELINE, Lineup
from bench.machine import peak_rss_mb, pin_threads, rss_mb
from hbaf.contract import INPUT_NAMES
from hbaf.errors import HBAFError

CHILD_TAG = "HBAF_COLD_START "
CHILD_TIMEOUT_S = 900


def first_inference(lineup: Lineup, families: dict[str, Family]) -> None:
    """Each backend's first call in this process (inline cold start): a 3 s utterance at the
    start of a dialogue. A backend whose first call fails is marked failed."""
    for row in lineup.runnable():
        backend = lineup.backends[row.key]
        first_call = families[row.family].first_call
        assert first_call is not None
        feeds, why = fit_feeds(first_call, backend)
        if feeds is None:
            row.cold_start["first_inference_s"] = None
            row.notes.append(f"first call not measured: {why}")
            continue
        rss0 = rss_mb()
        t0 = time.perf_counter()
        try:
            backend.run(feeds)
        except Exception as err:  # e.g. torch.compile failing to compile: this backend is out, the others go on
            if row.key == BASELINE:
                raise
            row.fail("first inference", err)
            continue
        row.cold_start["first_inference_s"] = time.perf_counter() - t0
        row.cold_start["rss_growth_mb"] = row.cold_start.get("rss_growth_mb", 0.0) + rss_mb() - rss0
        row.cold_start["peak_rss_mb"] = peak_rss_mb()


def cold_start_processes(lineup: Lineup, families: dict[str, Family], work: Path) -> None:
    """Import, load, first inference and peak RSS of each runnable backend in a new process."""
    from tqdm import tqdm

    todo = [r for r in lineup.rows if r.ok and r.spec is not None]
    feeds_files = {}
    for fam in families.values():
        assert fam.first_call is not None
        feeds_files[fam.name] = work / f"first_call_{fam.name}.npz"
        np.savez(feeds_files[fam.name], **fam.first_call)
    env = dict(os.environ)  # the child imports this same source tree, installed or not
    src_root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([src_root, *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    for row in tqdm(todo, desc="cold start", unit="backend", leave=False):
        assert row.spec is not None
        job = work / f"cold_{row.key}.json"
        job.write_text(json.dumps({"spec": asdict(row.spec), "threads": lineup.s.threads, "feeds": str(feeds_files[row.family])}))
        inline = dict(row.cold_start)
        try:
            proc = subprocess.run([sys.executable, "-m", "bench", "--cold-start-child", str(job)],
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


def cold_start_child(job_file: Path) -> int:
    """Run in a fresh process: import, open, first and second call; one tagged JSON line on stdout."""
    from bench.report import jsonable

    job = json.loads(Path(job_file).read_text())
    spec = Spec(**job["spec"])
    threads = int(job["threads"])
    with np.load(job["feeds"]) as z:
        feeds = {k: z[k] for k in INPUT_NAMES}
    module = {"onnx": "onnxruntime", "engine": "tensorrt"}.get(spec.kind, "torch")
    preloaded = module in sys.modules
    t0 = time.perf_counter()
    try:
        importlib.import_module(module)
    except ImportError:
        pass  # the backend's own import then reports it
    import_s = time.perf_counter() - t0
    rss_imported = rss_mb()
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
              "peak_rss_mb": peak_rss_mb(), "gpu_peak_mb": gpu_peak}
    print(CHILD_TAG + json.dumps(jsonable(result)), flush=True)
    return 0
