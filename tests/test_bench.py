"""`hbaf-edge bench` (the `bench` package): table structure, JSON, plot, agreement with PyTorch,
end-to-end mode, bad input, the `hbaf-edge` dispatcher, failing backends while timed.

Everything runs in --quick mode on a tiny model and a handful of espeak-ng utterances; the
assertions check what the benchmark reports and how, never how fast anything was. Every row
must run ("ok"), except the few that cannot on this machine, which must say why.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_one_line_error

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["anger", "joy", "neutral", "sadness"]
SCRIPT = [  # dialogue, index, split, label, text
    ("t1", 0, "train", "joy", "We won the match last night, I still cannot believe it!"),
    ("t1", 1, "train", "neutral", "Okay, see you at noon."),
    ("t2", 0, "train", "anger", "You broke it again and you did not even say sorry."),
    ("v1", 0, "dev", "sadness", "I really miss the old house."),
    ("v1", 1, "dev", "neutral", "The bus comes at eight."),
    ("e1", 0, "test", "sadness", "She packed her bags this morning and left without saying a single word to anyone."),
    ("e1", 1, "test", "neutral", "Do you want some coffee?"),
    ("e1", 2, "test", "joy", "That is wonderful news!"),
    ("e2", 0, "test", "anger", "Stop it right now."),
    ("e2", 1, "test", "neutral", "Where did you put the keys?"),
    ("e2", 2, "test", "anger", "That is the third time this week that you have forgotten to lock the door!"),
]
TABLE_COLUMNS = ["backend", "precision", "size MB", "p50 ms", "p90 ms", "p99 ms", "throughput utt/s", "speed-up",
                 "top-1 agreement", "max prob diff", "weighted F1", "status"]
ROW_KEYS = {"key", "backend", "precision", "status", "size_mb", "p50_ms", "p90_ms", "p99_ms", "throughput_utt_s",
            "speedup_vs_torch_fp32", "top1_agreement", "max_prob_diff", "weighted_f1", "latency", "cold_start", "agreement"}


def _espeak(text: str, path: Path, speed: int) -> None:
    subprocess.run(["espeak-ng", "-s", str(speed), "-w", str(path), text], check=True, capture_output=True)


def _tiny_checkpoint(folder: Path, seed: int, **overrides) -> Path:
    import torch

    from hbaf.checkpoint import save_checkpoint
    from hbaf.model import HBAF, preset
    from hbaf.text import resolve_text_encoder

    torch.manual_seed(seed)
    model = HBAF(preset("tiny", **overrides), LABELS)
    save_checkpoint(model, folder, resolve_text_encoder() / "tokenizer.json")
    return folder


def _bench(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True, timeout=timeout, cwd=str(ROOT))


def _not_runnable_here(rows: dict) -> dict[str, str]:
    """Row key -> the status a row must carry because this machine or the --quick run cannot
    run it (everything else must be "ok"); an ONNX Runtime CUDA row exists only with CUDA."""
    import importlib.util

    import onnxruntime as ort
    import torch

    expected = {
        "torch-compile-fp32": "skipped: --quick (compiling takes minutes",
        "trt-engine": "unavailable: no --engine given",
    }
    if not torch.cuda.is_available():
        expected["torch-cuda"] = f"unavailable: PyTorch {torch.__version__} sees no CUDA GPU"
    if importlib.util.find_spec("torch_tensorrt") is None:
        expected["torch-trt-fp16"] = "unavailable: torch-tensorrt is not installed"
    elif not torch.cuda.is_available():
        expected["torch-trt-fp16"] = "unavailable: Torch-TensorRT needs a CUDA GPU"
    if importlib.util.find_spec("tensorrt") is None:
        expected["trt-engine"] += " (build one on the device with `hbaf-export engine --onnx MODEL.onnx`); TensorRT is not installed here"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert "ort-cuda-fp32" not in rows
    return expected


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    """Real speech (espeak-ng) in a manifest, a tiny student and a tiny teacher checkpoint."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng); the benchmark needs real speech")
    import torch

    torch.set_num_threads(1)  # the machine is small and shared
    root = tmp_path_factory.mktemp("bench")
    data = root / "data"
    (data / "wav").mkdir(parents=True)
    lines = []
    for k, (dia, idx, split, label, text) in enumerate(SCRIPT):
        wav = data / "wav" / f"{dia}_{idx}.wav"
        _espeak(text, wav, 150 + 7 * k)
        lines.append(json.dumps({"audio": f"wav/{wav.name}", "text": text, "label": label, "speaker": f"s{idx % 2}",
                                 "dialogue": dia, "index": idx, "split": split}))
    manifest = data / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return {"root": root, "manifest": manifest, "student": _tiny_checkpoint(root / "student", 0),
            "teacher": _tiny_checkpoint(root / "teacher", 1, d_model=96)}


