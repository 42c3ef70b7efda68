"""What a Jetson says about itself: the Jetson Linux (L4T) release and the board model.

Two files hold it: ``/etc/nv_tegra_release`` (``# R36 (release), REVISION: 4.3, GCID: ...``)
and ``/proc/device-tree/model`` (``NVIDIA Jetson AGX Orin Developer Kit``, NUL-terminated).
The parsers are pure functions over that text, so they are tested with the text as input; the
readers return "" off a Jetson. Engine sidecars record both (every Orin module reports the GPU
name "Orin" and compute capability 8.7, so only the board tells an AGX Orin from an Orin Nano),
and ``hbaf-edge doctor`` reports them.
"""

from __future__ import annotations

import re
from pathlib import Path

TEGRA_RELEASE = Path("/etc/nv_tegra_release")
DEVICE_TREE_MODEL = Path("/proc/device-tree/model")

# Jetson Linux release -> JetPack (NVIDIA's JetPack archive and release notes)
_JETPACK = {
    "36.4.4": "6.2.1",
    "36.4.3": "6.2",
    "36.4.0": "6.1",
    "36.3.0": "6.0",
    "36.2.0": "6.0 DP",
}
_JETPACK_MAJOR = {"38": "7", "36": "6", "35": "5.1", "34": "5.0 DP", "32": "4"}
SUPPORTED_L4T = "36.4"  # JetPack 6.1 / 6.2 / 6.2.1: TensorRT 10.3, CUDA 12.6, Python 3.10

_RELEASE_RE = re.compile(r"R(?P<major>\d+)\s*\(release\),\s*REVISION:\s*(?P<revision>\d+(?:\.\d+)*)")


def parse_l4t_release(text: str) -> str:
    """``"# R36 (release), REVISION: 4.3, ..."`` -> ``"36.4.3"`` (always three parts); "" when not that format."""
    m = _RELEASE_RE.search(text or "")
    if not m:
        return ""
    parts = [m.group("major"), *m.group("revision").split(".")]
    parts += ["0"] * (3 - len(parts))
    return ".".join(parts[:3])


def jetpack_for_l4t(l4t: str) -> str:
    """The JetPack release of a Jetson Linux release (``"36.4.3"`` -> ``"6.2"``); "" when unknown."""
    if not l4t:
        return ""
    parts = (l4t.split(".") + ["0", "0"])[:3]
    exact = _JETPACK.get(".".join(parts))
    if exact:
        return exact
    if parts[:2] == ["36", "4"]:
        return "6.2.x"  # a later 36.4 point release
    major = _JETPACK_MAJOR.get(parts[0])
    return f"{major} (unlisted release)" if major else ""


def parse_board_model(text: str) -> str:
    """The device-tree model string without its NUL terminator and padding."""
    return (text or "").replace("\x00", "").strip()


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", "replace")
    except OSError:
        return ""


def read_l4t_release(path: Path = TEGRA_RELEASE) -> str:
    """This machine's Jetson Linux release ("36.4.3"), "" off a Jetson."""
    return parse_l4t_release(_read(path))


def read_board_model(path: Path = DEVICE_TREE_MODEL) -> str:
    """The device tree's board model ("NVIDIA Jetson Orin Nano Developer Kit"), "" where there is none."""
    return parse_board_model(_read(path))


def jetson_facts() -> tuple[str, str]:
    """(Jetson Linux release, board) of this machine; ("", "") off a Jetson."""
    release = read_l4t_release()
    return release, (read_board_model() if release else "")
