"""Development sessions: tests, lint, typecheck, demo, bench.

Run ``nox -l`` to list them. Every session installs what it needs into its
own virtual environment, so a machine with only Python and nox is enough.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nox

ROOT = Path(__file__).parent
PYPROJECT = nox.project.load_toml(ROOT / "pyproject.toml")
EXTRAS = ".[redis,prometheus,opentelemetry]"

# Sessions run on every supported Python found on this machine. Naming a
# missing interpreter is an error when CI=true, so absent versions are left
# out instead, and the running interpreter is always available.
SUPPORTED = ("3.11", "3.12", "3.13", "3.14")
CURRENT = f"{sys.version_info.major}.{sys.version_info.minor}"


def _runs(version: str) -> bool:
    # A version manager's shim can exist without a working interpreter.
    executable = shutil.which(f"python{version}")
    if executable is None:
        return False
    result = subprocess.run(
        [executable, "-c", "pass"], capture_output=True, check=False, timeout=30
    )
    return result.returncode == 0


PYTHONS = [version for version in SUPPORTED if version == CURRENT or _runs(version)]

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.default_venv_backend = "venv"


def install_group(session: nox.Session, group: str) -> None:
    """Install one dependency group of pyproject.toml."""
    session.install(*nox.project.dependency_groups(PYPROJECT, group))


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Run the test suite on asyncio and trio."""
    install_group(session, "tests")
    session.install(EXTRAS)
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session(python=CURRENT)
def lint(session: nox.Session) -> None:
    """Check formatting and lint rules with ruff."""
    install_group(session, "lint")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=CURRENT)
def typecheck(session: nox.Session) -> None:
    """Type-check the package, tests and examples with mypy in strict mode."""
    install_group(session, "typing")
    session.install("nox", EXTRAS)
    session.run("mypy")


@nox.session(python=CURRENT)
def demo(session: nox.Session) -> None:
    """Start a real uvicorn server on a claimed port and request a page from it."""
    session.install(".", "uvicorn")
    session.run("python", "examples/demo.py", *session.posargs)


@nox.session(python=CURRENT)
def bench(session: nox.Session) -> None:
    """Measure claims against the peers and write docs/benchmarks.md."""
    install_group(session, "bench")
    session.install(EXTRAS)
    session.run("python", "tests/benchmarks/run.py", *session.posargs)
