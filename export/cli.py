"""`hbaf-export`: the one export entry — checkpoint -> ONNX -> INT8 (Q/DQ) -> TensorRT engine.

    hbaf-export all --checkpoint DIR --manifest M --out DIR          (every format below, one report)
    hbaf-export all --checkpoint default                              (the packaged student, built-in utterances,
                                                                       into ./hbaf-models, the recogniser's graphs into
                                                                       ./hbaf-models/asr; engines where TensorRT is)
    hbaf-export onnx --checkpoint DIR --out model.onnx [--graph contract|ort-cpu] [--parity-manifest M]
    hbaf-export parity --checkpoint DIR --onnx model.onnx --manifest M
    hbaf-export int8 --onnx model.onnx --manifest M --flavour trt|cpu|both --method percentile --num 512 --out DIR
    hbaf-export compare-calibration --onnx model.onnx --manifest M --out DIR
    hbaf-export engine --onnx model.int8-trt.onnx --precision int8 --out engines/   (on the device: TensorRT)
    hbaf-export torch-trt --checkpoint DIR --precision fp16 --out student.fp16.ep   (on the device: Torch-TensorRT)
    hbaf-export asr --out DIR [--engines DIR]                          (the recogniser's encoder and decoder graphs;
                                                                       --engines: their fp16 engines, on the device)

Export sits above calibration: ``int8`` and ``compare-calibration`` run ``calibration.report``,
``all`` runs ``export.pipeline`` (the export's steps and calibration's, in order).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from export.onnx_export import EXPORTERS
from hbaf.contract import (
    GRAPH_CONTRACT,
    GRAPHS,
    MAX_FRAMES,
    MAX_TOKENS,
    PRECISIONS,
    Profiles,
    ShapeProfile,
    format_dims,
    read_onnx,
    spec_from_onnx,
)
from hbaf.errors import ArgumentParser, HBAFError, cli_entry

# What `hbaf-export all --name NAME` writes into --out: (file, what it is).
FORMATS = (
    ("NAME.onnx", "FP32, the export contract (TensorRT and every runtime)"),
    ("NAME.ort.onnx", "FP32, the ONNX Runtime CPU graph"),
    ("parity.json, parity.ort.json", "PyTorch vs ONNX Runtime on real utterances"),
    ("NAME.int8-trt.onnx", "symmetric s8 Q/DQ for TensorRT, from NAME.onnx"),
    ("NAME.int8-cpu.onnx", "u8/s8 for ONNX Runtime CPU, from NAME.ort.onnx"),
    ("report.json, report.md", "weighted F1, top-1 agreement, max prob diff, size, CPU latency"),
    ("tokenizer.json", "the checkpoint's tokenizer"),
    ("asr/whisper-tiny.en.*.onnx", "the recogniser's graphs (hbaf-export asr: encoder, decoder first step and later steps; "
                                   "fp32, fp16, int8-cpu, encoder int8-trt); --asr off leaves them out"),
    ("engines/*.engine + .json", "TensorRT engines where TensorRT imports: the model's (int8 from NAME.int8-trt.onnx, fp16 "
                                 "from NAME.onnx) and the recogniser's (fp16 from its three fp32 graphs)"),
)
DEFAULT_OUT = "hbaf-models"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads (default %(default)s)")
    p.add_argument("--workers", type=int, default=None, help="feature-extraction processes (default: all cores)")
    p.add_argument("--tokenizer", default=None, help="tokenizer.json (default: next to the ONNX file, else the source checkpoint's)")


def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--eval-split", default="test", help="split used for accuracy (default %(default)s)")
    p.add_argument("--eval-limit", type=int, default=None, help="evaluate on at most N utterances (whole dialogues)")
    p.add_argument("--latency-runs", type=int, default=100, help="timed batch-1 calls per model (default %(default)s)")


def _calib_args(p: argparse.ArgumentParser, method_default: str | None = "percentile") -> None:
    p.add_argument("--num", type=int, default=512, help="calibration utterances (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration-dialogue draw (default %(default)s)")
    if method_default is not None:
        p.add_argument("--method", choices=["minmax", "entropy", "percentile"], default=method_default,
                       help="calibration method (default %(default)s)")
    p.add_argument("--no-conv", action="store_true", help="keep the audio subsampling Conv(s) float")


def _trt_embedding_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trt-int8-embedding", action="store_true",
                   help="trt flavour: per-row int8 word-embedding table (DequantizeLinear -> Gather); ~1/3.6 the "
                        "FP32 size, check that the device's TensorRT builds it")


def _profile_args(p: argparse.ArgumentParser) -> None:
    default = Profiles()
    per_model = "default: the model's frames for 0.16 s / 3 s / 10 s, i.e. {} for log-mel models, half that for Whisper-state ones"
    p.add_argument("--min", default=None, help="min BATCH,FRAMES,TOKENS (" + per_model.format(format_dims(default.min)) + ")")
    p.add_argument("--opt", default=None, help="opt BATCH,FRAMES,TOKENS (" + per_model.format(format_dims(default.opt)) + ")")
    p.add_argument("--max", default=None,
                   help=f"max BATCH,FRAMES,TOKENS (FRAMES <= the model's limit, {MAX_FRAMES} at most; TOKENS <= {MAX_TOKENS}; "
                        + per_model.format(format_dims(default.max)) + ")")
    p.add_argument("--workspace-mb", type=int, default=1024, help="TensorRT workspace limit in MiB (default %(default)s)")
    p.add_argument("--device", type=int, default=0, help="CUDA device index (default %(default)s)")


def _formats_help() -> str:
    width = max(len(f) for f, _ in FORMATS)
    return "writes into --out:\n" + "\n".join(f"  {f.ljust(width)}  {what}" for f, what in FORMATS)


def build_parser() -> argparse.ArgumentParser:
    ap = ArgumentParser(prog="hbaf-export", description="Export HBAF to ONNX, quantize to INT8 (Q/DQ), build TensorRT engines.")
    ap.add_argument("-v", "--verbose", action="store_true")
    sub = ap.add_subparsers(dest="cmd", required=True, parser_class=ArgumentParser)

    p = sub.add_parser("all", help="checkpoint -> ONNX (contract + ORT CPU graph) -> parity -> INT8 trt + cpu -> report",
                       epilog=_formats_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="default",
                   help="checkpoint folder; 'default' (the default) is the student packaged with this install")
    p.add_argument("--manifest", default=None,
                   help="utterances to calibrate (train split) and evaluate (test split) on; default: built-in utterances "
                        "rendered on this machine (MELD dialogues, synthetic speech), cached under $HBAF_HOME")
    p.add_argument("--out", default=DEFAULT_OUT, help="output folder (default %(default)s)")
    p.add_argument("--engines", choices=["auto", "off"], default="auto",
                   help="auto: build the TensorRT engines when TensorRT imports here (a Jetson), else say why not (default)")
    p.add_argument("--asr", choices=["on", "off"], default="on",
                   help="on: also write the recogniser's graphs into OUT/asr, as `hbaf-export asr` does (about 35 s on 2 cores; "
                        "kept when OUT/asr already holds them from this Whisper model), and build their engines with the "
                        "model's; off: the fusion model only (default %(default)s)")
    p.add_argument("--name", default="model", help="file stem NAME of the models (default %(default)s)")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--parity-n", type=int, default=64)
    _calib_args(p)
    _trt_embedding_arg(p)
    _eval_args(p)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=None)

    p = sub.add_parser("onnx", help="checkpoint -> ONNX (the export contract), checked; optional parity on real speech")
    p.add_argument("--checkpoint", required=True, help="checkpoint folder (hbaf train/distill --out)")
    p.add_argument("--out", required=True, help="output .onnx file (tokenizer.json is copied next to it)")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--exporter", choices=EXPORTERS, default="auto")
    p.add_argument("--graph", choices=GRAPHS, default=GRAPH_CONTRACT,
                   help="contract: standard operators, for TensorRT and any runtime (default); ort-cpu: the same model with "
                        "ONNX Runtime's fused CPU kernels (opset 18 + com.microsoft), the source of the fast CPU INT8 model")
    p.add_argument("--no-check", action="store_true", help="skip onnx.checker / TensorRT / ONNX Runtime checks")
    p.add_argument("--parity-manifest", default=None, help="manifest of real utterances for the PyTorch/ONNX Runtime parity check")
    p.add_argument("--parity-n", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)

    p = sub.add_parser("parity", help="PyTorch vs ONNX Runtime on real utterances (sequential dialogues and padded batches)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--onnx", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--out", default=None, help="write the result as JSON here")
    p.add_argument("--threads", type=int, default=2)

    p = sub.add_parser("int8", help="calibrate on a manifest and write INT8 Q/DQ models (+ accuracy/latency report)")
    p.add_argument("--onnx", required=True, help="FP32 ONNX written by `hbaf-export onnx`")
    p.add_argument("--manifest", required=True, help="manifest whose train split provides the calibration utterances")
    p.add_argument("--flavour", choices=["trt", "cpu", "both"], default="both")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--no-eval", action="store_true", help="only quantize; skip the accuracy/latency report")
    _calib_args(p)
    _trt_embedding_arg(p)
    _eval_args(p)
    _common(p)

    p = sub.add_parser("compare-calibration", help="MinMax vs Entropy vs Percentile x trt/cpu (+ dynamic): one table")
    p.add_argument("--onnx", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--methods", default="minmax,entropy,percentile")
    p.add_argument("--no-dynamic", action="store_true", help="leave out dynamic INT8")
    _calib_args(p, method_default=None)
    _eval_args(p)
    _common(p)

    p = sub.add_parser("engine", help="ONNX -> TensorRT engine + sidecar, built on this device (needs TensorRT)")
    p.add_argument("--onnx", required=True, help="ONNX model (the export contract; Q/DQ for int8)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp16",
                   help="fp16 (default), fp32, or int8 (needs a Q/DQ ONNX from calibration)")
    p.add_argument("--out", default="engines", help="output folder for <model>.<trt>.<gpu>.<precision>.engine and its .json sidecar")
    _profile_args(p)
    p.add_argument("--shape", action="append", default=[], metavar="NAME:MIN:OPT:MAX",
                   help="any other graph (e.g. the recogniser's): the profile of one input, shapes like 1x80x1000; repeat per "
                        "input (default: the graph's own, from its metadata or its fixed shapes)")
    p.add_argument("--timing-cache", default=None, help="timing cache file, read if present and saved after the build")
    p.add_argument("--verbose", dest="trt_verbose", action="store_true", help="verbose TensorRT log")

    p = sub.add_parser("asr", help="the recogniser (Whisper) -> encoder, decoder first-step and decoder-step ONNX graphs")
    p.add_argument("--out", default=str(Path(DEFAULT_OUT) / "asr"), help="output folder (default %(default)s)")
    p.add_argument("--asr", default=None, help="CTranslate2 Whisper model folder (default: the bundled tiny.en)")
    p.add_argument("--precision", default="fp32,fp16,int8-cpu,int8-trt",
                   help="comma list of fp32, fp16 (GPUs), int8-cpu (ONNX Runtime on a CPU), int8-trt (the encoder as Q/DQ "
                        "for TensorRT INT8) (default %(default)s)")
    p.add_argument("--engines", default=None, metavar="DIR",
                   help="also build the recogniser's default engines into DIR (fp16 from the three fp32 graphs; needs TensorRT "
                        "and the GPU that runs them): `hbaf-edge run` then uses them when it finds them")

    p = sub.add_parser("torch-trt", help="compile a checkpoint with Torch-TensorRT, saved as an exported program (needs CUDA)")
    p.add_argument("--checkpoint", required=True, help="checkpoint folder (hbaf train/distill --out)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp16", help="fp16 (default), fp32, or int8 (needs --manifest)")
    p.add_argument("--out", required=True, help="output file (a Torch-TensorRT exported program, e.g. student.fp16.ep)")
    _profile_args(p)
    p.add_argument("--manifest", default=None, help="int8: manifest whose train split provides the calibration batches")
    p.add_argument("--num", type=int, default=256, help="int8: calibration utterances (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="int8: seed of the calibration-dialogue draw (default %(default)s)")
    return ap


def _print_parity(res: dict) -> None:
    print(f"parity on {res['n']} utterances ({res['dialogues']} dialogues): sequential max |dprob| "
          f"{res['sequential_max_abs_prob_diff']:.2e}, top-1 agreement {100 * res['sequential_top1_agreement']:.1f}%, "
          f"max |d utt_emb| {res['sequential_max_utt_emb_diff']:.2e}; batch {res['batch_size']}: max |dprob| vs PyTorch "
          f"{res['batched_max_abs_prob_diff_vs_torch']:.2e}, vs batch 1 {res['batched_vs_batch1_max_abs_prob_diff']:.2e}")


def _tensorrt_missing() -> str | None:
    """Why TensorRT engines cannot be built here, or None when TensorRT imports."""
    try:
        import tensorrt  # noqa: F401
    except Exception as err:  # ImportError, or a broken install (missing CUDA libraries)
        from hbaf.contract import first_line

        return f"TensorRT does not import here ({first_line(err, 120)})"
    return None


def _build_engines(out: Path, name: str, asr: bool) -> list[Path]:
    """The engines of `all`: int8 from the trt-flavour Q/DQ model, fp16 from the FP32 contract graph,
    and (``asr``) the recogniser's fp16 engines from its FP32 graphs in OUT/asr."""
    from export.engine import EngineBuilder
    from export.pipeline import ASR_DIR, ENGINES_DIR, build_asr_engines

    written = []
    for onnx_file, precision in ((out / f"{name}.int8-trt.onnx", "int8"), (out / f"{name}.onnx", "fp16")):
        engine_path, _ = EngineBuilder(onnx_file, precision).build(out / ENGINES_DIR)
        print(f"engine {precision}: {engine_path}", flush=True)
        written.append(Path(engine_path))
    if asr:
        for engine_path in build_asr_engines(out / ASR_DIR, out / ENGINES_DIR):
            print(f"engine fp16 (recogniser): {engine_path}", flush=True)
            written.append(engine_path)
    return written


