"""The recogniser's default form on this machine: its TensorRT engines where they were built here,
else on an x86 CPU its exported ONNX Runtime INT8 graphs where they are, else CTranslate2.

With no ``--asr-encoder``/``--asr-decoder`` and ``--asr-device auto``, ``WhisperASR`` asks
``default_recogniser`` which form to run. It looks for engines of the recogniser's three graphs
where ``hbaf-export all`` and ``hbaf-export asr --engines`` put them: the ``engines`` folder of an
export (beside its ``asr`` folder), in the fusion model's folder, ``$HBAF_HOME`` and
``hbaf-models`` (the folders of ``recogniser.default_graph_dirs``). An encoder engine and a
decoder engine pair, fp16 (else fp32), built for this machine's TensorRT, GPU, board and Jetson
Linux release (their sidecars say), make the default: both halves on the GPU. The published
anchor is whisper_trt's (tiny.en, both halves as TensorRT engines, 20 s of audio on an Orin Nano:
0.64 s, vs 0.85 s for faster-whisper on its CPU; docs/JETSON.md section 10); nothing was
measured on a Jetson here. An INT8 encoder engine is never the default: its Q/DQ graph's emotion
agreement with CTranslate2's states sits at the 99 % target's edge (98.75 % in release 2.2, 99.4 %
since, run by ONNX Runtime; docs/RECOGNISER.md) and TensorRT's INT8 kernels are not measured
against it; ``--asr-encoder`` runs it.

Otherwise CTranslate2, as before: no engines (nothing is imported), TensorRT or a CUDA GPU
missing, or engines that cannot run here (built on another machine, only one half, a missing
sidecar). Engines that were found and cannot run are a warning, never an error: the recogniser
still starts. What costs a read of every byte (the engine's and its ONNX's sha256, a stale
engine) is left to the engine runner at load (``edge_runtime.trt_runner``), whose refusal
``open_engines`` turns into the same warning and fallback; an explicit ``--asr-encoder ENGINE``
still fails in one line.
"""

from __future__ import annotations

import logging
import os
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_runtime.recogniser import (
    AudioEncoder,
    TextDecoder,
    default_graph_dirs,
    find_encoder_graph,
    open_decoder,
    open_encoder,
    read_asr_graph,
)
from hbaf.contract import (
    ASR_DECODER_FIRST,
    ASR_DECODER_STEP,
    ASR_ENCODER,
    Sidecar,
    asr_graph_name,
    asr_engine_graph,
    engine_mismatches,
    engine_name,
    first_line,
    parse_engine_name,
    sidecar_path,
)
from hbaf.errors import HBAFError

log = logging.getLogger(__name__)

# the precisions a default pick takes, in order of preference (int8: see the module docstring)
DEFAULT_PRECISIONS = ("fp16", "fp32")
# the graphs of the recogniser that get an engine, and the graph each engine is built from
ENGINE_ROLES = (ASR_ENCODER, ASR_DECODER_FIRST, ASR_DECODER_STEP)
ENGINE_SOURCE_PRECISION = "fp32"  # fp16 engines come from the FP32 graph with TensorRT's FP16 flag (export/engine.py)
# the CPU graphs a default pick takes, and the measurement that makes them the default on x86
# (docs/RECOGNISER.md: `hbaf-edge bench --asr-clips meld` with the int8-lookup graphs, release 2.4)
CPU_GRAPHS = "int8-cpu"
CPU_MEASURED = ("2-core x86, 85 turns (synthetic), beam 5: 170 vs 217 ms per utterance, WER 19.9 vs 25.2 %, "
                "emotion answers on its states 100 % CTranslate2's")
ANCHOR = ("whisper_trt, tiny.en both halves as TensorRT engines, 20 s of audio on an Orin Nano: 0.64 s vs faster-whisper "
          "on its CPU 0.85 s")


