"""One fusion benchmark, start to end: open the rows, build the inputs, cold start, warm latency,
accuracy, and the report's ``fusion`` part (rows, cases, evaluation, the DESIGN targets)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bench.cases import Case, Family, build_case_feeds, build_cases, case_key, memory_vectors, select_clips
from bench.cold_start import cold_start_processes, first_inference
from bench.evaluation import EvalData, evaluate, load_eval_data
from bench.lineup import BASELINE, TEACHER, Lineup, Row, Settings, open_lineup
from bench.timing import measure

log = logging.getLogger(__name__)

# (DESIGN "Targets") student INT8 on ONNX Runtime CPU
TARGET_SPEEDUP_VS_TORCH = 4.0
TARGET_SPEEDUP_VS_ORT = 1.5
TARGET_MAX_WF1_DROP = 0.01
TARGET_SIZE_RATIO = 3.5


class FusionBench:
    """Open the backends, build the inputs, time, evaluate, and assemble the report."""

    def __init__(self, s: Settings) -> None:
        self.s = s
        self.lineup: Lineup | None = None
        self.families: dict[str, Family] = {}
        self.cases: list[Case] = []
        self.data: EvalData | None = None
        self.raw: dict[str, dict[str, list[float]]] = {}  # case -> row -> timed calls (ms)
        lengths = s.lengths
        self.primary_seconds = 3.0 if 3.0 in lengths else lengths[len(lengths) // 2]
        self.primary = case_key(self.primary_seconds, min(s.batches))
        self.throughput = case_key(self.primary_seconds, max(s.batches))

    @property
    def rows(self) -> list[Row]:
        return self.lineup.rows if self.lineup is not None else []

    def open(self) -> None:
        self.lineup = open_lineup(self.s)

    def load_inputs(self) -> None:
        """Evaluation utterances (features via the shared cache), clips, per-family feeds; each
        backend's first call (inline cold start) comes before the warm inputs are built."""
        assert self.lineup is not None
        s, backends = self.s, self.lineup.backends
        ref = backends[BASELINE]
        self.data = data = load_eval_data(s.manifest, ref.labels, s.eval_split, s.eval_limit, s.workers)
        for name, key in (("student", BASELINE), ("teacher", TEACHER)):
            if key in backends:
                self.families[name] = Family(name, key, backends[key].spec, backends[key].tokenizer())
        frames = [data.feats[i].shape[0] for i in range(len(data.records))]
        from hbaf.contract import feature_format

        hop = feature_format(ref.spec.feature_kind).hop  # samples per frame of the model's audio input
        clips = {sec: select_clips(data.records, frames, sec, max(s.batches), hop) for sec in s.lengths}
        for fam in self.families.values():
            k, d = fam.spec.context_size, fam.spec.memory_dim
            fam.first_call, _ = build_case_feeds(clips[self.primary_seconds], self.primary_seconds, 1, fam,
                                                 np.zeros((k, d), np.float32), memory_filled=False)
        first_inference(self.lineup, self.families)
        for fam in self.families.values():
            fam.memory = memory_vectors(backends[fam.baseline], fam, data.feats, data.texts)
        self.cases = build_cases(clips, s.lengths, s.batches, list(self.families.values()))

    def run(self, work: Path) -> dict[str, Any]:
        """Everything, in order; returns the report's fusion part (see ``assemble``)."""
        stages: dict[str, float] = {}

        def timed(name: str, fn: Callable[[], None]) -> None:
            t0 = time.perf_counter()
            fn()
            stages[name] = round(time.perf_counter() - t0, 2)
            log.info("bench stage %s: %.1f s", name, stages[name])

        timed("open", self.open)
        assert self.lineup is not None
        lineup = self.lineup
        timed("inputs", self.load_inputs)
        if self.s.cold_start == "process":
            timed("cold_start", lambda: cold_start_processes(lineup, self.families, work))
        elif self.s.cold_start == "off":
            for row in self.rows:
                row.cold_start = {}

        def latency() -> None:
            self.raw = measure(lineup, self.cases, self.families, runs=self.s.runs, warmup=self.s.warmup)

        timed("latency", latency)
        if self.s.eval_limit != 0:
            assert self.data is not None
            data = self.data
            timed("evaluation", lambda: evaluate(lineup, self.families, data))
        report = self.assemble()
        report["stage_seconds"] = stages
        return report

    def assemble(self) -> dict[str, Any]:
        base = next(r for r in self.rows if r.key == BASELINE)
        rows_out = [self._row_dict(row, base) for row in self.rows]
        evaluated = self.s.eval_limit != 0 and self.data is not None
        return {
            "baseline": BASELINE,
            "primary_case": self.primary,
            "throughput_case": self.throughput,
            "cases": [{"key": c.key, **c.info} for c in self.cases],
            "evaluation": {
                "split": self.data.split if self.data else None,
                "utterances": len(self.data.records) if evaluated else 0,
                "dialogues": len(self.data.groups) if evaluated else 0,
                "split_utterances": self.data.split_total if self.data else None,
                "limit": self.s.eval_limit,
                "note": self.data.note if self.data else None,
            },
            "rows": rows_out,
            "targets": targets({d["key"]: d for d in rows_out}),
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


def targets(rows: dict[str, dict]) -> list[dict[str, Any]]:
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