@pytest.fixture(scope="module")
def inputs(models) -> dict:
    """``models`` plus the student's exports: the FP32 contract graph, the ONNX Runtime CPU graph
    and the two INT8 flavours."""
    from calibration.report import quantize_onnx
    from export.onnx_export import export_onnx

    root, student, manifest = models["root"], models["student"], models["manifest"]
    onnx_path = export_onnx(student, root / "export" / "model.onnx", exporter="torchscript", check=False)
    cpu_graph = export_onnx(student, root / "export" / "model.ort.onnx", graph="ort-cpu", check=False)
    results = quantize_onnx(onnx_path, manifest, root / "export", flavours=("trt",), method="minmax", num=8,
                            threads=1, workers=1)
    results += quantize_onnx(cpu_graph, manifest, root / "export", flavours=("cpu",), method="minmax", num=8,
                             threads=1, workers=1)
    return {**models, "onnx": onnx_path, "cpu_graph": cpu_graph, "int8": {r.flavour: Path(r.path) for r in results}}


@pytest.fixture(scope="module")
def quick(inputs) -> dict:
    out = inputs["root"] / "report"
    proc = _bench("--checkpoint", str(inputs["student"]), "--onnx", str(inputs["onnx"]), str(inputs["cpu_graph"]),
                  "--int8", *(str(p) for p in inputs["int8"].values()), "--teacher", str(inputs["teacher"]),
                  "--manifest", str(inputs["manifest"]), "--quick", "--threads", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "bench.json").read_text())
    return {"proc": proc, "out": out, "report": report, "rows": {r["key"]: r for r in report["fusion"]["rows"]}}


# ----------------------------------------------------------------------------- the quick run


def test_table_json_and_plot_structure(quick):
    stdout, report, out = quick["proc"].stdout, quick["report"], quick["out"]
    header = next(ln for ln in stdout.splitlines() if ln.startswith("| backend"))
    assert [c.strip() for c in header.strip("|").split("|")] == TABLE_COLUMNS
    for key in ("date", "command", "machine", "settings", "fusion", "text", "files"):
        assert key in report, key
    assert report["command"].startswith("hbaf-edge bench --checkpoint")
    for key in ("cpu", "cores", "gpu", "torch", "onnxruntime", "tensorrt", "python"):
        assert key in report["machine"], key
    for fact in ("command:", "machine:", "software:", "threads: 1"):
        assert fact in stdout, fact
    settings = report["settings"]
    assert settings["runs"] == 5 and settings["quick"] is True and settings["threads"] == 1 and settings["torch_threads"] == 1
    fusion = report["fusion"]
    assert fusion["baseline"] == "torch-fp32" and fusion["primary_case"] == "3s-b1" and fusion["throughput_case"] == "3s-b8"
    assert {c["key"] for c in fusion["cases"]} == {f"{s}s-b{b}" for s in (1, 3, 8) for b in (1, 8)}
    for row in fusion["rows"]:
        assert ROW_KEYS <= set(row), row["key"]
        assert row["backend"] in stdout
    png = out / "bench_latency.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "bench.md").read_text() == report["text"]
    assert not list(out.glob(".*tmp*")), "temporary files left behind"


def test_every_backend_has_a_row_and_every_runnable_one_ran(quick):
    rows = quick["rows"]
    for key in ("torch-fp32", "torch-compile-fp32", "ort-fp32", "ort-fp32-cpu-graph", "ort-int8-cpu", "ort-int8-trt",
                "trt-engine", "torch-trt-fp16", "teacher-torch-fp32"):
        assert key in rows, key
    assert [r for r in rows.values() if r["backend"] == "PyTorch CUDA"]
    expected = _not_runnable_here(rows)
    for key, row in rows.items():
        if key in expected:
            assert row["status"].startswith(expected[key]), (key, row["status"])
            assert row["p50_ms"] is None and row["weighted_f1"] is None and not row["latency"]  # no numbers without a run
        else:
            assert row["status"] == "ok", (key, row["status"])
            assert row["p50_ms"] > 0 and row["weighted_f1"] is not None, key