@dataclass(frozen=True)
class Machine:
    """What an engine must have been built for: this machine's TensorRT, GPU and (on a Jetson) board and release."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    l4t_release: str = ""
    board: str = ""

    def mismatches(self, sidecar: Sidecar) -> list[str]:
        return engine_mismatches(sidecar, self.tensorrt_version, self.gpu_name, self.compute_capability,
                                 l4t_release=self.l4t_release, board=self.board)


def this_machine(device: int = 0) -> Machine | str:
    """This machine as engines see it, or why no engine can run here (TensorRT or a CUDA GPU missing)."""
    try:
        import tensorrt as trt  # noqa: PLC0415 - optional, device-only dependency
    except Exception as err:  # ImportError, or a broken install (missing CUDA libraries)
        return f"TensorRT does not import here ({first_line(err, 120)})"
    from edge_runtime.jetson import jetson_facts
    from edge_runtime.trt_runner import gpu_facts

    try:
        gpu = gpu_facts(device)
    except HBAFError as err:
        return f"no CUDA GPU is usable here ({first_line(err, 120)})"
    l4t, board = jetson_facts()
    return Machine(str(trt.__version__), gpu.name, gpu.compute_capability, l4t, board)


@dataclass(frozen=True)
class RecogniserPick:
    """The default recogniser: ``encoder`` and ``decoder`` files (TensorRT engines, or the CPU
    graphs of ``with_cpu_graphs``), or both None (CTranslate2, or ours where the emotion model
    reads an inner layer). ``reason``: one line saying why; ``warn``: engines were found that
    cannot run here (the line is a warning); ``fix``: the command that builds them here, where
    that is the fix."""

    encoder: Path | None
    decoder: Path | None
    reason: str
    warn: bool = False
    fix: str = ""

    def line(self) -> str:
        """The reason, and the fix where there is one: what the log says."""
        return self.reason + (f"; build them on this machine with `{self.fix}`" if self.fix else "")

    @property
    def forms(self) -> bool:
        """Both halves picked: TensorRT engines, or the CPU graphs (``with_cpu_graphs``)."""
        return self.encoder is not None and self.decoder is not None

    @property
    def engines(self) -> bool:
        """Both halves are TensorRT engines."""
        return self.forms and Path(self.encoder).suffix == ".engine"  # type: ignore[arg-type]


def engine_dirs(graph_dirs: Sequence[str | os.PathLike] = ()) -> list[Path]:
    """Where recogniser engines are looked for, in order: each of ``graph_dirs`` (the fusion model's
    folder) and of ``default_graph_dirs()`` itself and its ``engines`` subfolder, and for an export's
    ``asr`` folder the ``engines`` folder beside it (``hbaf-export all --out OUT`` writes OUT/asr and
    OUT/engines)."""
    out: list[Path] = []
    for base in [*(Path(d).expanduser() for d in graph_dirs), *default_graph_dirs()]:
        for d in (base, base / "engines", *((base.parent / "engines",) if base.name == "asr" else ())):
            if d not in out:
                out.append(d)
    return out


def engine_prefix(whisper_name: str, role: str) -> str:
    """How the engine files of a recogniser graph start (``engine_name`` of its ONNX stem):
    ``whisper-tiny-en-encoder-`` for tiny.en's encoder."""
    parts = parse_engine_name(engine_name(f"whisper-{whisper_name}.{role}", "0", "gpu", "fp16"))
    assert parts is not None
    return parts["model"] + "-"


def find_engines(dirs: Sequence[Path], whisper_name: str, role: str,
                 precisions: Sequence[str] = DEFAULT_PRECISIONS) -> list[Path]:
    """Engine files of ``whisper_name``'s ``role`` graph in ``dirs`` with one of ``precisions``: by
    precision (the order given), then folder (the order given), then newest first."""
    prefix, found = engine_prefix(whisper_name, role), []
    for rank, folder in enumerate(dirs):
        if not folder.is_dir():
            continue
        for path in folder.glob(prefix + "*.engine"):
            parts = parse_engine_name(path.name)
            if parts is not None and parts["precision"] in precisions and path.is_file():
                found.append((precisions.index(parts["precision"]), rank, -path.stat().st_mtime, str(path), path))
    return [item[-1] for item in sorted(found)]