def _engines_later(out: Path, name: str, asr: bool) -> str:
    """The commands that build the engines of `all` on the device, as one clause."""
    from edge_runtime.asr_defaults import build_hint
    from export.pipeline import ASR_DIR, ENGINES_DIR

    fusion = f"`hbaf-export engine --onnx {out / (name + '.int8-trt.onnx')} --precision int8 --out {out / ENGINES_DIR}`"
    if not asr:
        return fusion
    return f"{fusion}, and the recogniser's: `{build_hint(out / ENGINES_DIR, out / ASR_DIR)}`"


def cmd_all(args) -> int:
    from edge_runtime.backends import TorchBackend
    from export.pipeline import export_all
    from hbaf.checkpoint import resolve_checkpoint

    t0 = time.time()
    checkpoint = resolve_checkpoint(args.checkpoint)
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise HBAFError(f"--out {out} is a file; pass a folder for the exported models")
    print(f"checkpoint: {checkpoint}" + (" (packaged with this install)" if args.checkpoint == "default" else ""), flush=True)
    manifest, limit = args.manifest, args.eval_limit
    if manifest is None:
        from calibration.builtin import builtin_manifest, describe

        labels = TorchBackend(checkpoint).labels  # a bad checkpoint fails before anything is rendered
        manifest = builtin_manifest(labels, workers=args.workers)
        print(f"no --manifest: calibrating and evaluating on {describe(manifest)}", flush=True)
    report = export_all(checkpoint, manifest, out, method=args.method, num=args.num, seed=args.seed,
                        parity_n=args.parity_n, opset=args.opset, split=args.eval_split, limit=limit,
                        threads=args.threads, latency_runs=args.latency_runs, workers=args.workers, name=args.name,
                        trt_int8_embedding=args.trt_int8_embedding, asr=args.asr == "on")
    _print_parity(report["parity"])
    print(report["table"])
    for note in report.get("notes", []):
        print(f"note: {note}")
    asr = report.get("asr")
    if asr is None:
        print("recogniser: skipped (--asr off)")
    else:
        print(f"recogniser: {len(asr['files'])} graphs in {asr['folder']}"
              + (" (kept: already exported from this Whisper model)" if asr["kept"] else ""))
    if args.engines == "off":
        print("engines: skipped (--engines off)")
    elif (why := _tensorrt_missing()) is not None:
        print(f"engines: skipped: {why}; TensorRT engines are built on the device that runs them "
              f"(on the Jetson: {_engines_later(out, args.name, asr is not None)})")
    else:
        _build_engines(out, args.name, asr is not None)
    files = sorted(p for p in out.rglob("*") if p.is_file() and not p.name.startswith(".") and p.stat().st_mtime >= t0 - 1)
    print(f"written ({len(files)} files in {out}):")
    for f in files:
        print(f"  {f.relative_to(out)}  ({f.stat().st_size / 1e6:.2f} MB)")
    print(f"report: {out / 'report.md'}")
    print(f"total time: {time.time() - t0:.1f} s")
    return 0


