"""The layers only point down (DESIGN "Architecture rules"), checked on the source itself.

Every ``import`` and ``from ... import`` in the product's packages, at module level or inside
a function (and every ``import_module("...")`` with a literal name), is read with ``ast`` and
resolved to the package it names. The packages form one order, each importing only itself and
those below it:

    hbaf  <-  edge_runtime  <-  calibration  <-  export  <-  bench
    (contract, features, text, model, data, train)
              (sources, VAD, ASR, backends, pipeline, the offline path)
                              (INT8 Q/DQ)   (ONNX, parity, engines, `hbaf-export all`)
                                                       (the benchmark and the soak)

- the runtime (``edge_runtime``) imports only ``hbaf``, and not its training side
  (``hbaf.train``, ``hbaf.cli``);
- ``calibration`` imports ``hbaf`` and ``edge_runtime`` (the offline path, the CPU backend, the
  shared dialogues and ONNX graph helpers live there and in ``hbaf``);
- there is no import cycle between top-level packages;
- each console script lives in its own layer's ``cli`` module, and ``hbaf-edge bench`` is a
  plug-in (entry-point group ``hbaf_edge.commands``), so the runtime never imports the benchmark.

Facts of the contract restated elsewhere are caught too: the tensor names and the metadata key
as string constants, the sample rate (16000) and the recogniser's windows (10 s / 30 s) as
numbers (they are ``hbaf.contract.SAMPLE_RATE``, ``MAX_SECONDS`` and ``WHISPER_WINDOW_S``), and
the label list written out a second time (it is ``hbaf.data.records.MELD_LABELS``).
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10 (JetPack 6): pip carries the same reader
    from pip._vendor import tomli as tomllib


ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("hbaf", "edge_runtime", "calibration", "export", "bench")  # bottom to top
ALLOWED = {pkg: set(PACKAGES[: i + 1]) for i, pkg in enumerate(PACKAGES)}
TRAINING_SIDE = ("hbaf.train", "hbaf.cli", "hbaf.adapt")  # never imported by the runtime
SCRIPT_HOMES = {"hbaf": "hbaf.cli:main", "hbaf-edge": "edge_runtime.cli:main", "hbaf-export": "export.cli:main"}
COMMAND_GROUP = "hbaf_edge.commands"  # hbaf-edge subcommands that higher layers plug in


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


def package_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Top-level package -> the other top-level packages its modules import."""
    graph: dict[str, set[str]] = {pkg: set() for pkg in PACKAGES}
    for path in _modules(root):
        layer = path.relative_to(root).parts[0]
        for _, name in imported_modules(path, root):
            top = name.split(".")[0]
            if top in PACKAGES and top != layer:
                graph[layer].add(top)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of ``graph`` as [a, b, ..., a], or [] when there is none."""
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> list[str]:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt, path + [nxt])):
                return cycle
        state[node] = "done"
        return []

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return []


def layer_violations(root: Path = ROOT) -> list[str]:
    problems = []
    for path in _modules(root):
        rel = path.relative_to(root).as_posix()
        layer = rel.split("/")[0]
        for line, name in imported_modules(path, root):
            top = name.split(".")[0]
            if top not in PACKAGES:
                continue
            if top not in ALLOWED[layer]:
                problems.append(f"{rel}:{line} imports {name} ({layer} must not depend on {top})")
            if layer == "edge_runtime" and name.startswith(TRAINING_SIDE):
                problems.append(f"{rel}:{line} imports {name} (the runtime never imports the training side)")
    return problems


def _fake_repo(root: Path, files: dict[str, str]) -> Path:
    for pkg in PACKAGES:
        (root / pkg).mkdir(parents=True, exist_ok=True)
        (root / pkg / "__init__.py").write_text("")
    for rel, text in files.items():
        (root / rel).write_text(text)
    return root


def test_layers_point_down():
    problems = layer_violations()
    assert not problems, "imports against the layer rules:\n" + "\n".join(problems)


def test_no_import_cycle_between_packages():
    graph = package_graph()
    assert not find_cycle(graph), f"import cycle between packages: {' -> '.join(find_cycle(graph))}"
    assert "export" not in graph["calibration"] and "calibration" in graph["export"], graph


def test_every_package_is_checked():
    files = {p.relative_to(ROOT).parts[0] for p in _modules()}
    assert files == set(PACKAGES), f"layer test sees {sorted(files)}"


def test_checker_catches_a_forbidden_edge(tmp_path):
    """The checker itself: upward imports planted in a copy of the tree are reported."""
    root = _fake_repo(tmp_path / "repo", {
        "edge_runtime/bad.py": "def f():\n    from export.engine import EngineBuilder\n",
        "edge_runtime/worse.py": "from hbaf.train import train\nfrom . import backends\n",
        "edge_runtime/plugin.py": "import importlib\nimportlib.import_module('bench.cli')\n",
        "calibration/up.py": "from export.parity import parity\n",
        "export/cli.py": "from calibration.report import int8_report\n",
        "export/engine.py": "import calibration.quantize\n",
    })
    problems = layer_violations(root)
    assert any("edge_runtime/bad.py:2 imports export.engine" in p for p in problems)
    assert any("edge_runtime/worse.py:1 imports hbaf.train" in p for p in problems)
    assert any("edge_runtime/plugin.py:2 imports bench.cli" in p for p in problems)
    assert any("calibration/up.py:1 imports export.parity" in p for p in problems)
    assert not any(p.startswith("export/") for p in problems), problems  # export sits above calibration
    assert not any("edge_runtime.backends" in p for p in problems)
    assert find_cycle(package_graph(root)) == ["calibration", "export", "calibration"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) == []


# ----------------------------------------------------------------------------- console scripts


def _pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)


def test_each_console_script_lives_in_its_own_layer():
    scripts = _pyproject()["project"]["scripts"]
    assert scripts == SCRIPT_HOMES, scripts
    for name, target in scripts.items():
        module, _, attr = target.partition(":")
        assert module.split(".")[-1] == "cli" and callable(getattr(importlib.import_module(module), attr)), target


def test_bench_plugs_into_hbaf_edge_from_above():
    """`hbaf-edge bench` is an entry point of the group the runtime's command line reads; the
    plug-in lives in a layer above the runtime and is the runtime's own Command type."""
    from edge_runtime.cli import Command

    commands = _pyproject()["project"]["entry-points"][COMMAND_GROUP]
    assert set(commands) == {"bench"}, commands
    for name, target in commands.items():
        module, _, attr = target.partition(":")
        layer = module.split(".")[0]
        assert PACKAGES.index(layer) > PACKAGES.index("edge_runtime"), f"{name}: {target} is not above the runtime"
        command = getattr(importlib.import_module(module), attr)
        assert isinstance(command, Command) and command.help and callable(command.main), target
    names = {name for _, name in imported_modules(ROOT / "edge_runtime" / "cli.py")}
    assert "importlib.metadata" in names or "importlib.metadata.entry_points" in names