def why_not(path: Path, role: str, machine: Machine, layers: tuple[str, ...] = ()) -> str | None:
    """Why the engine ``path`` of ``role`` cannot be a default pick here (None: it can), from the
    checks that read no more than its sidecar and size: the sidecar there and of this graph, the
    size it records, built for this machine, and (the encoder) the inner ``layers`` the emotion
    model reads, when the graph it was built from is still there to say."""
    side = sidecar_path(path)
    if not side.is_file():
        return f"{path.name} has no sidecar {side.name}"
    try:
        sidecar = Sidecar.read(side)
    except HBAFError as err:
        return first_line(err, 200)
    if sidecar.graph != asr_engine_graph(role):
        return f"{path.name} holds a '{sidecar.graph}' graph, not the recogniser's {role}"
    if sidecar.engine_bytes and path.stat().st_size != sidecar.engine_bytes:
        return f"{path.name} is {path.stat().st_size} bytes but its sidecar says {sidecar.engine_bytes} (truncated or replaced)"
    bad = machine.mismatches(sidecar)
    if bad:
        return f"{path.name} was built for {', '.join(bad)}"
    if role == ASR_ENCODER and layers and sidecar.onnx_path and Path(sidecar.onnx_path).is_file():
        try:
            inner = read_asr_graph(sidecar.onnx_path, ASR_ENCODER).inner
        except HBAFError as err:
            return first_line(err, 200)
        missing = [n for n in layers if n not in inner]
        if missing:
            return f"{path.name} has no {missing[0]} output, which the emotion model reads (built from an older export)"
    return None


def _decoder_partner(step_engine: Path) -> Path:
    return step_engine.with_name(step_engine.name.replace(ASR_DECODER_STEP, ASR_DECODER_FIRST))


def build_hint(engines_dir: str | os.PathLike | None = None, asr_dir: str | os.PathLike | None = None) -> str:
    """The one command that exports the recogniser's graphs and builds its engines here (by default
    an export's layout: ``hbaf-models/asr`` and ``hbaf-models/engines``, or the ``asr`` folder beside
    an ``engines`` one)."""
    engines = Path(engines_dir) if engines_dir is not None else Path("hbaf-models") / "engines"
    asr = Path(asr_dir) if asr_dir is not None else (engines.parent / "asr" if engines.name == "engines"
                                                       else Path("hbaf-models") / "asr")
    return f"hbaf-export asr --out {asr} --engines {engines}"


def default_recogniser(whisper_name: str, layers: tuple[str, ...] = (), graph_dirs: Sequence[str | os.PathLike] = (), *,
                       machine: Machine | str | Callable[[], Machine | str] = this_machine) -> RecogniserPick:
    """The recogniser ``hbaf-edge run`` uses when no form is asked for (see the module docstring).

    ``machine``: this machine (``this_machine()``, called only when engine files are found), a
    ``Machine``, or why engines cannot run here; ``layers``: the encoder's inner layers the
    emotion model reads (the encoder engine must give them)."""
    dirs = engine_dirs(graph_dirs)
    encoders = find_engines(dirs, whisper_name, ASR_ENCODER)
    decoders = find_engines(dirs, whisper_name, ASR_DECODER_STEP)
    if not encoders and not decoders:
        return RecogniserPick(None, None, "CTranslate2: no recogniser engines in " + ", ".join(str(d) for d in dirs if d.is_dir())
                              if any(d.is_dir() for d in dirs) else "CTranslate2: no recogniser engines found")
    if callable(machine):
        machine = machine()
    found = ", ".join(p.name for p in [*encoders[:1], *decoders[:1]])
    if isinstance(machine, str):
        return RecogniserPick(None, None, f"CTranslate2: recogniser engines found ({found}) but {machine}")
    problems: list[str] = []

    def first_usable(paths: list[Path], check: Callable[[Path], str | None]) -> Path | None:
        for p in paths:
            why = check(p)
            if why is None:
                return p
            problems.append(why)
        return None

    encoder = first_usable(encoders, lambda p: why_not(p, ASR_ENCODER, machine, layers))

    def decoder_ok(p: Path) -> str | None:
        first = _decoder_partner(p)
        if not first.is_file():
            return f"{p.name} has no {ASR_DECODER_FIRST} engine beside it ({first.name})"
        return why_not(p, ASR_DECODER_STEP, machine) or why_not(first, ASR_DECODER_FIRST, machine)

    decoder = first_usable(decoders, decoder_ok)
    if encoder is not None and decoder is not None:
        return RecogniserPick(encoder, decoder, f"TensorRT engines built for this {machine.board or machine.gpu_name}: "
                              f"encoder {encoder}, decoder {decoder} (the fastest known form on a Jetson: {ANCHOR})")
    if not problems:  # one half has no engine at all
        problems.append(f"no {'decoder' if encoder is not None else 'encoder'} engine beside "
                        f"{(encoder or decoder).name}")  # type: ignore[union-attr]
    folder = (encoders or decoders)[0].parent
    return RecogniserPick(None, None, f"CTranslate2: the recogniser engines found cannot run here ({problems[0]})",
                          warn=True, fix=build_hint(folder))