def cmd_onnx(args) -> int:
    from export.onnx_export import export_onnx
    from export.parity import parity
    from hbaf.io import write_json_atomic

    out = export_onnx(args.checkpoint, args.out, opset=args.opset, check=not args.no_check, exporter=args.exporter,
                      graph=args.graph)
    print(f"onnx: {out} ({out.stat().st_size / 1e6:.1f} MB)")
    if args.parity_manifest:
        res = parity(args.checkpoint, out, args.parity_manifest, n=args.parity_n, threads=args.threads)
        _print_parity(res)
        write_json_atomic(out.with_name(out.stem + ".parity.json"), res)
    return 0


def cmd_parity(args) -> int:
    from export.parity import parity
    from hbaf.io import write_json_atomic

    res = parity(args.checkpoint, args.onnx, args.manifest, n=args.n, threads=args.threads)
    _print_parity(res)
    if args.out:
        write_json_atomic(args.out, res)
    return 0


def cmd_int8(args) -> int:
    from calibration.report import int8_report, quantize_onnx
    from hbaf.contract import GRAPH_ORT_CPU, graph_kind, read_onnx

    flavours = ["trt", "cpu"] if args.flavour == "both" else [args.flavour]
    results = quantize_onnx(args.onnx, args.manifest, args.out, flavours=flavours, method=args.method, num=args.num,
                            seed=args.seed, tokenizer=args.tokenizer, threads=args.threads, workers=args.workers,
                            include_conv=not args.no_conv, trt_int8_embedding=args.trt_int8_embedding)
    for r in results:
        print(f"int8 {r.flavour}: {r.path} ({r.size_mb:.1f} MB, {len(r.quantized_nodes)} GEMMs quantized, embedding {r.embedding})")
    if "cpu" in flavours and graph_kind(read_onnx(args.onnx, load_external_data=False)) != GRAPH_ORT_CPU:
        print("note: the CPU INT8 model runs faster quantized from the ONNX Runtime CPU graph "
              "(`hbaf-export onnx --graph ort-cpu`, then --onnx model.ort.onnx --flavour cpu); `hbaf-export all` does both")
    if not args.no_eval:
        report = int8_report(args.onnx, results, args.manifest, args.out, split=args.eval_split, limit=args.eval_limit,
                             threads=args.threads, latency_runs=args.latency_runs, tokenizer=args.tokenizer,
                             workers=args.workers)
        print(report["table"])
        print(f"report: {Path(args.out) / 'int8_report.md'}")
    return 0