# ----------------------------------------------------------------------------- facts of the contract


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


SAMPLE_RATE_VALUES = {16000, 160000, 480000}  # the rate, and 10 s / 30 s of it in samples
WINDOW_SECONDS = {10, 30}  # MAX_SECONDS (the short window) and WHISPER_WINDOW_S
WINDOW_WORD = re.compile("window", re.IGNORECASE)
# a list of the rates a microphone is probed at names 16000 as one hardware rate among others
RATE_LISTS = {("edge_runtime/mic.py", "PROBE_RATES")}


def _number(node: ast.AST) -> float | None:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    return None


def _names_in(node: ast.AST) -> list[str]:
    return [n.id if isinstance(n, ast.Name) else n.attr for n in ast.walk(node) if isinstance(n, (ast.Name, ast.Attribute))]


def restated_numbers(path: Path, rel: str) -> list[str]:
    """The sample rate as a number anywhere, and 10 / 30 given to something named a window (an
    assignment, a default, a keyword argument or a comparison)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    exempt: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any((rel, t.id) in RATE_LISTS for t in node.targets if isinstance(t, ast.Name)):
            exempt |= {id(n) for n in ast.walk(node.value)}
    found = []

    def windows(named: str, value: ast.AST, line: int) -> None:
        if WINDOW_WORD.search(named):
            found.extend(f"line {line}: {named} = {_number(n):g} s" for n in ast.walk(value) if _number(n) in WINDOW_SECONDS)

    for node in ast.walk(tree):
        if _number(node) in SAMPLE_RATE_VALUES and id(node) not in exempt:
            found.append(f"line {node.lineno}: {_number(node):g}")
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                windows(" ".join(_names_in(target)), node.value, node.lineno)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            a = node.args
            positional = a.posonlyargs + a.args
            pairs = list(zip(positional[len(positional) - len(a.defaults):], a.defaults))
            pairs += [(arg, d) for arg, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None]
            for arg, default in pairs:
                windows(arg.arg, default, default.lineno)
        elif isinstance(node, ast.keyword) and node.arg:
            windows(node.arg, node.value, node.value.lineno)
        elif isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            named = " ".join(n for op in operands for n in _names_in(op))
            windows(named, ast.Tuple(elts=[op for op in operands if _number(op) is not None]), node.lineno)
    return sorted(found, key=lambda f: int(f.split(":")[0].split()[1]))


def test_sample_rate_and_windows_come_from_the_contract():
    offenders = {}
    for path in _modules():
        rel = path.relative_to(ROOT).as_posix()
        if rel != "hbaf/contract.py" and (found := restated_numbers(path, rel)):
            offenders[rel] = found
    assert not offenders, f"the sample rate or a recogniser window restated outside hbaf/contract.py: {offenders}"


def test_number_checker_catches_restatements(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text(
        "RATE = 16000\n"
        "FULL_WINDOW_S = 30.0\n"
        "def f(x, encoder_window_s: float = 10.0, *, pause_s=10.0):\n"
        "    g(window_s=30)\n"
        "    return 0.5 <= x.window_bucket_s <= 10.0 and x.sr == 16_000\n"
        "SAMPLES = 480000\n"
        "PROBE_RATES = (8000, 16000)\n"
        "RESET_AFTER_S = 30.0\n"
    )
    found = restated_numbers(planted, "edge_runtime/planted.py")
    assert [f.split(":")[0] for f in found] == ["line 1", "line 2", "line 3", "line 4", "line 5", "line 5", "line 6",
                                                "line 7"], found
    assert restated_numbers(planted, "edge_runtime/mic.py")[-1].startswith("line 6"), "the probe list is exempt in mic.py"
    assert restated_numbers(ROOT / "hbaf" / "contract.py", "hbaf/contract.py"), "the checker sees the contract itself"


LABEL_SOURCE = "hbaf/data/records.py"


def restated_labels(path: Path) -> list[str]:
    """A tuple/list/set literal naming three or more of the emotion labels."""
    from hbaf.data.records import MELD_LABELS

    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            names = [n.value for n in node.elts if isinstance(n, ast.Constant) and n.value in MELD_LABELS]
            if len(set(names)) >= 3:
                found.append(f"line {node.lineno}: {names}")
    return found


@pytest.mark.parametrize("planted, caught", [('LABELS = ["neutral", "joy", "sadness", "anger"]\n', True),
                                             ('PAIR = ("neutral", "joy")\nCOLOURS = {"joy": 1, "fear": 2, "anger": 3}\n', False)])
def test_label_checker(tmp_path, planted, caught):
    (tmp_path / "x.py").write_text(planted)
    assert bool(restated_labels(tmp_path / "x.py")) is caught


def test_the_label_list_is_written_once():
    offenders = {}
    for path in _modules():
        rel = path.relative_to(ROOT).as_posix()
        if rel != LABEL_SOURCE and (found := restated_labels(path)):
            offenders[rel] = found
    assert not offenders, f"the label list restated outside {LABEL_SOURCE} (import MELD_LABELS): {offenders}"
    assert restated_labels(ROOT / LABEL_SOURCE), "the checker sees the list itself"
