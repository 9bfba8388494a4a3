"""The scripts under scripts/ run from an installed deepexp, without the test suite or its tools."""
import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"

# Imports every script as a module (each runs its work only under `__main__`) in a fresh interpreter in
# which pytest cannot be imported and the tests folder is not on the path: what a machine with only
# `pip install -e .` (no dev extras) and the repository has.
IMPORT_ALL = """
import importlib, sys
for name in ("pytest", "_pytest", "conftest"):
    sys.modules[name] = None  # `import pytest` now raises ImportError
sys.path[:] = [p for p in sys.path if not p.rstrip("/").endswith("tests")]
sys.path.insert(0, sys.argv[1])
failed = []
for name in sys.argv[2:]:
    try:
        importlib.import_module(name)
    except ImportError as exc:
        failed.append(f"{name}: {exc}")
print("\\n".join(failed))
"""


def test_every_script_imports_without_pytest_or_the_tests_folder(tmp_path):
    names = sorted(p.stem for p in SCRIPTS.glob("*.py"))
    assert "bench_gpu" in names and "bench_trainer" in names
    out = subprocess.run([sys.executable, "-c", IMPORT_ALL, str(SCRIPTS), *names], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", out.stdout