def cmd_compare(args) -> int:
    from calibration.report import compare_calibration

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    report = compare_calibration(args.onnx, args.manifest, args.out, methods=methods, num=args.num, seed=args.seed,
                                 dynamic=not args.no_dynamic, split=args.eval_split, limit=args.eval_limit,
                                 threads=args.threads, latency_runs=args.latency_runs, tokenizer=args.tokenizer,
                                 workers=args.workers, include_conv=not args.no_conv)
    print(report["table"])
    for note in report.get("notes", []):
        print(f"note: {note}")
    print(f"report: {Path(args.out) / 'calibration_comparison.md'}")
    return 0


def cmd_engine(args) -> int:
    from export.engine import EngineBuilder

    shapes = ShapeProfile.parse(args.shape) if args.shape else None
    profiles = None  # None: the model's own
    if args.min or args.opt or args.max:
        if shapes is not None:
            raise HBAFError("give --min/--opt/--max (an HBAF fusion model) or --shape (any other graph), not both")
        spec = spec_from_onnx(read_onnx(args.onnx), source=str(args.onnx))
        profiles = Profiles.for_spec(spec, args.min, args.opt, args.max)
    builder = EngineBuilder(args.onnx, args.precision, profiles, workspace_mb=args.workspace_mb, shapes=shapes,
                            timing_cache=args.timing_cache, verbose=args.trt_verbose or args.verbose, device=args.device)
    engine_path, _sidecar = builder.build(args.out)
    print(engine_path)
    return 0


