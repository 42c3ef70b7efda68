"""The student on a CUDA GPU: PyTorch FP32 and FP16 against the CPU, on real test utterances.

Two steps, because the GPU machine need not have the recogniser that computes the model's
input (CTranslate2 Whisper) or the corpus:

    # here: whole test dialogues with their cached encoder states (float16), texts and labels
    python -m studies.gpu_check pack --corpus meld-tts --limit 60 --out gpu-check/test.npz
    # on the GPU machine (torch with CUDA; onnxruntime for the INT8 row)
    python -m studies.gpu_check run --data gpu-check/test.npz --checkpoint hbaf/assets/student \
        --int8 hbaf/assets/default.onnx --out gpu-report

``run`` replays every dialogue through the runtime's own call (``edge_runtime.offline``) on
PyTorch CPU FP32 (the reference), PyTorch CUDA FP32, PyTorch CUDA FP16 and the INT8 model on
ONNX Runtime, and reports each one's agreement with the reference, its largest probability
difference and its weighted F1; then the latency of one fusion call (batch 1 and 8, three
utterance lengths, the dialogue memory full) per backend. Writes gpu_check.json and
gpu_check.md into --out.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from hbaf.errors import ArgumentParser, HBAFError, cli_entry

LENGTHS_S = (1.0, 3.0, 8.0)
BATCHES = (1, 8)


def pack(args) -> int:
    from hbaf.checkpoint import read_meta, resolve_checkpoint
    from hbaf.data.manifest import load_manifest
    from hbaf.data.store import FeatureStore, corpus_manifest, feature_cache_path, take_dialogue_indices

    meta = read_meta(resolve_checkpoint(args.checkpoint))
    kind = meta["config"]["feature_kind"]
    manifest = corpus_manifest(args.corpus) if args.corpus else Path(args.manifest)
    records = load_manifest(manifest)
    store = FeatureStore.from_cache(records, feature_cache_path(manifest, kind=kind), kind)
    if store is None:
        raise HBAFError(f"no {kind} feature cache for {manifest}; run `hbaf train` or `hbaf evaluate` on it once")
    picked = take_dialogue_indices(records, args.limit, splits=[args.split], seed=0)
    chosen = [records[i] for i in picked]
    feats = [store[i].astype(np.float16) for i in picked]
    dialogue_ids = {d: k for k, d in enumerate(dict.fromkeys(r.dialogue for r in chosen))}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, flat=np.concatenate(feats), offsets=np.cumsum([0] + [f.shape[0] for f in feats]),
                        texts=np.array([r.text for r in chosen]), labels=np.array([r.label for r in chosen]),
                        dialogue=np.array([dialogue_ids[r.dialogue] for r in chosen]), kind=np.array(kind))
    print(f"{len(chosen)} {args.split} utterances of {len(dialogue_ids)} dialogues -> {out} "
          f"({out.stat().st_size / 1e6:.1f} MB)")
    return 0


def _timed(backend, feeds, runs: int, warmup: int) -> float:
    for _ in range(warmup):
        backend.run(feeds)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        backend.run(feeds)  # returns host arrays: the GPU work is finished when it returns
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def _batch_feeds(backend, feats: np.ndarray, ids: np.ndarray, batch: int) -> dict[str, np.ndarray]:
    k, d = backend.context_size, backend.memory_dim
    rng = np.random.default_rng(0)
    memory = rng.standard_normal((1, k, d)).astype(np.float32)
    one = backend.feeds(feats, ids, np.ones_like(ids), memory, np.ones((1, k), np.float32))
    return {name: np.repeat(v, batch, axis=0) for name, v in one.items()}


def run(args) -> int:
    import torch

    from edge_runtime.backends import OnnxBackend, TorchBackend
    from edge_runtime.offline import run_dialogues
    from hbaf.metrics import classification_report

    if args.device == "cuda" and not torch.cuda.is_available():
        raise HBAFError(f"PyTorch {torch.__version__} sees no CUDA GPU; run this on a machine with one (or --device cpu to try it)")
    with np.load(args.data, allow_pickle=False) as z:
        flat, offsets = z["flat"], z["offsets"]
        texts, labels, dialogue = [str(t) for t in z["texts"]], [str(x) for x in z["labels"]], z["dialogue"]
    feats = [flat[offsets[i]: offsets[i + 1]].astype(np.float32) for i in range(len(texts))]
    dialogues: dict[int, list[int]] = {}
    for i, d in enumerate(dialogue.tolist()):
        dialogues.setdefault(d, []).append(i)
    torch.set_num_threads(args.threads)
    backends = {"PyTorch CPU FP32": TorchBackend(args.checkpoint, threads=args.threads)}
    if args.device == "cuda":
        backends["PyTorch CUDA FP32"] = TorchBackend(args.checkpoint, device="cuda")
        backends["PyTorch CUDA FP16"] = TorchBackend(args.checkpoint, device="cuda", fp16=True)
    if args.int8:
        backends["ONNX Runtime INT8 (CPU)"] = OnnxBackend(Path(args.int8), threads=args.threads)
    reference = None
    rows = []
    for name, backend in backends.items():
        tok = backend.tokenizer()
        res = run_dialogues(backend, tok, list(dialogues.values()), feats, texts)
        pred = res["probs"].argmax(1)
        if reference is None:
            reference = res["probs"]
        report = classification_report([backend.labels.index(x) for x in labels], pred, backend.labels)
        row = {"backend": name, "n": len(texts), "weighted_f1": 100 * report["weighted_f1"],
               "accuracy": 100 * report["accuracy"],
               "agreement": 100 * float((pred == reference.argmax(1)).mean()),
               "max_abs_prob_diff": float(np.abs(res["probs"] - reference).max()), "latency_ms": {}}
        ids, _ = tok([texts[0]])
        for seconds in LENGTHS_S:
            frames = max(1, round(seconds * 50))
            sample = next((f for f in feats if f.shape[0] >= frames), max(feats, key=len))
            f = np.resize(sample, (frames, sample.shape[1]))
            for batch in BATCHES:
                row["latency_ms"][f"{seconds:g}s_b{batch}"] = _timed(backend, _batch_feeds(backend, f, ids, batch),
                                                                     args.runs, args.warmup)
        rows.append(row)
        print(json.dumps(row), flush=True)
    base = rows[0]["latency_ms"]
    cuda32 = rows[1 if args.device == "cuda" else 0]["latency_ms"]
    facts = {"gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else "none (--device cpu)", "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
             "threads": args.threads, "runs": args.runs, "warmup": args.warmup, "data": str(args.data)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps({"facts": facts, "rows": rows}, indent=2))
    cases = list(base)
    lines = [f"GPU {facts['gpu']}, torch {facts['torch']}, CPU rows with {args.threads} threads; "
             f"{rows[0]['n']} MELD-TTS test utterances (synthetic speech); median of {args.runs} calls.", "",
             "| backend | weighted F1 | agreement with CPU FP32 | max prob diff | " + " | ".join(f"{c} ms" for c in cases)
             + f" | 3s b1 vs CPU FP32 | 3s b1 vs {args.device.upper()} FP32 |",
             "|---" * (6 + len(cases)) + "|"]
    for r in rows:
        lat = r["latency_ms"]
        lines.append(f"| {r['backend']} | {r['weighted_f1']:.2f} | {r['agreement']:.2f} % | {r['max_abs_prob_diff']:.1e} | "
                     + " | ".join(f"{lat[c]:.2f}" for c in cases)
                     + f" | {base['3s_b1'] / lat['3s_b1']:.2f}x | {cuda32['3s_b1'] / lat['3s_b1']:.2f}x |")
    (out / "gpu_check.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


@cli_entry
def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="python -m studies.gpu_check", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="test dialogues with their cached encoder states, for a GPU machine")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--corpus")
    src.add_argument("--manifest")
    p.add_argument("--checkpoint", default="default", help="the model whose feature kind to pack (default: the packaged one)")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, default=60, help="utterances (whole dialogues, a seeded draw)")
    p.add_argument("--out", required=True)
    p.set_defaults(fn=pack)
    p = sub.add_parser("run", help="CPU FP32 vs CUDA FP32/FP16 (and INT8) on the packed utterances")
    p.add_argument("--data", required=True)
    p.add_argument("--checkpoint", default="hbaf/assets/student")
    p.add_argument("--int8", default=None, help="an INT8 ONNX model for an ONNX Runtime row")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="cpu: the same rows without a GPU, to try the script")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--out", required=True)
    p.set_defaults(fn=run)
    args = ap.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    raise SystemExit(main())
