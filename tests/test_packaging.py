"""Packaging: a wheel builds from a copy of the tree, leaves no build/ or *.egg-info
in it, and ships py.typed and pyro_dirmag.models."""

import glob
import os
import shutil
import subprocess
import sys
import zipfile

import pyro_dirmag

ROOT = os.path.join(os.path.dirname(__file__), "..")
SKIP = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", "build", "*.egg-info", "_build", ".*_cache", "*.pt"
)


def test_wheel_builds_without_leaving_scratch_folders(tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(ROOT, tree, ignore=SKIP)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation"]
        + ["-q", "-w", str(tmp_path / "dist")],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert not (tree / "build").exists()
    assert not glob.glob(str(tree / "*.egg-info"))
    (wheel,) = glob.glob(str(tmp_path / "dist" / "*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "pyro_dirmag/py.typed" in names
    assert "pyro_dirmag/models/__init__.py" in names
    assert f"pyro_dirmag-{pyro_dirmag.__version__}.dist-info/METADATA" in names
