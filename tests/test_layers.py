"""Layers run one way inside the `bertflow` package: contracts <- pipelines, trainer <- infra
(only where a kind runs).

    contracts   imports nothing of ours
    pipelines   imports contracts (never trainer, never infra)
    trainer     imports contracts (never pipelines, never infra)
    infra       imports pipelines and trainer only in a step kind (bertflow/infra/kinds/): a job's
                schema module (its `...config` module: the kind's Params) at the top,
                the job itself inside the kind's functions, so that loading the spec and
                the CLI pays for no engine
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "bertflow"
OURS = ("contracts", "pipelines", "trainer", "infra")
ALLOWED = {
    "contracts": {"contracts"},
    "pipelines": {"contracts", "pipelines"},
    "trainer": {"contracts", "trainer"},
    "infra": {"contracts", "infra"},
}


def imports(path: Path):
    """(imported module of ours, line, inside a function?) for each import."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    if path.name == "__init__.py":
        package += ".__init__"
    tree = ast.parse(path.read_text(), str(path))

    def walk(node, in_function):
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield alias.name, child.lineno, inside
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: -child.level]
                    yield ".".join([*base, *([child.module] if child.module else [])]), child.lineno, inside
                elif child.module:
                    yield child.module, child.lineno, inside
            yield from walk(child, inside)

    return [(module.split(".", 1)[1], line, inside) for module, line, inside in walk(tree, False)
            if module.split(".")[0] == "bertflow" and module.count(".") and module.split(".")[1] in OURS]


def test_imports_run_one_way():
    wrong = []
    for layer in OURS:
        for path in sorted((PACKAGE / layer).rglob("*.py")):
            for module, line, inside in imports(path):
                top = module.split(".")[0]
                if top in ALLOWED[layer]:
                    continue
                where = path.relative_to(PACKAGE)
                in_kind = layer == "infra" and top in ("pipelines", "trainer") and where.parts[1] == "kinds"
                if in_kind and (inside or module.endswith("config")):
                    continue
                wrong.append(f"{where}:{line} imports {module}")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_the_walk_sees_a_wrong_import(tmp_path, monkeypatch):
    # The checker itself: a module-level import of a job in infra is caught.
    fake = tmp_path / "bertflow" / "infra" / "engine.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("from bertflow.pipelines.local_runner import x\n\ndef f():\n    from bertflow.trainer import y\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert [(m, inside) for m, _, inside in imports(fake)] == [("pipelines.local_runner", False), ("trainer", True)]


def test_the_spec_and_the_cli_load_no_engine():
    code = (
        "import contextlib, io, sys, bertflow.infra.cli\n"
        "from bertflow.infra.kinds import KINDS\n"
        "assert set(KINDS) >= {'wikipedia', 'books', 'vocab', 'pretraining_data', 'pretrain', 'finetune'}, KINDS\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert bertflow.infra.cli.main(['validate', '-f', 'workflows.yaml']) == 0\n"
        "print(sorted(m for m in ('apache_beam', 'torch', 'ray', 'transformers') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
