"""The API docs build (Sphinx autodoc, one page per module), so they cannot rot."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..")
DOCS = os.path.join(ROOT, "docs")


def _public_modules():
    found = []
    for package, prefix in (("pyro_dirmag", "pyro_dirmag"), ("models", "pyro_dirmag.models")):
        base = os.path.join(ROOT, package)
        for folder, _, files in os.walk(base):
            rel = os.path.relpath(folder, base)
            if any(part.startswith(("_", ".")) for part in rel.split(os.sep) if part != "."):
                continue
            for name in files:
                if name.endswith(".py") and not name.startswith("_"):
                    parts = [] if rel == "." else rel.split(os.sep)
                    found.append(".".join([prefix, *parts, name[:-3]]))
    return sorted(found)


def test_every_public_module_has_a_page():
    documented = set()
    for name in os.listdir(DOCS):
        if name.endswith(".rst"):
            with open(os.path.join(DOCS, name)) as f:
                documented |= set(re.findall(r"\.\. automodule:: (\S+)", f.read()))
    missing = [m for m in _public_modules() if m not in documented]
    assert not missing, f"modules without a docs page: {missing}"


@pytest.mark.slow
def test_sphinx_build(tmp_path):
    pytest.importorskip("sphinx")
    warnings_file = tmp_path / "warnings.txt"
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-b", "html", "-q", "-E", "-w", str(warnings_file)]
        + [DOCS, str(tmp_path / "html")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    problems = [
        line
        for line in warnings_file.read_text().splitlines()
        if ("WARNING" in line or "ERROR" in line)
    ]
    assert not problems, "\n".join(problems)
    for page in ("index", "nn", "infer", "distributions", "pyro_dirmag", "models"):
        assert (tmp_path / "html" / f"{page}.html").exists()
    html = (tmp_path / "html" / "nn.html").read_text()
    assert "to_dirmag" in html and "load_deterministic_" in html
