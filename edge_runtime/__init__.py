"""hbaf-edge's runtime: sources, VAD, ASR, backends, the live pipeline and its events.

The API for programs (``edge_runtime/stream.py``)::

    from edge_runtime import EmotionStream, Event, RunOptions, Summary, stream_file, stream_microphone

These names are imported on first use, so that ``import edge_runtime.<module>`` stays light.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_HOMES = {
    "EmotionStream": "edge_runtime.stream",
    "stream_file": "edge_runtime.stream",
    "stream_microphone": "edge_runtime.stream",
    "Event": "edge_runtime.events",
    "RunOptions": "edge_runtime.options",
    "Summary": "edge_runtime.summary",
}
__all__ = ["EmotionStream", "Event", "RunOptions", "Summary", "stream_file", "stream_microphone"]

if TYPE_CHECKING:
    from edge_runtime.events import Event
    from edge_runtime.options import RunOptions
    from edge_runtime.stream import EmotionStream, stream_file, stream_microphone
    from edge_runtime.summary import Summary


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'edge_runtime' has no attribute {name!r}")
    value = getattr(import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
