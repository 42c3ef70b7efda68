"""What shapes a live run, and its wiring: ``RunOptions`` (every setting of ``hbaf-edge run``
and of ``edge_runtime.EmotionStream``) and ``build_pipeline``, the one way a pipeline is put
together from them (the command line, the Python API, the benchmark's end-to-end run and the
soak all use it)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_runtime import vad
from edge_runtime.asr import DEFAULT_BEAM_SIZE
from edge_runtime.memory import DEFAULT_RESET_AFTER
from hbaf.errors import HBAFError

if TYPE_CHECKING:
    from edge_runtime.backends import Backend
    from edge_runtime.events import EventWriter
    from edge_runtime.pipeline import Pipeline


@dataclass
class RunOptions:
    """Every setting that shapes a pipeline; ``hbaf-edge run`` takes its flags' defaults from here
    (a field ``asr_beam`` is the flag ``--asr-beam``)."""

    model: str | Path | None = None  # None: the packaged model (edge_runtime.model_files.default_model_path)
    model_device: str = "cpu"
    fp16: bool = False
    threads: int | None = None
    asr: str | None = None  # None: the bundled Whisper tiny.en
    asr_device: str = "auto"
    asr_beam: int = DEFAULT_BEAM_SIZE
    asr_encoder: str | None = None  # None: CTranslate2 (edge_runtime/recogniser.py lists the forms)
    asr_decoder: str | None = None
    context: int | None = None  # None: all K slots the model was trained with
    reset_after: float = DEFAULT_RESET_AFTER
    min_confidence: float | None = None
    vad_threshold: float = vad.THRESHOLD
    min_speech_ms: int = vad.MIN_SPEECH_MS
    min_silence_ms: int = vad.MIN_SILENCE_MS
    speech_pad_ms: int = vad.SPEECH_PAD_MS
    max_utterance_s: float = vad.MAX_SECONDS
    sentence_end_ms: int = vad.SENTENCE_END_MS  # shorter silence ending a speculative transcript's sentence; 0 = off
    speculate: bool = True  # recognise during the VAD's hangover (edge_runtime/speculate.py)
    summary_line: bool = True

    @classmethod
    def with_overrides(cls, options: RunOptions | None = None, **overrides: Any) -> RunOptions:
        """``options`` (or the defaults) with ``overrides`` (field names) replaced; an unknown
        name is a one-line error that lists the known ones."""
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise HBAFError(f"unknown option {', '.join(map(repr, unknown))}; the options are {', '.join(known)}")
        if options is not None and not isinstance(options, cls):
            raise HBAFError(f"options must be a RunOptions, got {type(options).__name__}; pass options=RunOptions(...)")
        base = options if options is not None else cls()
        return cls(**{**{name: getattr(base, name) for name in known}, **overrides})

    def check(self) -> RunOptions:
        """The checks that need no model: a one-line error for a value no run can use."""
        if self.asr_beam < 1:
            raise HBAFError(f"--asr-beam {self.asr_beam}: the beam size must be >= 1 (1 = greedy)")
        if self.context is not None and self.context < 0:
            raise HBAFError(f"--context must be >= 0, got {self.context}")
        if self.reset_after < 0:
            raise HBAFError(f"--reset-after must be >= 0 seconds (0 = never), got {self.reset_after}")
        if self.min_confidence is not None and not 0.0 <= self.min_confidence <= 1.0:
            raise HBAFError(f"--min-confidence must be between 0 and 1, got {self.min_confidence}")
        if self.sentence_end_ms and not self.speculate:
            raise HBAFError(f"--sentence-end-ms {self.sentence_end_ms} reads the speculative transcript, which --no-speculate "
                            "turns off; drop --no-speculate, or use --sentence-end-ms 0")
        return self


def build_pipeline(source: Any, writer: EventWriter, options: RunOptions, *, backend: Backend | None = None,
                   drop_when_full: bool | None = None) -> Pipeline:
    """The live pipeline: segmenter, backend (opened from ``options.model`` unless given), dialogue
    memory, tokenizer and ASR. Cheap checks run before the models load."""
    from edge_runtime.asr import WhisperASR
    from edge_runtime.memory import DialogueMemory
    from edge_runtime.model_files import default_model_path, open_backend
    from edge_runtime.pipeline import Pipeline
    from hbaf.encoder import ENCODER_MODELS

    options.check()
    segmenter = vad.Segmenter(options.vad_threshold, options.min_speech_ms, options.min_silence_ms,
                              options.speech_pad_ms, options.max_utterance_s, sentence_end_ms=options.sentence_end_ms)
    if backend is None:
        model = Path(options.model).expanduser() if options.model else default_model_path()
        backend = open_backend(model, device=options.model_device, fp16=options.fp16, threads=options.threads)
    memory = DialogueMemory(backend.context_size, backend.memory_dim, window=options.context, reset_after=options.reset_after)
    tokenizer = backend.tokenizer()
    kind = backend.spec.feature_kind
    # states=kind: a model that reads an inner encoder layer gets an encoder of ours that gives it
    # (CTranslate2 cannot), looked for beside the model first
    asr = WhisperASR(options.asr, device=options.asr_device, cpu_threads=options.threads, beam_size=options.asr_beam,
                     encoder=options.asr_encoder, decoder=options.asr_decoder, states=kind,
                     graph_dirs=[Path(getattr(backend, "path", ".")).parent])
    if options.asr_encoder not in (None, "ct2") and kind in ENCODER_MODELS and not asr.states_of(kind):
        raise HBAFError(f"--asr-encoder {options.asr_encoder} does not compute the {kind} states the fusion model reads; "
                        f"export the encoder of {ENCODER_MODELS[kind]} with `hbaf-export asr`, or leave --asr-encoder at ct2")
    return Pipeline(source, segmenter, asr, backend, memory, writer, tokenizer, options.min_confidence,
                    drop_when_full=drop_when_full, summary_line=options.summary_line, speculate=options.speculate)
