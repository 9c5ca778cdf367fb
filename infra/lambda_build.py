"""What ``sam build`` puts in the Lambda packages: template.yaml builds every function and the dependencies
layer with ``Metadata: BuildMethod: makefile``, and the Makefile's targets run this script.

- ``code`` (one artifact per function, in /var/task on Lambda): ``handlers/`` and ``shared/`` (the
  migrations' data files included), and nothing else of the checkout: no tests, infra, bench, docs, events,
  and above all no ``.switchboard/`` (the local stack's database and JWT secret).
- ``dependencies`` (the DependenciesLayer, in /opt on Lambda, whose ``python/`` is on ``sys.path``): every
  package of ``requirements.lock`` for the functions' platform (CPython 3.13, Linux arm64), wheels only, each
  file checked against the lock's hashes, no dependency resolution at build time (the lock is complete).

Both are byte-compiled at build time with unchecked hash-based ``.pyc`` (PEP 552). Lambda's /var/task and
/opt are read-only: without ``.pyc`` every cold start compiles every module it imports. A timestamp ``.pyc``
(compileall's default) is used only if the source's mtime is the one recorded at compile time, and `sam
package` zips every file dated 1980-01-01: on Lambda every one of them would be stale. An unchecked ``.pyc``
is used as it is, right for a package never edited in place. Sources stay beside them (for tracebacks).

Run with the runtime's Python (``make PYTHON=...``): bytecode is specific to the minor version.
``python infra/lambda_build.py code|dependencies DEST``; ``--arch x86_64`` builds the same layer with x86-64
wheels (to import a built package on an x86-64 machine, e.g. to time cold imports).
"""

from __future__ import annotations

import argparse
import compileall
import os
import py_compile
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"

# The functions' runtime (template.yaml Globals: Runtime python3.13, Architectures [arm64]); the python3.13
# runtime is Amazon Linux 2023, glibc 2.34. tests/infrastructure/test_packaging.py keeps these in step.
RUNTIME = (3, 13)
ARCHITECTURE = "aarch64"
GLIBC_MINOR = 34

# What runs in Lambda: the handler modules and the code they import. Nothing else of the checkout.
CODE_PACKAGES = ("handlers", "shared")
SKIPPED_DIRS = {"__pycache__"}
SKIPPED_SUFFIXES = {".pyc", ".pyo"}


def code_files(root: Path = ROOT) -> Iterator[Path]:
    """The checkout's files that a function package holds, relative to ``root``, sorted."""
    for package in CODE_PACKAGES:
        for directory, dirnames, filenames in os.walk(root / package):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_DIRS)
            for name in sorted(filenames):
                path = Path(directory, name)
                if path.suffix not in SKIPPED_SUFFIXES:
                    yield path.relative_to(root)


def build_code(dest: Path, root: Path = ROOT) -> None:
    """Stage ``handlers/`` and ``shared/`` into ``dest`` (a function's artifact directory), compiled."""
    _check_runtime()
    for package in CODE_PACKAGES:
        shutil.rmtree(dest / package, ignore_errors=True)
    for relative in code_files(root):
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / relative, target)
    compile_tree(dest, strict=True)


def pip_install_command(target: Path, *, architecture: str = ARCHITECTURE, lock: Path = LOCK) -> list[str]:
    """The pip command that installs the lock into ``target`` for the runtime's platform."""
    platforms = [f"manylinux_2_{minor}_{architecture}" for minor in range(GLIBC_MINOR, 16, -1)]
    platforms.append(f"manylinux2014_{architecture}")
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-input",
        "--require-hashes",
        "--no-deps",
        "--only-binary=:all:",
        "--implementation",
        "cp",
        "--python-version",
        f"{RUNTIME[0]}.{RUNTIME[1]}",
    ]
    for platform in platforms:
        command += ["--platform", platform]
    return [*command, "--no-compile", "--target", str(target), "--requirement", str(lock)]


def build_dependencies(dest: Path, *, architecture: str = ARCHITECTURE, lock: Path = LOCK) -> None:
    """Install the lock into ``dest/python`` (a layer's artifact directory) and compile it."""
    _check_runtime()
    target = dest / "python"
    shutil.rmtree(target, ignore_errors=True)
    command = pip_install_command(target, architecture=architecture, lock=lock)
    subprocess.run(command, check=True)  # noqa: S603 - this interpreter's pip, the lock in the checkout
    # console scripts (alembic, mako-render, ...) with this machine's interpreter in their #! line
    shutil.rmtree(target / "bin", ignore_errors=True)
    compile_tree(target, strict=False)


def compile_tree(directory: Path, *, strict: bool) -> None:
    """Byte-compile every ``.py`` under ``directory`` into unchecked hash-based ``.pyc``. ``strict``: fail on
    a file that does not compile (our code); a dependency may ship a template that is not Python 3.13."""
    ok = compileall.compile_dir(
        directory,
        quiet=2,
        workers=0,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )
    if strict and not ok:
        raise SystemExit(f"{directory}: some modules do not compile")


def _check_runtime() -> None:
    if sys.version_info[:2] != RUNTIME:
        wanted = f"python{RUNTIME[0]}.{RUNTIME[1]}"
        raise SystemExit(
            f"the Lambda packages are compiled for {wanted} (the functions' runtime) and this is "
            f"python{sys.version_info[0]}.{sys.version_info[1]}: run `make PYTHON=/path/to/{wanted} ...`, or "
            f"put {wanted} on PATH for `sam build`"
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("artifact", choices=["code", "dependencies"])
    parser.add_argument("dest", type=Path, help="the artifact directory (sam build's ARTIFACTS_DIR)")
    parser.add_argument("--arch", default=ARCHITECTURE, choices=["aarch64", "x86_64"])
    args = parser.parse_args(argv)
    args.dest.mkdir(parents=True, exist_ok=True)
    if args.artifact == "code":
        build_code(args.dest)
    else:
        build_dependencies(args.dest, architecture=args.arch)


if __name__ == "__main__":
    main()
