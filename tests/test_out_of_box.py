"""Out of the box: `hbaf-edge bench` with no arguments and `hbaf-export all --checkpoint default`
with no --manifest/--out, on a tiny checkpoint standing in for the packaged student
($HBAF_DEFAULT_CHECKPOINT) and a small built-in utterance set rendered into a temporary $HBAF_HOME."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import assert_one_line_error, tiny_checkpoint

pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """A float16 tiny checkpoint as the packaged student, and an empty $HBAF_HOME."""
    if not shutil.which("espeak-ng") or not shutil.which("sox"):
        pytest.skip("espeak-ng and sox are needed to render the built-in utterances; run scripts/install.sh")
    from hbaf.checkpoint import load_checkpoint, save_checkpoint
    from hbaf.data.records import MELD_LABELS

    root = tmp_path_factory.mktemp("out-of-box")
    fp32 = tiny_checkpoint(root / "fp32", sorted(MELD_LABELS))
    model, _ = load_checkpoint(fp32)
    student = save_checkpoint(model, root / "student", fp32 / "tokenizer.json", dtype="float16")
    return {"root": root, "student": student, "home": root / "home"}


@pytest.fixture()
def small_builtin(shipped, monkeypatch):
    import bench.cli
    import calibration.builtin

    monkeypatch.setenv("HBAF_DEFAULT_CHECKPOINT", str(shipped["student"]))
    monkeypatch.setenv("HBAF_HOME", str(shipped["home"]))
    monkeypatch.setattr(calibration.builtin, "BUILTIN_TRAIN", 40)
    monkeypatch.setattr(calibration.builtin, "BUILTIN_TEST", 24)
    monkeypatch.setattr(bench.cli, "BUILTIN_INT8_NUM", 12)
    return shipped


@pytest.mark.slow
def test_bench_with_no_arguments_runs_the_shipped_model(small_builtin, tmp_path, monkeypatch, capsys):
    from edge_runtime.cli import main as hbaf_edge

    monkeypatch.chdir(tmp_path)
    assert hbaf_edge(["bench", "--threads", "1"]) == 0
    out = tmp_path / "bench-report"
    report = json.loads((out / "bench.json").read_text())
    assert (out / "bench.md").is_file() and (out / "bench_latency.png").is_file()
    st = report["settings"]
    assert st["quick"] and "no arguments given" in st["builtin"] and "synthetic speech" in st["builtin"]
    assert "defaults: no arguments given" in capsys.readouterr().out
    rows = {r["key"]: r for r in report["fusion"]["rows"]}
    assert rows["torch-fp32"]["status"] == "ok" and rows["ort-fp32"]["status"] == "ok"
    int8 = [r for k, r in rows.items() if k.startswith("ort-int8")]
    assert int8 and all(r["status"] == "ok" and r["precision"].startswith("int8") for r in int8)
    assert rows["ort-fp32"]["max_prob_diff"] < 1e-4 and rows["ort-fp32"]["top1_agreement"] == 1.0
    assert (out / "model.onnx").is_file()  # the FP32 export, made on the fly
    for r in rows.values():  # what cannot run here says why
        assert r["status"] == "ok" or r["status"].startswith(("unavailable: ", "skipped: ")), r
    assert report["fusion"]["evaluation"]["utterances"] > 0


@pytest.mark.slow
def test_export_all_with_the_default_checkpoint_and_no_manifest(small_builtin, tmp_path, monkeypatch, capsys):
    from export.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["all", "--checkpoint", "default", "--num", "16", "--parity-n", "8", "--latency-runs", "5",
                 "--threads", "1", "--workers", "1"]) == 0
    text = capsys.readouterr().out
    out = tmp_path / "hbaf-models"
    for name in ("model.onnx", "model.ort.onnx", "model.int8-trt.onnx", "model.int8-cpu.onnx", "report.md", "report.json",
                 "parity.json", "tokenizer.json"):
        assert (out / name).is_file(), name
        assert name in text
    assert "no --manifest: calibrating and evaluating on built-in utterances" in text
    assert "total time:" in text
    # the recogniser's graphs, as `hbaf-export asr` writes them, in OUT/asr; listed and in the report
    for role in ("encoder", "decoder-first", "decoder-step"):
        for precision in ("fp32", "fp16", "int8-cpu"):
            assert f"asr/whisper-tiny.en.{role}.{precision}.onnx  (" in text
    assert (out / "asr" / "whisper-tiny.en.encoder.int8-trt.onnx").is_file()
    assert "recogniser: 10 graphs in hbaf-models/asr" in text
    assert json.loads((out / "report.json").read_text())["asr"]["files"]["encoder.fp32"] == "whisper-tiny.en.encoder.fp32.onnx"
    assert "`whisper-tiny.en.decoder-step.fp16.onnx`" in (out / "report.md").read_text()
    try:
        import tensorrt  # noqa: F401
    except Exception:
        assert "engines: skipped: TensorRT does not import here" in text
        assert "and the recogniser's: `hbaf-export asr --out hbaf-models/asr --engines hbaf-models/engines`" in text

    # --asr off: the fusion model only, into another folder
    assert main(["all", "--checkpoint", "default", "--num", "8", "--parity-n", "4", "--latency-runs", "2", "--eval-limit", "8",
                 "--threads", "1", "--workers", "1", "--out", "fusion-only", "--asr", "off"]) == 0
    text = capsys.readouterr().out
    assert "recogniser: skipped (--asr off)" in text and "whisper-tiny.en" not in text
    assert (tmp_path / "fusion-only" / "model.int8-cpu.onnx").is_file() and not (tmp_path / "fusion-only" / "asr").exists()
    assert "asr" not in json.loads((tmp_path / "fusion-only" / "report.json").read_text())


def test_no_shipped_checkpoint_is_one_line(tmp_path):
    """Without a packaged checkpoint both commands stop with one line naming the fix."""
    import hbaf.checkpoint as ck

    if (ck.PACKAGED_DIR / ck.CONFIG).is_file():
        pytest.skip("this install ships a checkpoint")
    env = {k: v for k, v in os.environ.items() if k != ck.DEFAULT_ENV}
    env["HBAF_HOME"] = str(tmp_path / "home")
    for cmd in (["bench.cli"], ["export.cli", "all", "--checkpoint", "default"]):
        args = [sys.executable, "-m", *cmd] if cmd[0] != "bench.cli" else [sys.executable, "-m", "bench", "--out", str(tmp_path / "r")]
        proc = subprocess.run(args, capture_output=True, text=True, cwd=str(tmp_path), env={**env, "PYTHONPATH": str(ROOT)},
                              timeout=300)
        assert_one_line_error(proc, "no checkpoint ships with this install", "--checkpoint DIR")