def test_onnx_fp32_agrees_with_pytorch_and_speedups_are_ratios(quick):
    rows = quick["rows"]
    base, ort = rows["torch-fp32"], rows["ort-fp32"]
    assert base["status"] == ort["status"] == "ok"
    assert base["speedup_vs_torch_fp32"] == pytest.approx(1.0)
    assert base["top1_agreement"] == 1.0 and base["max_prob_diff"] == 0.0
    # sequential dialogue evaluation, each backend with its own memory
    assert ort["agreement"]["n"] == sum(1 for s in SCRIPT if s[2] == "test")
    assert ort["top1_agreement"] == 1.0 and ort["max_prob_diff"] < 1e-4
    # the identical (padded, batched) benchmark inputs
    assert ort["bench_inputs_agreement"]["top1_agreement"] == 1.0
    assert ort["bench_inputs_agreement"]["max_prob_diff"] < 1e-4
    assert ort["bench_inputs_agreement"]["n"] == sum(b for _ in (1, 3, 8) for b in (1, 8))
    assert 0.0 <= ort["weighted_f1"] <= 1.0 and ort["weighted_f1"] == pytest.approx(base["weighted_f1"])
    for key, stats in ort["latency"].items():
        assert stats["runs"] == 5
        assert stats["p50_ms"] <= stats["p90_ms"] <= stats["p99_ms"] <= stats["max_ms"]
        assert ort["speedup_by_case"][key] == pytest.approx(base["latency"][key]["p50_ms"] / stats["p50_ms"])
    assert ort["speedup_vs_torch_fp32"] == pytest.approx(base["p50_ms"] / ort["p50_ms"])
    assert ort["size_mb"] > 1 and base["size_mb"] > 1
    samples = quick["report"]["fusion"]["latency_samples_ms"]["3s-b1"]
    assert len(samples["torch-fp32"]) == 5 and len(samples["ort-fp32"]) == 5
    for row in (base, ort):
        assert row["cold_start"]["load_s"] > 0 and row["cold_start"]["first_inference_s"] > 0


def test_inputs_are_real_cropped_and_padded(quick):
    from hbaf.contract import SAMPLE_RATE, ModelSpec, feature_format

    fmt = feature_format(ModelSpec(labels=("a",), context_size=1, memory_dim=1).feature_kind)  # the tiny model's input
    cases = {c["key"]: c for c in quick["report"]["fusion"]["cases"]}
    for sec in (1, 3, 8):
        one, eight = cases[f"{sec}s-b1"], cases[f"{sec}s-b8"]
        assert one["frames"] == [fmt.frames_for(sec * SAMPLE_RATE)]
        assert eight["frames"][0] == fmt.frames_for(sec * SAMPLE_RATE) and len(eight["frames"]) == 8
        assert eight["frames"] == sorted(eight["frames"], reverse=True) and eight["frames"][-1] < eight["frames"][0]
        assert min(eight["tokens"]) >= 3
    # no single test utterance lasts 8 s: consecutive ones of a dialogue are joined
    assert any("joined" in s for s in cases["8s-b1"]["sources"])


def test_cpu_graph_is_its_own_fp32_row(quick):
    row = quick["rows"]["ort-fp32-cpu-graph"]
    assert row["backend"] == "ONNX Runtime (CPU graph)" and row["precision"] == "fp32" and row["status"] == "ok"
    assert row["top1_agreement"] == 1.0 and row["max_prob_diff"] < 1e-4
    assert row["bench_inputs_agreement"]["max_prob_diff"] < 1e-4  # padded batches too


def test_teacher_is_a_second_baseline_row(quick):
    t = quick["rows"]["teacher-torch-fp32"]
    assert t["status"] == "ok" and t["family"] == "teacher"
    assert t["weighted_f1"] is not None and t["p50_ms"] > 0
    assert t["top1_agreement"] is None  # another model: no agreement with the student


def test_int8_rows(quick):
    rows = quick["rows"]
    cpu, trt = rows["ort-int8-cpu"], rows["ort-int8-trt"]
    assert cpu["backend"] == "ONNX Runtime INT8 (CPU form)" and trt["backend"] == "ONNX Runtime Q/DQ s8 (TensorRT form)"
    for r in (cpu, trt):
        assert r["status"] == "ok" and r["precision"].startswith("int8")
        assert 0.0 <= r["top1_agreement"] <= 1.0 and 0.0 < r["max_prob_diff"] < 0.5
    assert cpu["size_mb"] < rows["ort-fp32"]["size_mb"] / 3
    checks = {c["what"] for c in quick["report"]["fusion"]["targets"]}
    assert any("vs PyTorch FP32 eager" in c for c in checks) and any("size" in c for c in checks)
    assert any("same CPU graph" in c for c in checks)
    assert "### Targets" in quick["proc"].stdout


# ----------------------------------------------------------------------------- end to end


