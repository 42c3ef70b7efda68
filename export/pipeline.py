"""``hbaf-export all``: checkpoint -> FP32 ONNX (contract graph and ONNX Runtime CPU graph) ->
parity with PyTorch -> INT8 (the TensorRT form from the contract graph, the CPU form from the
CPU graph) -> one report of accuracy, agreement, size and latency -> the recogniser's graphs
(``hbaf-export asr``'s, into OUT/asr, listed in the report; ``asr=False`` leaves them out).

The INT8 stages and the report are calibration's (``calibration.report``); this module only
strings the export's own steps and calibration's together, which is why it sits in export,
the layer above calibration.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from calibration.report import DEFAULT_METHOD, int8_report, quantize_onnx
from hbaf.io import write_json_atomic


def export_all(checkpoint: str | os.PathLike, manifest: str | os.PathLike, out_dir: str | os.PathLike, *,
               method: str = DEFAULT_METHOD, num: int = 512, seed: int = 0, parity_n: int = 64, opset: int = 17,
               split: str = "test", limit: int | None = None, threads: int = 2, latency_runs: int = 100,
               workers: int | None = None, name: str = "model", trt_int8_embedding: bool = False, asr: bool = True) -> dict:
    """Checkpoint -> FP32 ONNX -> parity -> INT8 (trt + cpu) -> report -> (``asr``) the recogniser's
    graphs in ``out_dir/asr``, with a progress bar over the stages."""
    from tqdm import tqdm

    from edge_runtime.backends import TorchBackend
    from export.onnx_export import export_onnx
    from export.parity import parity
    from hbaf.contract import GRAPH_ORT_CPU
    from hbaf.data.manifest import load_manifest

    out_dir = Path(out_dir)
    labels = TorchBackend(checkpoint).labels  # fail fast on a bad checkpoint
    load_manifest(manifest, labels=labels)  # fail fast on a bad manifest
    stages = tqdm(total=5 if asr else 4, desc="hbaf-export all", unit="stage")
    stages.set_postfix_str("export ONNX")
    fp32 = export_onnx(checkpoint, out_dir / f"{name}.onnx", opset=opset)
    cpu_graph = export_onnx(checkpoint, out_dir / f"{name}.ort.onnx", graph=GRAPH_ORT_CPU)
    stages.update(1)
    stages.set_postfix_str("parity")
    par = parity(checkpoint, fp32, manifest, n=parity_n, threads=threads, workers=workers)
    write_json_atomic(out_dir / "parity.json", par)
    par_cpu = parity(checkpoint, cpu_graph, manifest, n=parity_n, threads=threads, workers=workers)
    write_json_atomic(out_dir / "parity.ort.json", par_cpu)
    stages.update(1)
    stages.set_postfix_str("calibrate + quantize")
    # the TensorRT form comes from the contract graph, the CPU form from the ONNX Runtime CPU graph
    results = quantize_onnx(fp32, manifest, out_dir, flavours=["trt"], method=method, num=num, seed=seed, threads=threads,
                            workers=workers, trt_int8_embedding=trt_int8_embedding)
    results += quantize_onnx(cpu_graph, manifest, out_dir, flavours=["cpu"], method=method, num=num, seed=seed,
                             threads=threads, workers=workers)
    stages.update(1)
    stages.set_postfix_str("evaluate + latency")
    report = int8_report(fp32, results, manifest, out_dir, split=split, limit=limit, threads=threads,
                         latency_runs=latency_runs, workers=workers, torch_checkpoint=checkpoint,
                         extra={"parity": par, "parity_ort_cpu_graph": par_cpu}, name="report",
                         fp32_variants={"fp32-cpu-graph": str(cpu_graph)})
    stages.update(1)
    if asr:
        stages.set_postfix_str("the recogniser's graphs")
        report["asr"] = export_recogniser(out_dir / ASR_DIR)
        add_recogniser_to_report(out_dir, report["asr"])
        stages.update(1)
    stages.close()
    return report


ASR_DIR = "asr"  # the recogniser's graphs in an export folder
ENGINES_DIR = "engines"  # every engine of an export folder, the fusion model's and the recogniser's


def export_recogniser(asr_dir: str | os.PathLike, asr: str | None = None) -> dict:
    """The recogniser's graphs in ``asr_dir``, as ``hbaf-export asr --out asr_dir`` writes them
    (export.asr_export.export_asr, every precision), unless the folder already holds them from
    this Whisper model (then they are kept: about 35 s saved on 2 cores). Returns {"folder",
    "kept", "files": {"<role>.<precision>": file name}}."""
    from export.asr_export import PRECISIONS, export_asr, graph_files, graph_model_name, is_current_export

    folder = Path(asr_dir)
    kept = is_current_export(folder, PRECISIONS, asr)
    if kept:
        written = {f"{role}.{p}": f for role, p, f in graph_files(folder, graph_model_name(asr), PRECISIONS)}
    else:
        written = export_asr(folder, asr=asr, precisions=PRECISIONS)
    return {"folder": str(folder), "kept": kept, "files": {k: Path(v).name for k, v in written.items()}}


def add_recogniser_to_report(out_dir: str | os.PathLike, asr: dict, name: str = "report") -> None:
    """List the recogniser's graphs in ``report.json`` and ``report.md`` (written by calibration's report)."""
    from hbaf.io import write_text_atomic

    out_dir = Path(out_dir)
    data = json.loads((out_dir / f"{name}.json").read_text(encoding="utf-8"))
    data["asr"] = asr
    write_json_atomic(out_dir / f"{name}.json", data)
    folder = Path(asr["folder"])
    rel = folder.relative_to(out_dir) if folder.is_relative_to(out_dir) else folder
    lines = ["", "## The recogniser's graphs (Whisper, `hbaf-export asr`)", "",
             f"In `{rel}/`" + (" (kept: already exported from this Whisper model)" if asr["kept"] else "")
             + "; the runtime uses them with `--asr-encoder` / `--asr-decoder`, and their fp16 TensorRT engines, "
             "built on the device, by default there:", ""]
    lines += [f"- `{f}` ({(folder / f).stat().st_size / 1e6:.1f} MB)" for f in asr["files"].values()]
    md = out_dir / f"{name}.md"
    write_text_atomic(md, md.read_text(encoding="utf-8").rstrip("\n") + "\n" + "\n".join(lines) + "\n")


def build_asr_engines(asr_dir: str | os.PathLike, engines_dir: str | os.PathLike, asr: str | None = None) -> list[Path]:
    """The recogniser's default engines, built on this device: fp16 from the FP32 graph of the encoder,
    the decoder's first step and its later steps (``hbaf-export engine``'s builder, each graph's own
    profile). No INT8 encoder engine: its Q/DQ graph is short of the 99 % emotion-agreement target
    (docs/RECOGNISER.md), so no default would run it; ``hbaf-export engine --onnx
    ...encoder.int8-trt.onnx --precision int8`` builds it."""
    from edge_runtime.asr_defaults import ENGINE_ROLES, ENGINE_SOURCE_PRECISION
    from export.asr_export import graph_model_name
    from export.engine import EngineBuilder
    from hbaf.contract import asr_graph_name
    from hbaf.errors import HBAFError

    name = graph_model_name(asr)
    sources = [Path(asr_dir) / asr_graph_name(name, role, ENGINE_SOURCE_PRECISION) for role in ENGINE_ROLES]
    missing = [p.name for p in sources if not p.is_file()]
    if missing:
        raise HBAFError(f"the recogniser's engines are built from its FP32 graphs and {missing[0]} is not in {asr_dir}; "
                        f"export them with `hbaf-export asr --out {asr_dir}` (fp32 among --precision)")
    built = []
    for onnx_file in sources:
        engine_path, _ = EngineBuilder(onnx_file, "fp16").build(engines_dir)
        built.append(Path(engine_path))
    return built
