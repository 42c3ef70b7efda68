"""``hbaf-export all``: checkpoint -> FP32 ONNX (contract graph and ONNX Runtime CPU graph) ->
parity with PyTorch -> INT8 (the TensorRT form from the contract graph, the CPU form from the
CPU graph) -> one report of accuracy, agreement, size and latency.

The INT8 stages and the report are calibration's (``calibration.report``); this module only
strings the export's own steps and calibration's together, which is why it sits in export,
the layer above calibration.
"""

from __future__ import annotations

import os
from pathlib import Path

from calibration.report import DEFAULT_METHOD, int8_report, quantize_onnx
from hbaf.io import write_json_atomic


def export_all(checkpoint: str | os.PathLike, manifest: str | os.PathLike, out_dir: str | os.PathLike, *,
               method: str = DEFAULT_METHOD, num: int = 512, seed: int = 0, parity_n: int = 64, opset: int = 17,
               split: str = "test", limit: int | None = None, threads: int = 2, latency_runs: int = 100,
               workers: int | None = None, name: str = "model", trt_int8_embedding: bool = False) -> dict:
    """Checkpoint -> FP32 ONNX -> parity -> INT8 (trt + cpu) -> report, with a progress bar over the stages."""
    from tqdm import tqdm

    from edge_runtime.backends import TorchBackend
    from export.onnx_export import export_onnx
    from export.parity import parity
    from hbaf.contract import GRAPH_ORT_CPU
    from hbaf.data.manifest import load_manifest

    out_dir = Path(out_dir)
    labels = TorchBackend(checkpoint).labels  # fail fast on a bad checkpoint
    load_manifest(manifest, labels=labels)  # fail fast on a bad manifest
    stages = tqdm(total=4, desc="hbaf-export all", unit="stage")
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
    stages.close()
    return report