def with_cpu_graphs(pick: RecogniserPick, whisper_name: str, layers: tuple[str, ...] = (),
                    graph_dirs: Sequence[str | os.PathLike] = (), *, arch: str | None = None) -> RecogniserPick:
    """``pick`` where it runs the engines; else, on an x86 CPU, the recogniser's ONNX Runtime INT8
    graphs (encoder giving ``layers``, and the decoder pair, from one folder: each of ``graph_dirs``
    (the fusion model's folder) or its ``asr`` subfolder, or ``default_graph_dirs()``: where
    ``hbaf-export asr`` and ``hbaf-export all`` put them), which
    there recognise faster than CTranslate2 at a better WER (``CPU_MEASURED``); else ``pick``
    (CTranslate2). On ARM nothing has measured the two, so CTranslate2 stays."""
    if pick.engines or (arch or platform.machine()).lower() not in ("x86_64", "amd64"):
        return pick
    given = [Path(d).expanduser() for d in graph_dirs]
    for folder in [*(f for d in given for f in (d, d / "asr")), *default_graph_dirs()]:  # d/asr: `hbaf-export all --out d`
        names = {role: folder / asr_graph_name(whisper_name, role, CPU_GRAPHS) for role in (ASR_DECODER_FIRST, ASR_DECODER_STEP)}
        if not all(f.is_file() for f in names.values()):  # before reading the encoder graph's metadata
            continue
        encoder = find_encoder_graph(whisper_name, layers, [folder])
        if encoder is not None:
            return RecogniserPick(encoder, names[ASR_DECODER_STEP], f"ONNX Runtime INT8 graphs on the CPU, from {folder} "
                                  f"(faster than CTranslate2 here at a better WER: {CPU_MEASURED})")
    return pick


def open_engines(pick: RecogniserPick, layers: tuple[str, ...] = (), threads: int | None = None) -> tuple[AudioEncoder, TextDecoder] | None:
    """The forms of ``pick`` loaded (TensorRT engines or the CPU graphs, ``threads`` for the
    latter; the encoder giving the inner ``layers``), or None with a warning when one is refused
    (stale, corrupted, foreign, no TensorRT; graphs from two exports): the caller then opens
    CTranslate2 (or ours for inner layers), as with none."""
    if not pick.forms:
        return None
    encoder: Any = None
    try:
        encoder = open_encoder(str(pick.encoder), whisper_model=None, layers=layers, threads=threads)
        decoder = open_decoder(str(pick.decoder), whisper_model=None, threads=threads)
    except HBAFError as err:
        runner = getattr(encoder, "runner", None)
        if runner is not None:
            runner.close()  # the GPU memory of a half that did load
        log.warning("the recogniser's %s cannot run (%s); using CTranslate2 instead (--asr-encoder FILE shows the "
                    "error itself)", "engines" if pick.engines else "graphs", first_line(err, 400))
        return None
    log.info("recogniser: %s (--asr-encoder ct2 --asr-decoder ct2 runs CTranslate2)", pick.reason)
    return encoder, decoder
