"""Fusion backends: PyTorch vs ONNX Runtime agreement over a dialogue, open_backend's file checks,
tokenizer resolution, and the runtime memory convention against training's."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from edge_runtime.backends import Backend, OnnxBackend, TorchBackend, resolve_tokenizer
from edge_runtime.model_files import model_kind, open_backend, sniff
from edge_runtime.memory import DialogueMemory
from helpers import fake_states, tiny_checkpoint
from hbaf.errors import HBAFError
from hbaf.text import resolve_text_encoder

LABELS = ["neutral", "joy", "sadness", "anger"]
TEXTS = ["hello there, how are you", "I cannot believe you did that!", "well, okay then"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", LABELS)


@pytest.fixture(scope="module")
def onnx_model(ckpt, tmp_path_factory) -> Path:
    onnx_export = pytest.importorskip("export.onnx_export", reason="export/onnx_export.py is not available")
    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    # the TorchScript exporter is several times faster here; exporter parity is tested with the exporter
    return onnx_export.export_onnx(ckpt, out, exporter="torchscript", check=False)


def _utterances(n: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [fake_states(1 + i, seed=int(rng.integers(1 << 30))) for i in range(n)]


def _dialogue(backend: Backend) -> list[dict[str, np.ndarray]]:
    tok = backend.tokenizer()
    memory = DialogueMemory(backend.context_size, backend.memory_dim)
    outs = []
    for feats, text in zip(_utterances(), TEXTS):
        ids, mask = tok([text])
        out = backend.run(backend.feeds(feats, ids, mask, *memory.arrays()))
        memory.push(out["utt_emb"][0])
        outs.append(out)
    return outs


def test_torch_and_onnx_agree_over_a_dialogue(ckpt, onnx_model):
    tb, ob = open_backend(ckpt), open_backend(onnx_model, threads=1)
    assert isinstance(tb, TorchBackend) and isinstance(ob, OnnxBackend)
    assert (ob.labels, ob.context_size, ob.memory_dim) == (tb.labels, tb.context_size, tb.memory_dim) == (LABELS, 4, 64)
    assert ob.precision == "fp32" and "CPUExecutionProvider" in ob.providers
    for a, b in zip(_dialogue(tb), _dialogue(ob)):
        assert a["probs"].shape == (1, len(LABELS)) and a["utt_emb"].shape == (1, 64) and a["gate"].shape == (1, 2)
        np.testing.assert_allclose(a["probs"], b["probs"], atol=1e-4)
        np.testing.assert_allclose(a["gate"], b["gate"], atol=1e-4)
        np.testing.assert_allclose(a["utt_emb"], b["utt_emb"], atol=1e-3)
    # the memory matters: the third utterance with an empty memory gives other probabilities
    feats, (ids, mask) = _utterances()[2], tb.tokenizer()([TEXTS[2]])
    empty = tb.run(tb.feeds(feats, ids, mask, *DialogueMemory(4, 64).arrays()))
    assert np.abs(empty["probs"] - _dialogue(tb)[2]["probs"]).max() > 1e-6


def test_float16_model_runs_the_contract(ckpt):
    """The model in float16 (what `--fp16` runs on a CUDA GPU): the contract's float32 masks and
    memory must not lift any layer back to float32. Run here on the CPU, in the backend's own
    path, against float32."""
    fp32 = open_backend(ckpt)
    fp16 = open_backend(ckpt)
    fp16.model, fp16.dtype = fp16.model.half(), torch.float16
    for a, b in zip(_dialogue(fp32), _dialogue(fp16)):
        assert b["probs"].dtype == np.float32 and np.all(np.isfinite(b["probs"]))
        np.testing.assert_allclose(a["probs"], b["probs"], atol=2e-2)
        assert a["probs"].argmax() == b["probs"].argmax()


def test_runtime_memory_matches_training(ckpt):
    """The runtime's left-padded, newest-last memory gives what training's forward_dialogues gives."""
    from hbaf.train import forward_dialogues

    tb = open_backend(ckpt)
    texts = TEXTS + ["one more", "and another", "and the last one of six"]
    feats = [fake_states(0.5 * (i + 2), seed=i) for i in range(6)]
    with torch.no_grad():
        ref = forward_dialogues(tb.model, [list(range(6))], feats, texts, tb.tokenizer())["probs"].numpy()
    memory = DialogueMemory(tb.context_size, tb.memory_dim)  # K = 4 < 6: the window slides
    tok = tb.tokenizer()
    for i in range(6):
        ids, mask = tok([texts[i]])
        out = tb.run(tb.feeds(feats[i], ids, mask, *memory.arrays()))
        memory.push(out["utt_emb"][0])
        np.testing.assert_allclose(out["probs"][0], ref[i], atol=1e-4)


def test_warmup_records_first_inference(ckpt):
    tb = open_backend(ckpt)
    assert tb.first_inference_seconds is None and tb.load_seconds > 0
    first = tb.warmup()
    assert first > 0 and tb.first_inference_seconds == first
    tb.warmup()
    assert tb.first_inference_seconds == first


def test_kind_and_sniff(ckpt, onnx_model):
    assert model_kind(ckpt) == "torch" and model_kind(ckpt / "model.safetensors") == "torch"
    assert model_kind(onnx_model) == "onnx"
    assert sniff(onnx_model) == "onnx" and sniff(ckpt / "model.safetensors") == "safetensors"
    assert sniff(ckpt / "config.json") == "text"
    assert isinstance(open_backend(ckpt / "model.safetensors"), TorchBackend)


def _one_line_error(path, match: str) -> str:
    with pytest.raises(HBAFError, match=match) as info:
        open_backend(path)
    msg = str(info.value)
    assert "\n" not in msg and Path(path).name in msg
    return msg


def test_open_backend_rejects_bad_files(ckpt, onnx_model, tmp_path):
    text = tmp_path / "model.onnx"
    text.write_text("this is not a model\n")
    assert "checkpoint folder" in _one_line_error(text, "text file, not an ONNX model")

    renamed = tmp_path / "student.engine"
    shutil.copyfile(onnx_model, renamed)
    assert "rename it to .onnx" in _one_line_error(renamed, "is an ONNX model, not a TensorRT engine")

    cut = tmp_path / "cut"
    shutil.copytree(ckpt, cut)
    data = (cut / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(data[: len(data) // 2])
    _one_line_error(cut / "model.safetensors", "truncated")
    _one_line_error(cut, "truncated")
    (cut / "model.safetensors").write_bytes(data[:64])
    _one_line_error(cut / "model.safetensors", "not safetensors weights")

    cut_onnx = tmp_path / "cut.onnx"
    cut_onnx.write_bytes(onnx_model.read_bytes()[:100_000])
    _one_line_error(cut_onnx, "cut.onnx")

    _one_line_error(tmp_path / "missing.onnx", "model not found")
    empty = tmp_path / "empty.onnx"
    empty.touch()
    _one_line_error(empty, "empty")
    pt = tmp_path / "model.pt"
    pt.write_bytes(b"\x80\x04junk")
    _one_line_error(pt, "unknown model type")
    folder = tmp_path / "not_a_checkpoint"
    folder.mkdir()
    _one_line_error(folder, "not a checkpoint folder")


def test_fp16_needs_cuda(ckpt, onnx_model):
    if torch.cuda.is_available():
        pytest.skip("CUDA present: FP16 is allowed here")
    with pytest.raises(HBAFError, match="CUDA"):
        open_backend(ckpt, fp16=True)
    with pytest.raises(HBAFError, match="drop --fp16"):
        open_backend(onnx_model, fp16=True)


def test_tokenizer_resolution(ckpt, onnx_model, tmp_path):
    # next to the model
    assert OnnxBackend(onnx_model).tokenizer_file == onnx_model.with_name("tokenizer.json")
    # alone in another folder: the source checkpoint's (recorded in the metadata)
    alone = tmp_path / "alone" / "tiny.onnx"
    alone.parent.mkdir()
    shutil.copyfile(onnx_model, alone)
    ob = OnnxBackend(alone)
    assert ob.tokenizer_file == Path(ob.meta["source_checkpoint"]) / "tokenizer.json"
    # neither: the text encoder's own tokenizer
    found = resolve_tokenizer(alone, {"source_checkpoint": str(tmp_path / "gone"), "config": {}})
    assert found == resolve_text_encoder() / "tokenizer.json"
    ids, _ = ob.tokenizer()(["hello"])
    assert ids.dtype == np.int32 and ids[0, 0] == 101


def test_engine_route_refuses_a_bogus_engine(tmp_path):
    """A .engine goes to the TensorRT backend, which refuses a file without its sidecar (or, with
    TensorRT present, one it cannot deserialize) in one line, before touching the GPU."""
    bogus = tmp_path / "student.10.3.orin.fp16.engine"
    bogus.write_bytes(bytes(range(256)) * 16)
    assert model_kind(bogus) == "engine"
    with pytest.raises(HBAFError) as info:
        open_backend(bogus)
    assert "\n" not in str(info.value) and bogus.name in str(info.value)


def _older_graph(onnx_model: Path, out: Path) -> Path:
    """``onnx_model`` as a release before the uni-modal heads wrote it: no audio_probs/text_probs
    outputs, no ``outputs`` key in its metadata."""
    import json

    import onnx

    from hbaf.contract import HEAD_OUTPUT_NAMES, METADATA_KEY, onnx_metadata, set_onnx_metadata

    proto = onnx.load(str(onnx_model))
    for o in [o for o in proto.graph.output if o.name in HEAD_OUTPUT_NAMES]:
        proto.graph.output.remove(o)
    meta = onnx_metadata(proto)
    meta.pop("outputs")
    set_onnx_metadata(proto, meta)
    assert "outputs" not in json.loads(next(p.value for p in proto.metadata_props if p.key == METADATA_KEY))
    onnx.save(proto, str(out))
    shutil.copyfile(onnx_model.with_name("tokenizer.json"), out.with_name("tokenizer.json"))
    return out


def test_uni_modal_heads_are_outputs_and_match_pytorch(ckpt, onnx_model):
    from edge_runtime.heads import read_heads
    from hbaf.contract import AUDIO_PROBS, TEXT_PROBS

    tb, ob = open_backend(ckpt), open_backend(onnx_model, threads=1)
    assert tb.spec.outputs == ob.spec.outputs == ("probs", "utt_emb", "gate", AUDIO_PROBS, TEXT_PROBS)
    for a, b in zip(_dialogue(tb), _dialogue(ob)):
        for name in (AUDIO_PROBS, TEXT_PROBS):
            assert a[name].shape == b[name].shape == (1, len(LABELS))
            np.testing.assert_allclose(a[name].sum(1), 1.0, atol=1e-5)
            np.testing.assert_allclose(a[name], b[name], atol=1e-4)
        heads = read_heads(b, ob.labels)
        assert heads.voice.emotion == LABELS[int(a[AUDIO_PROBS].argmax())]
        assert heads.words.emotion == LABELS[int(a[TEXT_PROBS].argmax())]
        assert abs(heads.voice.confidence - float(a[AUDIO_PROBS].max())) < 1e-4 and isinstance(heads.disagree, bool)
    # the heads are the model's own audio-alone / text-alone classifiers
    feats, (ids, mask) = _utterances()[0], tb.tokenizer()([TEXTS[0]])
    feeds = tb.feeds(feats, ids, mask, *DialogueMemory(4, 64).arrays())
    with torch.no_grad():
        args = [torch.from_numpy(feeds[n]) for n in ("audio_feats", "audio_mask", "input_ids", "attention_mask", "memory", "memory_mask")]
        full = tb.model.fuse(tb.model.encode(*args[:4]), *args[4:])
    np.testing.assert_allclose(tb.run(feeds)[AUDIO_PROBS], torch.softmax(full["audio_logits"], -1).numpy(), atol=1e-6)
    np.testing.assert_allclose(tb.run(feeds)[TEXT_PROBS], torch.softmax(full["text_logits"], -1).numpy(), atol=1e-6)


def test_an_older_graph_without_the_heads_still_runs(onnx_model, tmp_path):
    from edge_runtime.heads import read_heads

    old = open_backend(_older_graph(onnx_model, tmp_path / "old.onnx"), threads=1)
    assert old.spec.head_outputs == () and old.spec.outputs == ("probs", "utt_emb", "gate")
    old.warmup(1)
    new = open_backend(onnx_model, threads=1)
    for a, b in zip(_dialogue(old), _dialogue(new)):
        assert set(a) == {"probs", "utt_emb", "gate"}
        np.testing.assert_allclose(a["probs"], b["probs"], atol=1e-6)
        heads = read_heads(a, old.labels)
        assert heads.voice is None and heads.words is None and heads.disagree is None
        assert heads.to_dict() == {"voice": None, "words": None, "disagree": None}


def test_metadata_listing_heads_the_graph_lacks_is_one_line(onnx_model, tmp_path):
    import onnx

    from hbaf.contract import onnx_metadata, set_onnx_metadata

    proto = onnx.load(str(_older_graph(onnx_model, tmp_path / "old.onnx")))
    meta = onnx_metadata(proto)
    meta["outputs"] = ["probs", "utt_emb", "gate", "audio_probs", "text_probs"]
    set_onnx_metadata(proto, meta)
    liar = tmp_path / "liar.onnx"
    onnx.save(proto, str(liar))
    assert "audio_probs, text_probs missing" in _one_line_error(liar, "its metadata lists")
