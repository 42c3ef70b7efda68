"""The studies (studies/, run as ``python -m studies.<name>``): each starts and explains itself,
none patches the import path or restates the contract; scripts/ holds the install, quickstart
and test scripts only."""

from __future__ import annotations

import ast
import pkgutil
import runpy
import sys
import warnings
from pathlib import Path

import pytest

import studies

REPO = Path(__file__).resolve().parents[1]
STUDIES = sorted(m.name for m in pkgutil.iter_modules(studies.__path__))
SCRIPTS = {"install.sh", "quickstart.sh", "test.sh", "jetson-constraints.txt"}  # the last: install.sh's pins on a Jetson
SCRIPTS_LEAVING = {"soak.py"}  # becoming a bench mode


def test_the_studies_are_found():
    assert {"check_prosody", "gpu_check", "latency_analysis", "real_voices", "sentence_end_analysis"} <= set(STUDIES)


@pytest.mark.parametrize("name", STUDIES)
def test_study_help(name, monkeypatch, capsys):
    """``python -m studies.<name> --help`` prints its usage and exits 0 (its imports resolve)."""
    monkeypatch.setattr(sys, "argv", [f"studies/{name}.py", "--help"])
    with warnings.catch_warnings(), pytest.raises(SystemExit) as exit_:
        warnings.simplefilter("ignore", RuntimeWarning)  # a study another study imports is already loaded
        runpy.run_module(f"studies.{name}", run_name="__main__", alter_sys=True)
    assert exit_.value.code in (0, None)
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m studies.{name}"), out[:200]


def restatements(tree: ast.AST) -> list[str]:
    """Where a module patches ``sys.path`` or writes the sample rate or a window length as a number."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", None) == "sys":
            found.append(f"line {node.lineno}: sys.path")
        elif isinstance(node, ast.Constant) and type(node.value) in (int, float) and node.value == 16000:
            found.append(f"line {node.lineno}: 16000 (import SAMPLE_RATE from hbaf.contract)")
        elif isinstance(node, ast.keyword) and node.arg and node.arg.endswith("window_s") and isinstance(node.value, ast.Constant):
            found.append(f"line {node.lineno}: {node.arg}={node.value.value} (import the window from hbaf.contract)")
    return found


@pytest.mark.parametrize("name", STUDIES)
def test_study_uses_the_package_and_the_contract(name):
    path = REPO / "studies" / f"{name}.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assert not restatements(tree), f"{path}: {restatements(tree)}"
    assert "__main__" in path.read_text(encoding="utf-8"), f"{path} cannot be run with python -m studies.{name}"


def test_checker_sees_restatements():
    tree = ast.parse("import sys\nsys.path.insert(0, '.')\nx = 16000\nf(encoder_window_s=10.0)\n")
    assert len(restatements(tree)) == 3


def test_scripts_holds_install_quickstart_and_test_only():
    tracked = {p.name for p in (REPO / "scripts").iterdir() if p.is_file()}
    extra = tracked - SCRIPTS - SCRIPTS_LEAVING
    assert not extra, f"scripts/ holds {sorted(extra)}: a product step is a command, a study goes to studies/"
