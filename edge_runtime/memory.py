"""Dialogue memory: the state the runtime carries between fusion calls.

The exported graph is stateless; like a decoder's KV cache, the last K fused
utterance embeddings live here and go back into every call as
``memory [1, K, D]`` + ``memory_mask [1, K]`` in the model's (and training's)
convention: left-padded with zeros, newest utterance in the last slot, mask 1 for
filled slots. ``window`` (<= K) limits how many past utterances are used; 0 turns
the context off. A pause longer than ``reset_after`` seconds of stream time between
two utterances starts a new dialogue (the memory is emptied), as does ``reset()``
(``hbaf-edge run`` calls it on SIGUSR1: ``kill -USR1 <pid>`` when a new conversation
begins).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from hbaf.errors import HBAFError

DEFAULT_RESET_AFTER = 30.0


class DialogueMemory:
    """The last ``window`` utterance embeddings of the current dialogue (``window <= context_size``)."""

    def __init__(
        self,
        context_size: int,
        dim: int,
        *,
        window: int | None = None,
        reset_after: float | None = DEFAULT_RESET_AFTER,
    ) -> None:
        if context_size < 0 or dim <= 0:
            raise HBAFError(f"invalid dialogue memory size K={context_size}, D={dim}; the model file is inconsistent, export it again")
        window = context_size if window is None else int(window)
        if not 0 <= window <= context_size:
            raise HBAFError(f"--context {window} is outside 0..{context_size} (the model was trained with K={context_size}); pass a value in that range")
        if reset_after is not None and reset_after < 0:
            raise HBAFError(f"--reset-after must be >= 0 seconds (0 = never), got {reset_after}")
        self.context_size = int(context_size)
        self.dim = int(dim)
        self.window = window
        self.reset_after = reset_after or None
        self._items: deque[np.ndarray] = deque(maxlen=max(window, 1))
        self._last_end: float | None = None
        self.resets = 0

    def __len__(self) -> int:
        return len(self._items) if self.window else 0

    def reset(self) -> None:
        """Forget the dialogue (the next utterance starts a new one)."""
        if self._items:
            self.resets += 1
        self._items.clear()
        self._last_end = None

    def before(self, start: float) -> bool:
        """Call with an utterance's stream start time before using ``arrays()``; empties the
        memory when the pause since the previous utterance exceeds ``reset_after``. Returns
        True when it did."""
        if self.reset_after is not None and self._last_end is not None and start - self._last_end > self.reset_after:
            self.reset()
            return True
        return False

    def push(self, utt_emb: np.ndarray, end: float | None = None) -> None:
        """Append one utterance embedding ([D] or [1, D]); ``end`` is its stream end time."""
        v = np.asarray(utt_emb, dtype=np.float32).reshape(-1)
        if v.size != self.dim:
            raise HBAFError(f"utterance embedding has {v.size} values, the memory holds {self.dim}; the model's outputs do not match its metadata")
        if self.window:
            self._items.append(v.copy())
        if end is not None:
            self._last_end = float(end)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(memory [1, K, D] float32, memory_mask [1, K] float32): left-padded, newest last."""
        k = self.context_size
        memory = np.zeros((1, k, self.dim), dtype=np.float32)
        mask = np.zeros((1, k), dtype=np.float32)
        n = len(self)
        if n:
            memory[0, k - n :] = np.stack(self._items)
            mask[0, k - n :] = 1.0
        return memory, mask
