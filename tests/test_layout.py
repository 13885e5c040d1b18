"""The layout holds: imports run down the floors of pyproject's import contract, and no module but methods.py
tests a method name. Both checks are `make lint`'s; here they are shown to pass on the tree and to fail on a
copy of it with one violation added."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _load_checker():
    spec = importlib.util.spec_from_file_location(
        "check_method_names", ROOT / "tools" / "check_method_names.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


checker = _load_checker()


def _copy_tree(tmp_path: Path) -> Path:
    """The package and its import contract, copied so that a violation can be added to the copy."""
    shutil.copytree(ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=cwd,
        env={"PYTHONPATH": str(cwd / "src"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module", autouse=True)
def _needs_import_linter() -> None:
    if not LINT_IMPORTS.is_file():
        pytest.fail(f"lint-imports not found beside {sys.executable}: pip install -e '.[dev]'")


def test_the_tree_keeps_every_import_contract(tmp_path):
    proc = _lint_imports(_copy_tree(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 kept, 0 broken" in proc.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        (
            "diffusion/schedules.py",
            "from ..models import backbone",
            "Floors: an import only goes down BROKEN",
        ),
        ("models/backbone.py", "from .. import methods", "Floors: an import only goes down BROKEN"),
        ("training/bound.py", "from ..apps import demo", "Floors: an import only goes down BROKEN"),
        (
            "diffusion/losses.py",
            "from ..config import Config",
            "imports only torch and the package's errors BROKEN",
        ),
        (
            "diffusion/corruption.py",
            "from . import objectives",
            "No import cycle among the modules of any package BROKEN",
        ),
    ],
)
def test_an_import_against_the_layout_fails_the_contract(tmp_path, module, line, contract):
    tree = _copy_tree(tmp_path)
    path = tree / "src" / "diffusionbert" / module
    path.write_text(path.read_text() + f"\n\ndef _late() -> None:\n    {line}  # noqa\n")
    proc = _lint_imports(tree)
    assert proc.returncode != 0 and contract in proc.stdout, proc.stdout


def test_no_module_but_methods_tests_a_method_name():
    names = checker.registered_names()
    assert {"ar", "mdlm", "diffusionbert"} <= names
    assert checker.check(ROOT / "src" / "diffusionbert", names) == []


@pytest.mark.parametrize(
    "source",
    [
        'if cfg.diffusion.objective == "ar":\n    pass\n',
        'x = objective != "mlm"\n',
        'ok = name in ("radd", "mlm")\n',
        'table = {"mdlm": 1}\n',
        'match name:\n    case "sedd":\n        pass\n',
    ],
)
def test_the_method_name_check_catches_each_kind_of_test(source):
    found = checker.violations(source, "mod.py", checker.registered_names())
    assert found and all(f.startswith("mod.py:") and "ask diffusionbert.methods instead" in f for f in found)


def test_the_method_name_check_fails_make_lint_on_a_copy_with_one(tmp_path):
    tree = _copy_tree(tmp_path) / "src" / "diffusionbert"
    (tree / "sampling" / "pipelines" / "base.py").write_text(
        (tree / "sampling" / "pipelines" / "base.py").read_text() + '\n\nIS_AR = "ar" == "ar"\n'
    )
    script = ROOT / "tools" / "check_method_names.py"
    proc = subprocess.run(
        [sys.executable, str(script), str(tree)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1 and "sampling/pipelines/base.py" in proc.stdout
    ok = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
