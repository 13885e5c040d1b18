"""Fail when a module other than ``methods.py`` tests a method name; ``make lint`` runs this.

A method family is added with one registry entry (``diffusionbert.methods``); every other module asks the
registry what a method needs. So a comparison (``==``, ``!=``, ``in``, ``not in``, a ``match`` case) or a
dict key that is a string literal naming a registered method, anywhere in the package but ``methods.py``,
is the sign of a family threaded through the code, and is reported as ``path:line: …``.

Usage: python tools/check_method_names.py [PACKAGE_DIR]   (default: src/diffusionbert)
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

REGISTRY_MODULE = "methods.py"


def registered_names() -> set[str]:
    """The names the registry holds: the source of truth, not a copy of it."""
    from diffusionbert.methods import METHODS

    return set(METHODS)


def _literals(nodes: Iterable[ast.expr | None]) -> Iterator[tuple[int, str]]:
    """String constants among ``nodes`` and inside tuple, list and set displays, with their line."""
    for node in nodes:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value
        elif isinstance(node, ast.Tuple | ast.List | ast.Set):
            yield from _literals(node.elts)


def violations(source: str, path: str, names: set[str]) -> list[str]:
    """Every place in ``source`` that compares, matches or keys a dict on a method name."""
    found = []
    for node in ast.walk(ast.parse(source, filename=path)):
        if isinstance(node, ast.Compare):
            candidates = _literals([node.left, *node.comparators])
            what = "compares"
        elif isinstance(node, ast.Dict):
            candidates = _literals(node.keys)
            what = "keys a dict on"
        elif isinstance(node, ast.MatchValue):
            candidates = _literals([node.value])
            what = "matches"
        else:
            continue
        for line, value in candidates:
            if value in names:
                found.append(
                    f"{path}:{line}: {what} the method name {value!r}; ask diffusionbert.methods instead"
                )
    return found


def check(package: Path, names: set[str]) -> list[str]:
    """The violations in every module of ``package`` except the registry itself."""
    found = []
    for path in sorted(package.rglob("*.py")):
        if path.relative_to(package).as_posix() != REGISTRY_MODULE:
            found += violations(path.read_text(encoding="utf-8"), str(path), names)
    return found


def main(argv: list[str]) -> int:
    package = Path(argv[0] if argv else "src/diffusionbert")
    if not package.is_dir():
        print(f"error: package directory {package} not found", file=sys.stderr)
        return 2
    found = check(package, registered_names())
    for line in found:
        print(line)
    if found:
        print(f"{len(found)} method-name test(s) outside {REGISTRY_MODULE}", file=sys.stderr)
        return 1
    print(f"method names: none tested outside {REGISTRY_MODULE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
