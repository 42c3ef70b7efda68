"""The runtime's fusion call, and the one offline path built on it.

``fuse_utterance`` is what the live pipeline does for every utterance: tokens of the text,
the dialogue memory (emptied first after a long pause), one backend call, and the new
utterance embedding pushed into the memory. ``run_dialogues`` replays whole dialogues
through exactly that call, with a fresh ``DialogueMemory`` per dialogue, so everything
measured offline — export parity, INT8 accuracy and agreement, benchmark accuracy, the
end-to-end analysis — is measured on the path the device runs. (Training keeps its own
batched loop; tests check that it gives the same probabilities.)
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from edge_runtime.backends import Backend
from edge_runtime.memory import DialogueMemory
from hbaf.text import Tokenizer


def fuse_utterance(
    backend: Backend,
    tokenizer: Tokenizer,
    memory: DialogueMemory,
    feats: np.ndarray,
    text: str,
    start: float,
    end: float,
) -> tuple[dict[str, Any], int]:
    """One fusion call exactly as the runtime makes it: tokens of ``text``, the dialogue memory
    (emptied first when the pause since the last utterance is too long), the backend, and the
    new utterance embedding pushed when the outputs are finite.

    Returns (the backend's outputs plus ``finite``, how many past utterances the memory held).
    """
    ids, mask = tokenizer([text])
    memory.before(start)
    mem, mem_mask = memory.arrays()
    context = len(memory)
    out = dict(backend.run(backend.feeds(feats, ids, mask, mem, mem_mask)))
    out["finite"] = bool(np.all(np.isfinite(out["probs"])) and np.all(np.isfinite(out["utt_emb"])))
    if out["finite"]:
        memory.push(out["utt_emb"][0], end=end)
    return out, context


def run_dialogues(
    backend: Backend,
    tokenizer: Tokenizer,
    dialogues: Sequence[Sequence[int]],
    feats: Sequence[np.ndarray] | Callable[[int], np.ndarray],
    texts: Sequence[str],
    *,
    window: int | None = None,
    desc: str | None = None,
) -> dict[str, np.ndarray]:
    """Every dialogue, utterance by utterance, through ``fuse_utterance`` with its own memory.

    ``dialogues`` holds indices into ``feats``/``texts`` in spoken order; ``feats`` is a sequence
    (e.g. a ``FeatureStore``) or a function of the index. ``window`` limits the memory as
    ``--context`` does. Returns arrays indexed like ``texts``: ``probs`` [N, C], ``utt_emb``
    [N, D], ``gate`` [N, 2] (and ``audio_probs`` / ``text_probs`` [N, C] when the model has the
    uni-modal heads), ``context`` [N] (past utterances seen), and the ``memory`` [N, K, D]
    / ``memory_mask`` [N, K] each utterance was given (to replay it, e.g. in a batch).
    """
    from tqdm import tqdm

    get = feats if callable(feats) else feats.__getitem__
    n, k, d = len(texts), backend.context_size, backend.memory_dim
    res = {name: np.zeros(shape, np.float32) for name, shape in backend.spec.output_shapes(n).items()}
    res["context"] = np.zeros((n,), np.int32)
    res["memory"], res["memory_mask"] = np.zeros((n, k, d), np.float32), np.zeros((n, k), np.float32)
    total = sum(len(g) for g in dialogues)
    with tqdm(total=total, desc=desc, unit="utt", leave=False, disable=desc is None) as bar:
        for dialogue in dialogues:
            memory = DialogueMemory(k, d, window=window, reset_after=None)
            for i in dialogue:
                mem, mem_mask = memory.arrays()
                res["memory"][i], res["memory_mask"][i] = mem[0], mem_mask[0]
                out, context = fuse_utterance(backend, tokenizer, memory, get(i), texts[i], 0.0, 0.0)
                for key in backend.spec.outputs:
                    res[key][i] = out[key][0]
                res["context"][i] = context
                bar.update(1)
    return res
