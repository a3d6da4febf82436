"""The package layout of docs/architecture.md, checked on the source: every import of every module of ours (module
level and inside functions, read from the AST, nothing imported) obeys the table of who may import whom.

- `infra/` (storage, preflight, usage, local Ray) imports nothing of ours but itself.
- `manifests/` imports nothing of ours.
- `pipeline/contract/` (the contract floor) imports only itself, `infra` and `manifests`; never Ray lifecycle code.
- a pipeline wing (`extract`, `qa`, `inspect`, `synth`) imports only itself, the contract floor and `manifests`;
  never another wing. Only `pipeline/cli.py` sits above the wings.
- `train/` imports only `pipeline.contract` from `pipeline`, and nothing of `eval`.
- `eval/` imports `train`, `pipeline.contract` and, for vtl-chat, extract's single-file entry (`pipeline.extract.single`
  with its `clip` config and `decode` error type).
- no import cycle between our modules.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("infra", "manifests", "pipeline", "train", "eval")
WINGS = ("extract", "qa", "inspect", "synth", "download")
EVAL_FROM_PIPELINE = ("pipeline.contract", "pipeline.extract.single", "pipeline.extract.clip", "pipeline.extract.spec",
                      "pipeline.extract.decode")
KNOWN_CYCLES: set[frozenset] = set()
"""None: the review's one circle (P3, `train.model` ↔ `train.checkpoint`) is gone."""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The module of ours that `name` (a module, or a module plus an attribute) refers to, or None."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(path: Path) -> set[str]:
    """Our modules imported anywhere in `path` (`from a.b import c` counts a.b.c when c is a module, else a.b)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(m for m in map(_resolve, names) if m is not None and m.split(".")[0] in PACKAGES)
    return found


GRAPH = {name: _imports(path) - {name} for name, path in MODULES.items()}


def _part(module: str) -> str:
    """manifests, contract, a wing name, pipeline (the package and its cli), train or eval."""
    parts = module.split(".")
    if parts[0] == "pipeline" and len(parts) > 1 and parts[1] in ("contract", *WINGS):
        return parts[1]
    return parts[0]


def _violations(allowed) -> list[str]:
    return sorted(f"{src} imports {dst}" for src, dsts in GRAPH.items() for dst in dsts if not allowed(src, dst))


def test_the_walk_sees_the_tree():
    assert {"pipeline.contract.conversation", "pipeline.qa.budget", "train.cli", "eval.runner"} <= set(GRAPH)
    assert "pipeline.contract.conversation" in GRAPH["pipeline.qa.budget"]
    assert "pipeline.contract.conversation" in GRAPH["eval.runner"]  # an import inside a function counts


def test_infra_imports_nothing_of_ours_but_itself():
    assert _violations(lambda src, dst: _part(src) != "infra" or _part(dst) == "infra") == []


def test_manifests_import_nothing_of_ours():
    assert _violations(lambda src, dst: _part(src) != "manifests" or _part(dst) == "manifests") == []


def test_the_contract_floor_imports_only_itself_and_manifests():
    assert _violations(lambda src, dst: _part(src) != "contract" or _part(dst) in ("contract", "infra", "manifests")) == []
    assert not any(dst in ("infra.local_ray", "infra.ray_watchdog") for src, dsts in GRAPH.items()
                   if _part(src) == "contract" for dst in dsts)


@pytest.mark.parametrize("wing", WINGS)
def test_a_wing_imports_no_other_wing(wing):
    assert _violations(lambda src, dst: _part(src) != wing or _part(dst) in (wing, "contract", "infra", "manifests")) == []


def test_train_imports_only_the_contract_from_pipeline():
    def allowed(src, dst):
        return _part(src) != "train" or _part(dst) in ("train", "contract", "infra", "manifests")

    assert _violations(allowed) == []


def test_eval_imports_train_the_contract_and_extracts_single_file_entry():
    def allowed(src, dst):
        if _part(src) != "eval" or _part(dst) in ("eval", "train", "contract", "infra", "manifests"):
            return True
        return dst.startswith(EVAL_FROM_PIPELINE)

    assert _violations(allowed) == []


def _cycles() -> set[frozenset]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[frozenset] = set()

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(GRAPH[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.add(frozenset(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_between_our_modules():
    assert _cycles() - KNOWN_CYCLES == set()
