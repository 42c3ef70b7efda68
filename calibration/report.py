"""INT8 pipelines and their reports: accuracy FP32 vs INT8, agreement, size, CPU latency.

Every number in a report comes from one process on one machine: accuracy by sequential
dialogue evaluation on the runtime's offline path (``edge_runtime.offline.run_dialogues``:
ONNX Runtime CPU backends, each model feeding its own utterance embeddings back as the
dialogue memory, as the runtime does), latency by the benchmark's timer
(``edge_runtime.timing``: backends taking turns) on batch-1 calls of a real 3 s utterance
with 2 intra-op threads. Reports are written as JSON + markdown next to the models
(atomically). ``hbaf-export all`` (``export.pipeline``) runs ``quantize_onnx`` and ``int8_report``
after the ONNX export and parity.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from calibration.data import (
    EvalSet,
    build_calibration_set,
    build_eval_set,
    evaluate,
    open_fp32,
)
from calibration.quantize import (
    FLAVOURS,
    METHODS,
    QuantResult,
    calibrate,
    copy_tokenizer_next_to,
    int8_name,
    prepare,
    quantize_dynamic_cpu,
    quantize_flavour,
    work_dir,
)
from edge_runtime.backends import Backend, OnnxBackend, onnx_cpu
from hbaf.contract import SAMPLE_RATE, feature_format
from hbaf.errors import HBAFError
from hbaf.io import write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)

DEFAULT_METHOD = "percentile"
LATENCY_KEYS = ("p50_ms", "p90_ms", "min_ms", "mean_ms", "runs")


def machine() -> dict:
    import onnxruntime

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    load = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    return {"cpu": cpu, "cores": os.cpu_count(), "load_average_1min": load, "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__}


# ----------------------------------------------------------------------------- accuracy and agreement


def accuracy_report(probs: np.ndarray, data: EvalSet, labels: Sequence[str]) -> dict:
    from hbaf.metrics import classification_report

    return classification_report(data.y, probs.argmax(1), list(labels))


def agreement(ref: np.ndarray, probs: np.ndarray) -> dict:
    return {"top1_agreement": float((ref.argmax(1) == probs.argmax(1)).mean()),
            "max_abs_prob_diff": float(np.abs(ref - probs).max()),
            "mean_abs_prob_diff": float(np.abs(ref - probs).mean())}


# ----------------------------------------------------------------------------- latency


def latency_feeds(backend: Backend, data: EvalSet, ref: dict, seconds: float = 3.0) -> tuple[dict[str, np.ndarray], dict]:
    """Batch-1 feeds of a real ~3 s utterance (cropped to ``seconds``) with a full memory
    (``ref``'s utterance embeddings)."""
    utts = data.dialogues
    fmt = feature_format(backend.spec.feature_kind)
    frames = fmt.frames_for(int(seconds * SAMPLE_RATE))
    lengths = np.array([utts.feats[i].shape[0] for i in range(len(utts))])
    long_enough = np.flatnonzero(lengths >= frames)
    i = int(long_enough[0]) if long_enough.size else int(lengths.argmax())
    feats = utts.feats[i][:frames]
    ids, mask = data.tokenizer([utts.texts[i]])
    k = ref["memory"].shape[1]
    emb = ref["utt_emb"]
    memory = np.stack([emb[j % len(emb)] for j in range(k)]) if k else np.zeros((0, emb.shape[1]), np.float32)
    feeds = backend.feeds(feats, ids, mask, memory, np.ones((k,), np.float32))
    return feeds, {"frames": int(feats.shape[0]), "seconds": round(feats.shape[0] / fmt.frames_per_second, 2),
                   "tokens": int(ids.shape[1]), "memory_slots": int(k), "text": utts.texts[i]}


def measure_latency(backends: dict[str, Backend], feeds: dict[str, np.ndarray], *, warmup: int = 10,
                    runs: int = 100) -> dict[str, dict]:
    """p50/p90/min/mean in ms per backend on the same feeds, timed taking turns
    (``edge_runtime.timing.time_in_turns``, the benchmark's timer)."""
    from tqdm import tqdm

    from edge_runtime.timing import latency_stats, time_in_turns

    calls = {name: functools.partial(b.run, feeds) for name, b in backends.items()}
    with tqdm(total=(warmup + runs) * len(calls), desc="latency", unit="call", leave=False) as bar:
        times = time_in_turns(calls, runs=runs, warmup=warmup, progress=bar.update)
    return {name: {k: latency_stats(ms)[k] for k in LATENCY_KEYS} for name, ms in times.items()}


# ----------------------------------------------------------------------------- reports


def evaluate_variants(fp32: OnnxBackend, variants: dict[str, str], data: EvalSet, *, threads: int = 2,
                      latency_runs: int = 100, torch_checkpoint: str | os.PathLike | None = None) -> dict:
    """Accuracy, agreement with FP32, size and latency for the FP32 model and each variant (ONNX
    Runtime CPU), plus PyTorch eager latency when ``torch_checkpoint`` is given."""
    labels = fp32.labels
    backends: dict[str, Backend] = {"fp32": fp32, **{name: onnx_cpu(path, threads) for name, path in variants.items()}}
    outputs = {name: evaluate(b, data, desc=f"evaluate {name}") for name, b in backends.items()}
    ref = outputs["fp32"]
    rows: dict[str, dict] = {}
    for name, backend in backends.items():
        rep = accuracy_report(outputs[name]["probs"], data, labels)
        rows[name] = {
            "path": str(backend.path), "size_mb": round(backend.path.stat().st_size / 1e6, 3),
            "weighted_f1": rep["weighted_f1"], "accuracy": rep["accuracy"], "macro_f1": rep["macro_f1"],
            "unweighted_accuracy": rep["unweighted_accuracy"],
            **agreement(ref["probs"], outputs[name]["probs"]),
            "max_utt_emb_diff": float(np.abs(ref["utt_emb"] - outputs[name]["utt_emb"]).max()),
            "confusion_matrix": rep["confusion_matrix"],
        }
    feeds, utt = latency_feeds(fp32, data, ref)
    if torch_checkpoint is not None:
        from edge_runtime.backends import TorchBackend

        backends["pytorch-fp32"] = TorchBackend(torch_checkpoint, threads=threads)
    lat = measure_latency(backends, feeds, runs=latency_runs)
    for name, value in lat.items():
        rows.setdefault(name, {"path": "(checkpoint, PyTorch eager)"}).update({k: round(v, 3) if isinstance(v, float) else v
                                                                                 for k, v in value.items()})
    fp32_p50 = lat["fp32"]["p50_ms"]
    fp32_size = rows["fp32"]["size_mb"]
    for name, row in rows.items():
        if row.get("size_mb"):
            row["size_ratio_vs_fp32"] = round(fp32_size / row["size_mb"], 3)
        row["speedup_vs_ort_fp32"] = round(fp32_p50 / row["p50_ms"], 3) if row.get("p50_ms") else None
        if "pytorch-fp32" in lat:
            row["speedup_vs_pytorch_fp32"] = round(lat["pytorch-fp32"]["p50_ms"] / row["p50_ms"], 3) if row.get("p50_ms") else None
    return {"rows": rows, "latency_utterance": utt, "latency_threads": threads, "eval_split": data.split,
            "eval_utterances": len(data), "eval_dialogues": len(data.dialogues.groups), "machine": machine(),
            "labels": list(labels)}


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def table(rows: dict[str, dict], *, method_flavour: dict[str, tuple[str, str]] | None = None) -> str:
    """method | flavour | weighted F1 | top-1 agreement | max prob diff | size MB | p50 ms (markdown)."""
    lines = ["| method | flavour | weighted F1 | top-1 agreement vs FP32 | max prob diff | size MB | ORT CPU p50 ms | p90 ms |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        method, flavour = (method_flavour or {}).get(name, ("-", name))
        f1 = _pct(r.get("weighted_f1")) if "weighted_f1" in r else "-"
        agree = _pct(r.get("top1_agreement")) if "top1_agreement" in r else "-"
        diff = f"{r['max_abs_prob_diff']:.4f}" if "max_abs_prob_diff" in r else "-"
        size = f"{r['size_mb']:.1f}" if "size_mb" in r else "-"
        p50 = f"{r['p50_ms']:.2f}" if r.get("p50_ms") is not None else "-"
        p90 = f"{r['p90_ms']:.2f}" if r.get("p90_ms") is not None else "-"
        lines.append(f"| {method} | {flavour} | {f1} | {agree} | {diff} | {size} | {p50} | {p90} |")
    return "\n".join(lines)


def _markdown(title: str, report: dict, body: str) -> str:
    m = report["machine"]
    utt = report["latency_utterance"]
    lines = [f"# {title}", "", body, "",
             f"Accuracy: sequential dialogue evaluation with ONNX Runtime on the {report['eval_split']} split "
             f"({report['eval_utterances']} utterances, {report['eval_dialogues']} dialogues); agreement and probability "
             "differences are against the FP32 ONNX model on the same utterances.",
             f"Latency: batch 1, {report['latency_threads']} intra-op thread{'s' if report['latency_threads'] != 1 else ''}, one {utt['seconds']} s utterance "
             f"({utt['frames']} frames, {utt['tokens']} tokens, {utt['memory_slots']} memory slots), all models measured "
             f"in turn in one process; CPU {m['cpu']} ({m['cores']} cores, 1-min load {m['load_average_1min']}), "
             f"onnxruntime {m['onnxruntime']}."]
    rows = report["rows"]
    base = rows.get("fp32", {})
    summary = []
    for name, r in rows.items():
        if name in ("fp32", "pytorch-fp32") or "weighted_f1" not in r or "weighted_f1" not in base:
            continue
        line = (f"- {name}: weighted F1 {100 * (r['weighted_f1'] - base['weighted_f1']):+.1f} points vs FP32, "
                f"{r['size_ratio_vs_fp32']:.2f}x smaller, p50 {r['speedup_vs_ort_fp32']:.2f}x vs ONNX Runtime FP32")
        if r.get("speedup_vs_pytorch_fp32"):
            line += f", {r['speedup_vs_pytorch_fp32']:.2f}x vs PyTorch eager FP32"
        summary.append(line)
    same, cpu = rows.get("fp32-cpu-graph", {}), rows.get("int8-cpu", {})
    if same.get("p50_ms") and cpu.get("p50_ms"):
        summary.append(f"- int8-cpu vs FP32 of the same ONNX Runtime CPU graph (quantization alone): p50 "
                       f"{same['p50_ms'] / cpu['p50_ms']:.2f}x")
    if summary:
        lines += ["", "Against FP32 (targets: <= 1 point weighted-F1 drop, <= 1/3.5 the size, >= 1.5x / >= 4x faster p50 "
                  "than ONNX Runtime / PyTorch FP32 for the CPU flavour):", *summary]
    if report.get("notes"):
        lines += ["", "Notes:", *[f"- {note}" for note in report["notes"]]]
    return "\n".join(lines) + "\n"


def _notes(rows: dict[str, dict]) -> list[str]:
    notes = []
    base = rows.get("fp32", {}).get("weighted_f1")
    for name, r in rows.items():
        if name in ("fp32", "pytorch-fp32") or base is None or "weighted_f1" not in r:
            continue
        drop = 100 * (base - r["weighted_f1"])
        if drop > 1.0:
            notes.append(f"{name}: post-training INT8 loses {drop:.1f} points of weighted F1 (> 1); "
                         "consider another calibration method or quantization-aware fine-tuning (not done here)")
    return notes


def write_report(out_dir: str | os.PathLike, name: str, title: str, report: dict, body: str) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    report.setdefault("notes", _notes(report.get("rows", {})))
    write_json_atomic(out_dir / f"{name}.json", report)
    write_text_atomic(out_dir / f"{name}.md", _markdown(title, report, body))
    return out_dir / f"{name}.json", out_dir / f"{name}.md"


# ----------------------------------------------------------------------------- pipelines


def quantize_onnx(fp32: str | os.PathLike, manifest: str | os.PathLike, out_dir: str | os.PathLike, *,
                  flavours: Sequence[str] = FLAVOURS, method: str = DEFAULT_METHOD, num: int = 512, seed: int = 0,
                  tokenizer: str | None = None, threads: int = 2, workers: int | None = None,
                  include_conv: bool = True, trt_int8_embedding: bool = False) -> list[QuantResult]:
    """Calibrate once with ``method`` and write each flavour as ``<stem>.int8-<flavour>.onnx`` in ``out_dir``.

    ``trt_int8_embedding``: store the trt flavour's word-embedding table as per-row int8 behind a
    DequantizeLinear (axis 0) feeding the Gather, as the cpu flavour does in its own form; it
    makes that file ~1/3.6 of FP32, but whether a device's TensorRT takes the DQ -> Gather
    pattern has to be checked there (`hbaf-export engine`), so it is off by default."""
    for f in flavours:
        if f not in FLAVOURS:
            raise HBAFError(f"unknown flavour '{f}'; choose trt, cpu or both")
    backend = open_fp32(fp32, threads)
    out_dir = Path(out_dir)
    calib = build_calibration_set(backend, manifest, num=num, seed=seed, tokenizer=tokenizer, workers=workers)
    results = []
    with work_dir(out_dir) as tmp:
        pre = prepare(fp32, Path(tmp) / "prepared.onnx")
        ranges = calibrate(pre, calib, method, tmp, include_conv=include_conv)
        for flavour in flavours:
            emb = True if (flavour == "trt" and trt_int8_embedding) else None
            results.append(quantize_flavour(pre, ranges, flavour, out_dir / int8_name(fp32, flavour), method=method,
                                            calib=calib, include_conv=include_conv, embedding_int8=emb, source=fp32))
            log.info("wrote %s (%.1f MB)", results[-1].path, results[-1].size_mb)
    copy_tokenizer_next_to(fp32, out_dir)
    return results


def int8_report(fp32: str | os.PathLike, results: list[QuantResult], manifest: str | os.PathLike, out_dir: str | os.PathLike, *,
                split: str = "test", limit: int | None = None, threads: int = 2, latency_runs: int = 100,
                tokenizer: str | None = None, workers: int | None = None, torch_checkpoint: str | os.PathLike | None = None,
                extra: dict | None = None, name: str = "int8_report", fp32_variants: dict[str, str] | None = None) -> dict:
    """Accuracy, agreement, size and latency of the FP32 model and the INT8 ``results`` (+ PyTorch eager
    latency of ``torch_checkpoint``); ``fp32_variants``: other FP32 graphs of the same model (the ONNX
    Runtime CPU graph) measured alongside."""
    backend = open_fp32(fp32, threads)
    data = build_eval_set(backend, manifest, split=split, limit=limit, tokenizer=tokenizer, workers=workers)
    variants = {**(fp32_variants or {}), **{f"int8-{r.flavour}": r.path for r in results}}
    report = evaluate_variants(backend, variants, data, threads=threads, latency_runs=latency_runs,
                               torch_checkpoint=torch_checkpoint)
    report["quantization"] = {f"int8-{r.flavour}": {k: v for k, v in asdict(r).items() if k not in ("quantized_nodes",)}
                              for r in results}
    report.update(extra or {})
    mf = {"fp32": ("-", "fp32"), "pytorch-fp32": ("-", "pytorch eager fp32"), "fp32-cpu-graph": ("-", "fp32, ORT CPU graph"),
          **{f"int8-{r.flavour}": (r.method, r.flavour) for r in results}}
    body = table(report["rows"], method_flavour=mf)
    write_report(out_dir, name, "HBAF INT8 report", report, body)
    report["table"] = body
    return report


def compare_calibration(fp32: str | os.PathLike, manifest: str | os.PathLike, out_dir: str | os.PathLike, *,
                        methods: Sequence[str] = METHODS, num: int = 512, seed: int = 0, dynamic: bool = True,
                        split: str = "test", limit: int | None = None, threads: int = 2, latency_runs: int = 100,
                        tokenizer: str | None = None, workers: int | None = None, include_conv: bool = True) -> dict:
    """Every method x flavour (+ dynamic INT8) from one calibration set; one table, JSON + markdown."""
    for m in methods:
        if m not in METHODS:
            raise HBAFError(f"unknown calibration method '{m}'; choose from {', '.join(METHODS)}")
    backend = open_fp32(fp32, threads)
    out_dir = Path(out_dir)
    data = build_eval_set(backend, manifest, split=split, limit=limit, tokenizer=tokenizer, workers=workers)
    calib = build_calibration_set(backend, manifest, num=num, seed=seed, tokenizer=tokenizer, workers=workers)
    variants: dict[str, str] = {}
    mf: dict[str, tuple[str, str]] = {"fp32": ("-", "fp32")}
    quant: dict[str, dict] = {}
    timings: dict[str, float] = {}
    with work_dir(out_dir) as tmp:
        pre = prepare(fp32, Path(tmp) / "prepared.onnx")
        for method in methods:
            t0 = time.perf_counter()
            ranges = calibrate(pre, calib, method, tmp, include_conv=include_conv)
            timings[method] = round(time.perf_counter() - t0, 1)
            for flavour in FLAVOURS:
                r = quantize_flavour(pre, ranges, flavour, out_dir / int8_name(fp32, flavour, method), method=method,
                                     calib=calib, include_conv=include_conv, source=fp32)
                key = f"{method}/{flavour}"
                variants[key], mf[key] = r.path, (method, flavour)
                quant[key] = {k: v for k, v in asdict(r).items() if k != "quantized_nodes"}
        if dynamic:
            r = quantize_dynamic_cpu(pre, out_dir / int8_name(fp32, "cpu", "dynamic"), source=fp32)
            variants["dynamic/cpu"], mf["dynamic/cpu"] = r.path, ("dynamic (no calibration)", "cpu")
            quant["dynamic/cpu"] = {k: v for k, v in asdict(r).items() if k != "quantized_nodes"}
    copy_tokenizer_next_to(fp32, out_dir)
    report = evaluate_variants(backend, variants, data, threads=threads, latency_runs=latency_runs)
    report.update(quantization=quant, calibration_seconds=timings,
                  calibration={"n": calib.n, "dialogues": calib.dialogues, "split": calib.split, "seed": seed,
                               "manifest": str(manifest)})
    body = table(report["rows"], method_flavour=mf)
    write_report(out_dir, "calibration_comparison", "HBAF INT8 calibration comparison", report, body)
    report["table"] = body
    return report
