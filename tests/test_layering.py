"""Imports point down: the package's floors (cluster > distributed > eval > loaders, model) and eval/'s rooms
(index > metrics > search > kernels > the base files). Every import counts, module level or inside a function."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLOORS = {"cluster": 4, "distributed": 3, "eval": 2, "loaders": 1, "model": 1}
ROOMS = {"index": 4, "metrics": 3, "search": 2, "kernels": 1}  # eval/'s top-level files are room 0


def project_imports(path: Path, root: Path) -> set[str]:
    """Absolute `c3dhash.*` modules that `path` imports (relative imports resolved against its package)."""
    package = ["c3dhash", *path.relative_to(root).parent.parts]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("c3dhash.")}
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                module = ".".join(package[:len(package) - node.level + 1] + ([module] if module else []))
            if module == "c3dhash":
                found |= {f"c3dhash.{a.name}" for a in node.names}
            elif module.startswith("c3dhash."):
                found.add(module)
    return found


def room(parts: list[str]) -> int:
    """eval/'s room of a module (["eval", "search", "flat"] -> 2); 0 for the base files (codes, config, ...)."""
    return ROOMS.get(parts[1], 0) if len(parts) > 1 else 0


def violations(root: Path) -> list[str]:
    found = []
    for floor, level in FLOORS.items():
        for path in sorted((root / floor).rglob("*.py")):
            where = list(path.relative_to(root).with_suffix("").parts)
            for name in project_imports(path, root):
                target = name.split(".")[1:]
                if target[0] not in FLOORS or FLOORS[target[0]] > level or \
                        (target[0] != floor and FLOORS[target[0]] == level):
                    found.append(f"{path.relative_to(root)} (floor {level}) imports {name}")
                elif floor == "eval" == target[0] and room(target) > room(where):
                    found.append(f"{path.relative_to(root)} (room {room(where)}) imports {name} (room {room(target)})")
    return found


def test_imports_point_down():
    assert violations(ROOT) == []


def test_model_never_imports_ray_or_collectives():
    for path in (ROOT / "model").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n == "ray" or n.startswith(("ray.", "torch.distributed")) for n in names), \
                f"{path.relative_to(ROOT)} imports {names}"


def test_upward_imports_are_found(tmp_path):
    """The walk sees an upward import inside a function, relative or absolute, across rooms and floors."""
    for d in ("eval/kernels", "eval/index", "loaders", "model", "cluster"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "eval/kernels/k.py").write_text("def f():\n    from ..index import folder\n")
    (tmp_path / "eval/index/ok.py").write_text("from ..kernels import k\nfrom c3dhash.loaders import x\n")
    (tmp_path / "loaders/l.py").write_text("import c3dhash.model.config\nimport c3dhash.cluster.cli\n")
    assert sorted(violations(tmp_path)) == [
        "eval/kernels/k.py (room 1) imports c3dhash.eval.index (room 4)",
        "loaders/l.py (floor 1) imports c3dhash.cluster.cli",
        "loaders/l.py (floor 1) imports c3dhash.model.config"]
