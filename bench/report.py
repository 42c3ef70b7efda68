"""The benchmark's report: the header and tables (markdown, also printed), plain JSON, and the
latency plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hbaf.io import atomic_path


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
        *([f"defaults: {st['builtin']}"] if st.get("builtin") else []),
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
        f"last voiced sample -> event: p50 {e['speech_end_latency_ms']['p50']:.0f} ms, p90 {e['speech_end_latency_ms']['p90']:.0f} ms; "
        f"VAD end-of-speech decision -> event: p50 {lat['p50']:.0f} ms, p90 {lat['p90']:.0f} ms"
        + ("" if e["realtime"] else " (includes waiting behind earlier utterances, as the file is read faster than real time)"),
        f"processing only (without that wait): p50 {proc['p50']:.0f} ms, p90 {proc['p90']:.0f} ms"
        + (f"; utterances of 2-4 s: p50 {e['processing_2_4s_utterances_ms']['p50']:.0f} ms"
           if e.get("processing_2_4s_utterances_ms") else ""),
        f"share of compute: {share}; mean per utterance (ms): {stages}",
        *([f"speculative recognition: {sp['used']} used, {sp['discarded']} discarded, {sp['skipped_busy']} skipped (busy), "
           f"{sp['compute_s']:.2f} s of compute ({sp['wasted_s']:.2f} s discarded)"] if (sp := e.get("speculation")) else []),
        "cold start: model load {} s, first inference {} s, ASR load {} s, ASR first decode {} s; peak RSS {:.0f} MB".format(
            *(_num(e["cold_start"].get(k), ".3f") for k in ("model_load_s", "first_inference_s", "asr_load_s", "asr_first_s")),
            e["peak_rss_mb"]),
    ]
    return "\n".join(lines)


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _parity(row: dict[str, Any], key: str) -> str:
    cos = row.get(f"cosine_{key}")
    return "-" if cos is None else f"{row[f'max_abs_{key}']:.1e} / {cos:.5f}"


def format_recogniser(r: dict[str, Any]) -> str:
    """The three recogniser tables: audio encoder, decoder, recognition."""
    head = (f"{r['utterances']} utterances, {r['speech']}; {r['threads']} threads; p50 / p90 over {r['runs']} run(s) of each; "
            "speed-ups are p50 ratios measured in this run")
    enc = [[name, _ms(row["p50_ms"]), _ms(row["p90_ms"]), _x(row.get("vs_torch")), _x(row.get("vs_ct2")),
            _parity(row, "vs_torch"), _parity(row, "vs_ct2"), _pct(row.get("fusion", {}).get("top1_agreement_vs_ct2")),
            _pct(row.get("fusion", {}).get("accuracy"))] for name, row in r["encoder"].items()]
    fusion_n = next((row["fusion"]["utterances"] for row in r["encoder"].values() if "fusion" in row), None)
    dec = []
    for name, row in r["decoder"].items():
        b1, b5 = row["beam1"], row["beam5"]
        dec.append([name, _ms(b1["per_token_ms"]), _ms(b1["p50_ms"]), _ms(b5["p50_ms"]), _ms(b5["p90_ms"]),
                    _x(b5.get("vs_torch")), _x(b5.get("vs_ct2")), b1.get("identical_to_ct2", "-"), b5.get("identical_to_ct2", "-")])
    rec = [[name, _ms(row["p50_ms"]), _ms(row["p90_ms"]), _x(row.get("vs_torch")), _x(row.get("vs_ct2")),
            _pct(row["wer"]), row.get("identical_to_ct2", "-")] for name, row in r["recognition"].items()]
    return "\n".join([
        "## Recogniser", "", head, "",
        "### Audio encoder (one 10 s window)", "",
        _md_table(["form", "p50 ms", "p90 ms", "vs PyTorch", "vs CTranslate2", "states vs PyTorch (max / cosine)",
                   "states vs CTranslate2 (max / cosine)", "emotion top-1 = on CTranslate2's states", "emotion accuracy"], enc),
        *([f"(emotion columns: the fusion model on each form's states, {fusion_n} built-in test utterances, MELD-TTS: "
           "synthetic speech, reference texts)"] if fusion_n else []), "",
        "### Decoder (the same encoder output for every form)", "",
        _md_table(["form", "beam 1 ms/token", "beam 1 p50 ms", "beam 5 p50 ms", "beam 5 p90 ms", "beam 5 vs PyTorch",
                   "beam 5 vs CTranslate2", "tokens = CTranslate2 (beam 1)", "(beam 5)"], dec), "",
        f"### Recognition (per utterance, end to end, beam {r['beam']})", "",
        _md_table(["encoder + decoder", "p50 ms", "p90 ms", "vs PyTorch", "vs CTranslate2", "WER", "transcripts = today's"], rec),
    ])


def format_report(report: dict[str, Any]) -> str:
    parts = [format_header(report)]
    if "fusion" in report:
        parts.append(format_fusion(report))
    if "recogniser" in report:
        parts.append(format_recogniser(report["recogniser"]))
    if "e2e" in report:
        parts.append(format_e2e(report["e2e"]))
    return "\n\n".join(parts) + "\n"


def jsonable(obj: Any) -> Any:
    """Plain JSON: numpy scalars as numbers, NaN as null, infinities as the strings "inf"/"-inf"."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
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


def _pyplot() -> Any:
    """matplotlib's pyplot on the file-only backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    """Write ``fig`` as a PNG atomically and free it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    _pyplot().close(fig)
    return path


def plot_latency(path: Path, report: dict[str, Any]) -> Path | None:
    """Latency distribution per backend on the headline input, and p50 against utterance length."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    plt = _pyplot()
    f = report["fusion"]
    raw = f["latency_samples_ms"].get(f["primary_case"], {})
    rows = sorted((r for r in f["rows"] if raw.get(r["key"])), key=lambda r: r["p50_ms"] or 0.0)
    if not rows:
        return None
    names = [f"{r['backend']} {r['precision']}" for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 2.5 + 0.45 * len(rows)), gridspec_kw={"width_ratios": [3, 2]})
    ax1.boxplot([raw[r["key"]] for r in rows], orientation="horizontal", whis=(5, 95), widths=0.6)
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
    ax2.yaxis.set_major_formatter(ScalarFormatter())
    ax2.yaxis.set_minor_formatter(NullFormatter())
    ax2.grid(alpha=0.3, which="both")
    ax2.legend(fontsize=7)
    m = report["machine"]
    fig.suptitle(f"hbaf-edge bench: {m['cpu']}, {report['settings']['threads']} threads, GPU {m.get('gpu') or 'none'}", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_e2e(path: Path, e: dict[str, Any]) -> Path:
    """Per-utterance latency, stacked by stage."""
    plt = _pyplot()
    stages = ("endpoint", "queue", "asr", "features", "fusion")
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
    ax.set_xlabel("last voiced sample -> event (ms)")
    ax.set_title(f"end to end, real-time factor {e['real_time_factor']:.3f}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