def test_e2e_quick(models, tmp_path):
    import soundfile as sf

    from hbaf.audio import load_audio
    from hbaf.contract import SAMPLE_RATE

    pieces = [np.zeros(int(0.5 * SAMPLE_RATE), np.float32)]
    for k, text in enumerate(["I cannot believe you did that again.", "Well, that is fine, let us go home now."]):
        wav = tmp_path / f"u{k}.wav"
        _espeak(text, wav, 160)
        pieces += [load_audio(wav), np.zeros(int(1.2 * SAMPLE_RATE), np.float32)]
    recording = tmp_path / "talk.wav"
    sf.write(str(recording), np.concatenate(pieces), SAMPLE_RATE, subtype="PCM_16")
    out = tmp_path / "e2e"
    proc = _bench("--checkpoint", str(models["student"]), "--e2e", str(recording), "--quick", "--threads", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    e = json.loads((out / "bench.json").read_text())["e2e"]
    assert "fusion" not in json.loads((out / "bench.json").read_text())
    assert e["utterances"] == 2 and len(e["events"]) == 2
    assert e["real_time_factor"] > 0 and e["audio_seconds"] == pytest.approx(sum(p.size for p in pieces) / SAMPLE_RATE, abs=0.05)
    assert set(e["compute_share"]) == {"vad", "asr", "features", "fusion"}  # read as fast as possible: no speculation
    assert e["speculation"] is None and e["speech_end_latency_ms"]["p50"] >= e["latency_ms"]["p50"]
    assert sum(e["compute_share"].values()) == pytest.approx(1.0)
    for key in ("latency_ms", "processing_ms"):
        assert e[key]["p50"] <= e[key]["p90"] <= e[key]["max"]
    assert e["processing_ms"]["p50"] <= e["latency_ms"]["max"]
    assert "real-time factor" in proc.stdout and "share of compute" in proc.stdout
    assert (out / "e2e_latency.png").read_bytes()[:4] == b"\x89PNG"


# ----------------------------------------------------------------------------- bad input


def test_bad_inputs_give_one_line_and_exit_2(inputs, tmp_path):
    out = tmp_path / "out"
    common = ["--manifest", str(inputs["manifest"]), "--quick", "--threads", "1", "--out", str(out)]
    assert_one_line_error(_bench("--checkpoint", str(tmp_path / "nope"), *common), "--checkpoint", "not found")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(inputs["onnx"].read_bytes()[:4096])  # a truncated copy
    assert_one_line_error(_bench("--checkpoint", str(inputs["student"]), "--onnx", str(corrupt), *common), "corrupt.onnx")
    assert_one_line_error(_bench("--checkpoint", str(inputs["student"]), "--out", str(out)), "--manifest")
    assert_one_line_error(_bench("--checkpoint", str(inputs["student"]), "--lengths", "3,12", *common), "--lengths")
    assert not (out / "bench.json").exists()


# ----------------------------------------------------------------------------- pieces


def test_compare_probs_counts_non_finite_outputs():
    from bench.evaluation import compare_probs

    ref = np.array([[0.7, 0.3], [0.2, 0.8], [0.5, 0.5 + 1e-3]])
    got = np.array([[0.6, 0.4], [np.nan, np.nan], [0.5, 0.5 + 1e-3]])
    c = compare_probs(ref, got)
    assert c["top1_agreement"] == pytest.approx(2 / 3) and c["non_finite_outputs"] == 1 and c["max_prob_diff"] == float("inf")
    ok = compare_probs(ref, ref)
    assert ok["top1_agreement"] == 1.0 and ok["max_prob_diff"] == 0.0


def test_latency_stats():
    from edge_runtime.timing import latency_stats

    s = latency_stats([float(x) for x in range(1, 101)], batch=4)
    assert s["p50_ms"] == pytest.approx(50.5) and s["p90_ms"] == pytest.approx(90.1) and s["p99_ms"] == pytest.approx(99.01)
    assert s["throughput_utt_s"] == pytest.approx(4 * 1000 / 50.5) and s["runs"] == 100


def test_hbaf_edge_dispatches_bench_and_the_runtime(capsys):
    """The runtime's console script (edge_runtime.cli.main) finds `bench` through its entry
    point and hands it the rest of the arguments."""
    from edge_runtime.cli import main as hbaf_edge

    with pytest.raises(SystemExit) as done:
        hbaf_edge(["--help"])
    assert done.value.code == 0
    listing = capsys.readouterr().out
    assert "bench" in listing and "latency benchmark" in listing and "devices" in listing and "doctor" in listing
    with pytest.raises(SystemExit) as done:
        hbaf_edge(["bench", "--help"])
    assert done.value.code == 0 and "usage: hbaf-edge bench" in capsys.readouterr().out
    for argv, words in ((["bench", "--lengths", "3,12"], ("--lengths", "hbaf-edge bench --help")),
                        (["-v", "bench", "--batch", "0"], ("--batch",)),
                        (["bench", "--checkpoint", "/nonexistent/ckpt", "--manifest", "m.jsonl"], ("--checkpoint", "not found")),
                        (["bogus"], ("invalid choice", "hbaf-edge --help"))):
        assert hbaf_edge(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and all(w in err[0] for w in words), (argv, err)



def test_a_missing_bench_plug_in_is_one_line(tmp_path):
    """The packages on sys.path without an install (no entry points, nothing else either): `hbaf-edge
    bench` says what is missing and how to install it, before anything heavy is imported."""
    src = tmp_path / "src"
    src.mkdir()
    for pkg in ("hbaf", "edge_runtime", "bench"):
        (src / pkg).symlink_to(ROOT / pkg)
    code = f"import sys; sys.path.insert(0, {str(src)!r}); from edge_runtime.cli import main; sys.exit(main(sys.argv[1:]))"
    for argv in (["bench", "--quick"], ["-v", "bench"]):
        proc = subprocess.run([sys.executable, "-I", "-S", "-c", code, *argv], capture_output=True, text=True, timeout=120,
                              cwd=tmp_path)
        assert_one_line_error(proc, "`hbaf-edge bench`", "no 'bench' entry point", "pip install -e .")


def _lineup(models: dict, teacher: bool = True):
    """The student (baseline) and teacher rows, opened, with their families."""
    from bench.backends import Spec
    from bench.cases import Family
    from bench.lineup import Settings
    from bench.lineup import BASELINE, TEACHER, Lineup, Row

    settings = Settings(models["student"], None, [], [], models["teacher"], models["manifest"], [3.0], [1], 3, 1, 1, True,
                        None, "test", "off", "process", 1)
    lineup = Lineup(settings)
    families = {}
    for key, family in ((BASELINE, "student"), (TEACHER, "teacher"))[: 2 if teacher else 1]:
        path = str(models[family])
        lineup.open(lineup.add(Row(key, key, "fp32", family=family, spec=Spec(key, key, "torch", path, family=family))), fatal=True)
        backend = lineup.backends[key]
        families[family] = Family(family, key, backend.spec, backend.tokenizer(), first_call=backend.dummy_feeds())
    return lineup, families


def test_a_backend_failing_while_timed_is_marked_failed_and_the_baseline_raises(models):
    """Real backends on real inputs: the teacher (memory width 96) given the student's feeds fails
    inside PyTorch; the baseline given the teacher's feeds makes the benchmark stop."""
    from bench.cases import Case
    from bench.lineup import BASELINE, TEACHER
    from bench.timing import measure

    lineup, families = _lineup(models)
    student, teacher = lineup.backends[BASELINE], lineup.backends[TEACHER]
    assert student.memory_dim != teacher.memory_dim
    case = Case(3.0, 1, feeds={"student": student.dummy_feeds(), "teacher": student.dummy_feeds()})
    raw = measure(lineup, [case], families, runs=3, warmup=1)
    assert lineup.row(TEACHER).status.startswith("failed: warm-up on 3s-b1: "), lineup.row(TEACHER).status
    assert not lineup.row(TEACHER).latency and lineup.row(BASELINE).latency["3s-b1"]["runs"] == 3
    assert set(raw["3s-b1"]) == {BASELINE} and len(raw["3s-b1"][BASELINE]) == 3
    assert lineup.runnable() == [lineup.row(BASELINE)]

    lineup.row(TEACHER).status = "ok"
    case = Case(3.0, 1, feeds={"student": teacher.dummy_feeds(), "teacher": teacher.dummy_feeds()})
    with pytest.raises(RuntimeError):
        measure(lineup, [case], families, runs=3, warmup=1)


def test_cold_start_in_a_fresh_process(models, tmp_path):
    """The child process (`python -m bench --cold-start-child`) imports torch itself, opens the
    checkpoint and runs the first call; its numbers replace the inline ones."""
    from bench.cold_start import cold_start_processes
    from bench.lineup import BASELINE

    lineup, families = _lineup(models, teacher=False)
    cold_start_processes(lineup, families, tmp_path)
    cs = lineup.row(BASELINE).cold_start
    assert cs["mode"] == "process" and "error" not in cs, cs
    assert cs["import_preloaded"] is False and cs["import_s"] > 0 and cs["load_s"] > 0
    assert cs["first_inference_s"] > 0 and cs["second_inference_s"] > 0 and cs["peak_rss_mb"] > cs["rss_after_import_mb"] > 0