def cmd_asr(args) -> int:
    from export.asr_export import export_asr

    t0 = time.time()
    precisions = tuple(p.strip() for p in args.precision.split(",") if p.strip())
    if args.engines is not None and "fp32" not in precisions:
        raise HBAFError("--engines builds the recogniser's engines from its fp32 graphs; keep fp32 in --precision")
    if args.engines is not None and (why := _tensorrt_missing()) is not None:  # before the export, not after it
        raise HBAFError(f"--engines: {why}; build the recogniser's engines on the device that runs them, or leave --engines out")
    written = export_asr(args.out, asr=args.asr, precisions=precisions)
    for key, path in written.items():
        print(f"{key}: {path} ({path.stat().st_size / 1e6:.1f} MB)")
    if args.engines is not None:
        from export.pipeline import build_asr_engines

        for engine_path in build_asr_engines(args.out, args.engines, asr=args.asr):
            print(f"engine fp16: {engine_path}")
    print(f"total time: {time.time() - t0:.1f} s; run them with `hbaf-edge run --asr-encoder "
          f"{written.get('encoder.int8-cpu', next(iter(written.values())))} --asr-decoder ...decoder-step...onnx`")
    return 0


def cmd_torch_trt(args) -> int:
    from edge_runtime.backends import TorchBackend
    from export.torch_trt import (
        auto_dims_available,
        calibration_batches,
        check_torch_for_profile,
        compile_student,
        import_torch_tensorrt,
        torch_version,
    )

    if args.precision == "int8" and not args.manifest:
        raise HBAFError("--precision int8 needs --manifest (real utterances for the INT8 calibration)")
    import_torch_tensorrt()  # before anything slow: it is the usual reason this cannot run
    backend = TorchBackend(args.checkpoint)
    profiles = Profiles.for_spec(backend.spec, args.min, args.opt, args.max)
    check_torch_for_profile(profiles, torch_version(), auto_dims_available())  # before the calibration
    calib = None
    if args.precision == "int8":
        calib = calibration_batches(backend, args.manifest, num=args.num, batch=profiles.max.batch, seed=args.seed)
    compile_student(backend.model, backend.spec, profiles, precision=args.precision, out=args.out, calib_batches=calib,
                    workspace_mb=args.workspace_mb, device=args.device)
    print(args.out)
    return 0


COMMANDS = {"all": cmd_all, "onnx": cmd_onnx, "parity": cmd_parity, "int8": cmd_int8, "compare-calibration": cmd_compare,
            "engine": cmd_engine, "torch-trt": cmd_torch_trt, "asr": cmd_asr}


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    verbose = args.verbose or getattr(args, "trt_verbose", False)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s", stream=sys.stderr)
    if not verbose:  # every model opened says which ONNX Runtime providers it got: always the CPU here
        logging.getLogger("edge_runtime.backends").setLevel(logging.WARNING)
    return COMMANDS[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
