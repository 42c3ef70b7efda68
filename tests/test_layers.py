"""The layers only point down (DESIGN "Architecture rules"), checked on the source itself.

Every ``import`` and ``from ... import`` in the product's packages, at module level or inside
a function, is read with ``ast`` and resolved to the package it names:

    hbaf           <- edge_runtime <- export <- calibration <- bench
    (contract, features, text, model, data, train)   (sources, VAD, ASR, backends, pipeline)

- ``hbaf`` imports none of the others;
- ``edge_runtime`` imports only ``hbaf``, and not its training side (``hbaf.train``, ``hbaf.cli``);
- ``export`` imports ``hbaf`` and ``edge_runtime``; its command line alone (``export/cli.py``)
  dispatches to ``calibration``, whose quantization is one of the export steps;
- ``calibration`` imports ``hbaf``, ``edge_runtime`` and ``export``;
- ``bench`` may import all of them.

A contract fact restated outside ``hbaf/contract.py`` is caught too: the tensor names and the
metadata key appear as string constants in no other product module.
"""

from __future__ import annotations

import ast
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("hbaf", "edge_runtime", "export", "calibration", "bench")
ALLOWED = {
    "hbaf": {"hbaf"},
    "edge_runtime": {"hbaf", "edge_runtime"},
    "export": {"hbaf", "edge_runtime", "export"},
    "calibration": {"hbaf", "edge_runtime", "export", "calibration"},
    "bench": set(PACKAGES),
}
EXCEPTIONS = {("export/cli.py", "calibration")}  # the one export entry dispatches int8/compare/all
TRAINING_SIDE = ("hbaf.train", "hbaf.cli")  # never imported by the runtime


def _modules(root: Path = ROOT) -> list[Path]:
    return sorted(p for pkg in PACKAGES if (root / pkg).is_dir() for p in (root / pkg).rglob("*.py"))


def imported_modules(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``, relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((node.lineno, name))
            found.extend((node.lineno, f"{name}.{alias.name}") for alias in node.names)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in ("import_module", "__import__"):
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value))
    return found


def layer_violations(root: Path = ROOT) -> list[str]:
    problems = []
    for path in _modules(root):
        rel = path.relative_to(root).as_posix()
        layer = rel.split("/")[0]
        for line, name in imported_modules(path, root):
            top = name.split(".")[0]
            if top not in PACKAGES:
                continue
            if top not in ALLOWED[layer] and (rel, top) not in EXCEPTIONS:
                problems.append(f"{rel}:{line} imports {name} ({layer} must not depend on {top})")
            if layer == "edge_runtime" and name.startswith(TRAINING_SIDE):
                problems.append(f"{rel}:{line} imports {name} (the runtime never imports the training side)")
    return problems


def test_layers_point_down():
    problems = layer_violations()
    assert not problems, "imports against the layer rules:\n" + "\n".join(problems)


def test_every_package_is_checked():
    files = {p.relative_to(ROOT).parts[0] for p in _modules()}
    assert files == set(PACKAGES), f"layer test sees {sorted(files)}"


def test_checker_catches_a_forbidden_edge(tmp_path):
    """The checker itself: an upward import planted in a copy of the runtime is reported."""
    fake_root = tmp_path / "repo"
    for pkg in PACKAGES:
        (fake_root / pkg).mkdir(parents=True)
        (fake_root / pkg / "__init__.py").write_text("")
    (fake_root / "edge_runtime" / "bad.py").write_text("def f():\n    from export.engine import EngineBuilder\n")
    (fake_root / "edge_runtime" / "worse.py").write_text("from hbaf.train import train\nfrom . import backends\n")
    (fake_root / "export" / "cli.py").write_text("from calibration.report import export_all\n")
    (fake_root / "export" / "engine.py").write_text("import calibration.quantize\n")
    problems = layer_violations(fake_root)
    assert any("edge_runtime/bad.py:2 imports export.engine" in p for p in problems)
    assert any("edge_runtime/worse.py:1 imports hbaf.train" in p for p in problems)
    assert any("export/engine.py:1 imports calibration.quantize" in p for p in problems)
    assert not any(p.startswith("export/cli.py") for p in problems)
    assert not any("edge_runtime.backends" in p for p in problems)


CONTRACT_NAMES = ("audio_feats", "audio_mask", "input_ids", "attention_mask", "memory", "memory_mask",
                  "probs", "utt_emb", "gate")
INPUT_NAMES = CONTRACT_NAMES[:6]
INPUT_ONLY = ("audio_feats", "audio_mask", "attention_mask")  # words nothing but a feed builder needs


def restated_contract(path: Path) -> list[str]:
    """Places in ``path`` that spell the contract out: a tuple/list/set naming three or more of
    its tensors, a dict keyed by three or more of its inputs, or an input-only name as a string."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        # a dict keyed by the model's outputs is a result (the model names them); keyed by its
        # inputs, or a sequence of tensor names, it is the contract written out again
        if isinstance(node, ast.Dict):
            items, names_of = node.keys, INPUT_NAMES
        elif isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            items, names_of = node.elts, CONTRACT_NAMES
        else:
            items = None
        if items is not None:
            names = {n.value for n in items if isinstance(n, ast.Constant) and n.value in names_of}
            if len(names) >= 3:
                found.append(f"line {node.lineno}: {sorted(names)}")
        elif isinstance(node, ast.Constant) and node.value in INPUT_ONLY:
            found.append(f"line {node.lineno}: '{node.value}'")
    return found


def test_contract_is_spelled_out_once():
    """The tensor names and their lists live in hbaf/contract.py; everyone else imports them."""
    offenders = {}
    for path in _modules():
        rel = path.relative_to(ROOT).as_posix()
        if rel != "hbaf/contract.py" and (found := restated_contract(path)):
            offenders[rel] = found
    assert not offenders, f"contract restated outside hbaf/contract.py: {offenders}"
    assert restated_contract(ROOT / "hbaf" / "contract.py"), "the checker sees the contract itself"
