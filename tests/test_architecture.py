"""Layer rules from docs/architecture.md, enforced."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("evidently", "mlflow", "great_expectations", "sklearn", "boto3", "kubernetes", "scipy", "pandas",
         "numpy", "pyarrow", "duckdb", "torch")


def _imports(path: Path, *, top_level_only: bool) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def test_core_library_never_imports_airflow():
    offenders = [f"{p.relative_to(REPO)}:{line} imports {mod}"
                 for p in (REPO / "include" / "aiir").rglob("*.py")
                 for line, mod in _imports(p, top_level_only=False)
                 if mod == "airflow" or mod.startswith("airflow.")]
    assert not offenders, offenders


def test_dag_files_import_nothing_heavy_at_module_level():
    offenders = [f"{p.name}:{line} imports {mod}"
                 for p in (REPO / "dags").glob("*.py")
                 for line, mod in _imports(p, top_level_only=True)
                 if mod.split(".")[0] in HEAVY or mod.startswith("airflow.providers.amazon")
                 or mod.startswith("airflow.providers.cncf")]
    assert not offenders, offenders


def test_plugins_import_nothing_heavy_at_module_level():
    offenders = [f"{p.relative_to(REPO)}:{line} imports {mod}"
                 for p in (REPO / "plugins").rglob("*.py")
                 for line, mod in _imports(p, top_level_only=True) if mod.split(".")[0] in HEAVY]
    assert not offenders, offenders


def test_containment_path_imports_nothing_heavy():
    """The contain step and the local target must act without importing mlflow, pandas, sklearn, GX."""
    import subprocess
    import sys

    code = ("import sys; import aiir.playbook, aiir.targets.local, aiir.incident; "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"containment path imported: {out.stdout.strip()}"
