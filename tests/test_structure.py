"""How the modules fit together: read from the source, so that a change that breaks it fails here."""

import ast
import re
from pathlib import Path

import rankbias

PACKAGE = Path(rankbias.__file__).parent


def modules() -> dict[str, ast.Module]:
    """Every module of rankbias by dotted name (``rankbias.store.records``), parsed."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = ast.parse(path.read_text(), str(path))
    return out


def imports(name: str, tree: ast.Module, known: set[str]):
    """``(module, imported names)`` for every import of a rankbias module in ``tree``, at any depth."""
    package = name if name in known and any(k.startswith(name + ".") for k in known) else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            target = f"{base}.{node.module}" if node.level and node.module else base if node.level else node.module
            if target and target.split(".")[0] == "rankbias":
                names = [a.name for a in node.names]
                submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in known]
                yield target, [n for n in names if f"{target}.{n}" not in known]
                for sub in submodules:
                    yield sub, []
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "rankbias":
                    yield alias.name, []


def test_no_module_imports_a_private_name_of_another():
    found = modules()
    private = [
        f"{name} imports {n} from {target}"
        for name, tree in found.items()
        for target, names in imports(name, tree, set(found))
        for n in names
        if n.startswith("_") and not n.startswith("__") and target != name
    ]
    assert not private, private


def test_api_store_and_sweep_import_no_circle():
    """The parts api, store, sweep and options: an import graph between them without cycles."""
    found = modules()
    parts = ("rankbias.api", "rankbias.store", "rankbias.sweep", "rankbias.options")

    def part(module: str) -> str | None:
        return next((p for p in parts if module == p or module.startswith(p + ".")), None)

    edges = {p: set() for p in parts}
    for name, tree in found.items():
        source = part(name)
        for target, _ in imports(name, tree, set(found)):
            if source and part(target) and part(target) != source:
                edges[source].add(part(target))
    assert "rankbias.api" not in edges["rankbias.store"] | edges["rankbias.sweep"], edges
    assert "rankbias.sweep" not in edges["rankbias.store"], edges  # the store is below the sweep
    assert "rankbias.store" in edges["rankbias.sweep"]  # the check can fail: this edge exists


def test_a_runs_file_names_are_spelled_only_in_the_store():
    pattern = re.compile(r"[\"'](config\.json|status\.json|checkpoint\.pt)[\"']")
    outside = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "store" not in path.relative_to(PACKAGE).parts and pattern.search(path.read_text())
    ]
    assert not outside, outside
    assert pattern.search((PACKAGE / "store" / "run_store.py").read_text())


def test_every_exception_class_is_a_rankbias_error_in_errors_py():
    found = modules()
    elsewhere = [
        f"{name}.{node.name}"
        for name, tree in found.items()
        if name != "rankbias.errors"
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
        and any(getattr(b, "id", "").endswith(("Error", "Exception")) for b in node.bases)
    ]
    assert not elsewhere, elsewhere
    errors = [getattr(rankbias.errors, n) for n in dir(rankbias.errors) if n[0].isupper()]
    errors = [e for e in errors if isinstance(e, type) and not issubclass(e, Warning)]
    assert errors and all(issubclass(e, rankbias.errors.RankbiasError) for e in errors)
