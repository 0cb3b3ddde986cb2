"""The folders of bench/ are stages of one pipeline, each importing only from the stages before it
(docs/architecture.md): a module that reaches up a layer (a backend into the sweep runner, the store into
a report, a study's constants into the option schema) fails here, naming the import."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The order of docs/architecture.md: each stage may import the ones to its left, never one to its right.
ORDER = ["implementations", "config", "store", "backends", "measure", "execute", "report", "studies", "commands"]


def stage_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "implementations":
        return "implementations"
    if parts[0] == "bench" and len(parts) > 1 and parts[1] in ORDER:
        return parts[1]
    return None


def imports_of(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name


def test_every_stage_imports_only_the_stages_before_it():
    wrong, seen = [], set()
    for path in sorted([*ROOT.glob("bench/**/*.py"), *ROOT.glob("implementations/**/*.py")]):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        own = stage_of(module)
        if own is None:
            continue
        seen.add(own)
        for line, name in imports_of(path):
            other = stage_of(name)
            if other is not None and ORDER.index(other) > ORDER.index(own):
                wrong.append(f"{path.relative_to(ROOT)}:{line} ({own}) imports {name} ({other})")
    assert seen == set(ORDER), f"stages with no module: {set(ORDER) - seen}"
    assert not wrong, "\n".join(wrong)


def test_no_relative_imports_hide_a_stage():
    """Absolute imports only, so the rule above sees every one."""
    relative = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in sorted(ROOT.glob("bench/**/*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and node.level > 0
    ]
    assert not relative, relative


def test_the_root_of_bench_holds_only_the_package_and_its_entry_point():
    assert sorted(p.name for p in (ROOT / "bench").glob("*.py")) == ["__init__.py", "__main__.py"]
    folders = sorted(p.name for p in (ROOT / "bench").iterdir() if p.is_dir() and p.name != "__pycache__")
    assert folders == sorted(ORDER[1:])
