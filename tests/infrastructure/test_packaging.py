"""What `sam build` packs, and the lock it packs from.

template.yaml builds every function with the Makefile's ``build-<Function>`` target and the dependencies with
``build-DependenciesLayer`` (``Metadata: BuildMethod: makefile``); both run infra/lambda_build.py. These tests
run the same Makefile targets with the runtime's Python (python3.13: CI's, or one on PATH; skipped elsewhere,
never in CI). A function's package is built for real, then zipped as `sam package` zips it (every file dated
1980) and unzipped, and checked: what it holds, what it must not, its size, and that its handlers import from
it alone, from the bytecode compiled at build time. The layer needs the arm64 wheels from PyPI: by default
its pip command and the lock are checked; ``SWITCHBOARD_BUILD_LAYER=1`` builds it for real (about a minute and
40 MB of downloads) and checks it too.
"""

from __future__ import annotations

import importlib.metadata
import io
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from infra import lambda_build
from infra.template import TEMPLATE_PATH, Template, load_template

ROOT = TEMPLATE_PATH.parent
RUNTIME = f"python{lambda_build.RUNTIME[0]}.{lambda_build.RUNTIME[1]}"
LAYER = "DependenciesLayer"
# Nothing of the checkout but the code: tests, tools, docs, sample events, the local stack's data (its
# database and JWT secret), packaging files.
NEVER_PACKED = {
    "tests", "infra", "bench", "docs", "events", ".switchboard", ".venv", ".git", ".aws-sam",
    "template.yaml", "samconfig.toml", "pyproject.toml", "requirements.txt", "requirements.lock",
    "Makefile", "README.md", ".ci", "switchboard.egg-info",
}  # fmt: skip
CODE_MAX_BYTES = 2_000_000  # handlers/ and shared/ with their .pyc: about 0.7 MB today
CODE_MAX_ZIPPED = 1_000_000
LAYER_MAX_BYTES = 150_000_000  # about 96 MB today; Lambda's limit is 250 MB for a function and its layers
LAYER_MAX_ZIPPED = 60_000_000
# The functions' platform, for the lock's environment markers.
TARGET_ENVIRONMENT = {
    "python_version": f"{lambda_build.RUNTIME[0]}.{lambda_build.RUNTIME[1]}",
    "python_full_version": f"{lambda_build.RUNTIME[0]}.{lambda_build.RUNTIME[1]}.0",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": lambda_build.ARCHITECTURE,
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}


@pytest.fixture(scope="module")
def template() -> Template:
    return load_template()


def functions(template: Template) -> dict[str, dict[str, Any]]:
    return {
        logical_id: resource
        for logical_id, resource in template.raw["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
    }


# --- the template's build settings ------------------------------------------------------------------------


def test_every_function_is_built_by_the_makefile_with_the_dependencies_layer(template: Template) -> None:
    function_globals = template.raw["Globals"]["Function"]
    assert function_globals["CodeUri"] == "."  # the Makefile's directory; it picks what is packed
    assert function_globals["Layers"] == [{"Ref": LAYER}]
    assert functions(template)
    for logical_id, resource in functions(template).items():
        assert resource.get("Metadata", {}).get("BuildMethod") == "makefile", logical_id
        properties = resource["Properties"]
        assert "CodeUri" not in properties and "Layers" not in properties, logical_id
        assert "Runtime" not in properties and "Architectures" not in properties, logical_id


def test_the_dependencies_layer_is_built_by_the_makefile_for_the_runtime(template: Template) -> None:
    function_globals = template.raw["Globals"]["Function"]
    layer = template.raw["Resources"][LAYER]
    assert layer["Type"] == "AWS::Lambda::LayerVersion"  # the update deletes the replaced version
    assert layer["Metadata"] == {"BuildMethod": "makefile", "BuildArchitecture": "arm64"}
    assert layer["Properties"]["Content"] == "."
    assert layer["Properties"]["CompatibleRuntimes"] == [function_globals["Runtime"]]
    assert layer["Properties"]["CompatibleArchitectures"] == function_globals["Architectures"]


def test_sam_builds_in_the_checkout_without_a_cache() -> None:
    """With CodeUri: . SAM would copy the whole checkout (.venv, .switchboard) into a scratch directory for
    every function, and its cache key would hash it all for every function."""
    config = tomllib.loads((ROOT / "samconfig.toml").read_text(encoding="utf-8"))
    for environment in ("default", "prod"):
        build = config[environment]["build"]["parameters"]
        assert build["build_in_source"] is True, environment
        assert build["cached"] is False, environment


def test_the_build_script_targets_the_functions_runtime(template: Template) -> None:
    function_globals = template.raw["Globals"]["Function"]
    assert function_globals["Runtime"] == RUNTIME
    assert function_globals["Architectures"] == [{"aarch64": "arm64"}[lambda_build.ARCHITECTURE]]


def test_ci_runs_the_tests_on_the_functions_python(template: Template) -> None:
    if not os.environ.get("CI"):
        pytest.skip("CI's run (.ci/run) must use the runtime's Python; a developer's may be any 3.11+")
    running = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    assert running == template.raw["Globals"]["Function"]["Runtime"]


def test_the_makefile_builds_every_function_and_the_layer_with_the_build_script(template: Template) -> None:
    recipes = {
        logical_id: make_dry_run(f"build-{logical_id}", ARTIFACTS_DIR="/artifacts", PYTHON="py")
        for logical_id in [*functions(template), LAYER]
    }
    script = str(ROOT / "infra" / "lambda_build.py")
    assert recipes.pop(LAYER) == f'"py" "{script}" dependencies "/artifacts"'
    assert set(recipes.values()) == {f'"py" "{script}" code "/artifacts"'}


def test_the_layer_installs_exactly_the_lock_for_the_functions_platform() -> None:
    command = lambda_build.pip_install_command(Path("/layer/python"))
    assert command[:4] == [sys.executable, "-m", "pip", "install"]
    for flag in ("--require-hashes", "--no-deps", "--only-binary=:all:", "--no-compile"):
        assert flag in command
    options = list(itertools.pairwise(command))
    assert ("--python-version", "3.13") in options
    assert ("--implementation", "cp") in options
    assert ("--target", "/layer/python") in options
    assert ("--requirement", str(ROOT / "requirements.lock")) in options
    platforms = {value for option, value in options if option == "--platform"}
    # Amazon Linux 2023 (glibc 2.34): every manylinux wheel up to it, and none beyond
    assert {"manylinux2014_aarch64", "manylinux_2_28_aarch64", "manylinux_2_34_aarch64"} <= platforms
    assert not {p for p in platforms if not p.endswith("_aarch64")}
    assert "manylinux_2_35_aarch64" not in platforms


# --- a function's package, built ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runtime_python() -> str:
    """The functions' Python: this one in CI, else python3.13 from PYTHON or PATH (else skip)."""
    wanted = lambda_build.RUNTIME
    if sys.version_info[:2] == wanted:
        return sys.executable
    for candidate in (os.environ.get("PYTHON"), shutil.which(RUNTIME)):
        check = f"import sys; sys.exit(sys.version_info[:2] != {wanted!r})"
        if candidate and subprocess.run([candidate, "-c", check], capture_output=True).returncode == 0:
            return candidate
    if os.environ.get("CI"):
        pytest.fail(f"CI must run with {RUNTIME}, the functions' runtime")
    pytest.skip(f"needs {RUNTIME} (the .pyc are for the runtime's minor version): PYTHON=... or PATH")


@pytest.fixture(scope="module")
def function_package(tmp_path_factory: pytest.TempPathFactory, runtime_python: str) -> Path:
    """SendMessageFunction's package as `sam build` makes it, zipped as `sam package` does, then unzipped."""
    built = tmp_path_factory.mktemp("built")
    make("build-SendMessageFunction", ARTIFACTS_DIR=str(built), PYTHON=runtime_python)
    return unzipped_like_lambda(built, tmp_path_factory.mktemp("task"))


def test_a_function_package_holds_handlers_and_shared_and_nothing_else(function_package: Path) -> None:
    assert {p.name for p in function_package.iterdir()} == {"handlers", "shared"}
    packed = {p.relative_to(function_package) for p in files_under(function_package)}
    sources = {p for p in packed if "__pycache__" not in p.parts}
    assert sources == set(lambda_build.code_files(ROOT))  # every file of handlers/ and shared/, as it is
    assert Path("shared/db/migrations/script.py.mako") in sources  # the migration function's Alembic files
    assert Path("shared/db/migrations/env.py") in sources
    assert any(p.match("shared/db/migrations/versions/*.py") for p in sources)
    assert not {part for p in packed for part in p.parts} & NEVER_PACKED


def test_a_function_package_has_a_handler_module_for_every_function(
    template: Template, function_package: Path
) -> None:
    for logical_id, spec in template.functions.items():
        module_path, _, _ = spec.handler.rpartition(".")
        assert (function_package / f"{module_path}.py").is_file(), logical_id


def test_every_module_of_a_function_package_is_compiled_for_the_runtime_unchecked(
    function_package: Path, runtime_python: str
) -> None:
    magic = bytes.fromhex(
        subprocess.run(
            [runtime_python, "-c", "import importlib.util; print(importlib.util.MAGIC_NUMBER.hex())"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    tag = f"cpython-{lambda_build.RUNTIME[0]}{lambda_build.RUNTIME[1]}"
    sources = [p for p in files_under(function_package) if p.suffix == ".py"]
    compiled = {p for p in files_under(function_package) if p.suffix == ".pyc"}
    assert sources
    for source in sources:
        pyc = source.parent / "__pycache__" / f"{source.stem}.{tag}.pyc"
        assert pyc in compiled, source
        header = pyc.read_bytes()[:8]
        assert header[:4] == magic, pyc
        # PEP 552 flags: hash-based (bit 0), source not checked (bit 1 clear): used whatever the file dates
        assert int.from_bytes(header[4:8], "little") == 0b01, pyc
    assert len(compiled) == len(sources)  # no stale bytecode (another Python's, a deleted module's)


def test_a_function_package_is_small(function_package: Path) -> None:
    size = sum(p.stat().st_size for p in files_under(function_package))
    assert size < CODE_MAX_BYTES
    assert len(zipped(function_package)) < CODE_MAX_ZIPPED


def test_the_handlers_import_from_the_package_alone_from_its_bytecode(
    template: Template, function_package: Path, runtime_python: str
) -> None:
    """In a fresh interpreter with only the package and the dependencies on sys.path (no checkout, no editable
    install), as Lambda imports it from a read-only /var/task: every handler imports, from the package's
    code only, and no project module is compiled from source on the way (the build's .pyc are used)."""
    if runtime_python != sys.executable:
        pytest.skip(f"needs the dependencies installed for {RUNTIME}: runs where the tests do")
    handlers = {spec.handler.rpartition(".")[0] for spec in template.functions.values()}
    modules = sorted(handler.replace("/", ".") for handler in handlers)
    dependencies = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    probe = (
        "import importlib, json, sys\n"
        f"sys.path[:0] = {[str(function_package), *dependencies]!r}\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(json.dumps({n: getattr(m, '__file__', None) for n, m in sys.modules.items()}))\n"
    )
    environment = {"PATH": os.environ.get("PATH", ""), "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run(
        [runtime_python, "-S", "-v", "-c", probe],
        cwd=function_package,
        env=environment,
        capture_output=True,
        text=True,
    )
    errors = [line for line in result.stderr.splitlines() if not line.startswith(("#", "import "))]
    assert result.returncode == 0, "\n".join(errors[-40:])
    loaded = json.loads(result.stdout.splitlines()[-1])
    project = {name: path for name, path in loaded.items() if name.split(".")[0] in {"handlers", "shared"}}
    assert set(modules) <= set(project)
    assert all(path and path.startswith(str(function_package)) for path in project.values()), project
    assert not {name for name in loaded if name.split(".")[0] in {"infra", "tests"}}
    # `python -v`: "code object from '<x.pyc>'" when the bytecode is used, "code object from <x.py>" when not
    compiled_from_source = [
        line
        for line in result.stderr.splitlines()
        if line.startswith("# code object from ") and line.endswith(".py") and str(function_package) in line
    ]
    assert not compiled_from_source


# --- the layer, built (SWITCHBOARD_BUILD_LAYER=1: downloads the arm64 wheels) -------------------------------


BUILD_LAYER = bool(os.environ.get("SWITCHBOARD_BUILD_LAYER"))


@pytest.mark.skipif(not BUILD_LAYER, reason="downloads the arm64 wheels: SWITCHBOARD_BUILD_LAYER=1 to run")
def test_the_dependencies_layer_holds_the_lock_compiled_for_arm64(
    tmp_path: Path, runtime_python: str, function_package: Path
) -> None:
    started = time.monotonic()
    make(f"build-{LAYER}", ARTIFACTS_DIR=str(tmp_path / "built"), PYTHON=runtime_python)
    print(f"layer built in {time.monotonic() - started:.0f} s")
    layer = unzipped_like_lambda(tmp_path / "built", tmp_path / "opt")
    assert {p.name for p in layer.iterdir()} == {"python"}
    site = layer / "python"
    assert not (site / "bin").exists()
    installed = {
        canonicalize_name(m.group(1)): m.group(2)
        for p in site.glob("*.dist-info")
        if (m := re.fullmatch(r"(.+)-([^-]+)\.dist-info", p.name))
    }
    assert installed == {name: entry.version for name, entry in read_lock().items()}
    binaries = [p for p in files_under(site) if p.suffix == ".so"]
    assert binaries and all("x86_64" not in p.name for p in binaries)
    assert all(p.name.endswith((f"-{lambda_build.ARCHITECTURE}-linux-gnu.so", ".abi3.so")) for p in binaries)
    sources = [p for p in files_under(site) if p.suffix == ".py"]
    assert all((p.parent / "__pycache__" / f"{p.stem}.cpython-313.pyc").exists() for p in sources)
    size = sum(p.stat().st_size for p in files_under(layer))
    packed = len(zipped(layer))
    print(f"layer: {size / 1e6:.1f} MB, zipped {packed / 1e6:.1f} MB")
    assert size < LAYER_MAX_BYTES and packed < LAYER_MAX_ZIPPED
    assert size + sum(p.stat().st_size for p in files_under(function_package)) < 250_000_000


# --- the lock -----------------------------------------------------------------------------------------------


@dataclass
class LockEntry:
    version: str
    hashes: list[str] = field(default_factory=list)
    via: set[str] = field(default_factory=set)


PROJECT = "switchboard (pyproject.toml)"


def read_lock(path: Path = lambda_build.LOCK) -> dict[str, LockEntry]:
    """requirements.lock as uv writes it: ``name==version``, its ``--hash`` lines, its ``# via`` lines."""
    entries: dict[str, LockEntry] = {}
    current: LockEntry | None = None
    in_via = False
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if match := re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+?)\s*\\?", line):
            current = entries[canonicalize_name(match.group(1))] = LockEntry(match.group(2))
            in_via = False
        elif current is not None and (match := re.fullmatch(r"--hash=sha256:([0-9a-f]{64})\s*\\?", stripped)):
            current.hashes.append(match.group(1))
        elif current is not None and stripped.startswith("# via"):
            rest = stripped.removeprefix("# via").strip()
            in_via = not rest
            if rest:
                current.via.add(rest)
        elif current is not None and in_via and stripped.startswith("#   "):
            current.via.add(stripped.removeprefix("#").strip())
        elif stripped and not stripped.startswith("#"):
            raise AssertionError(f"requirements.lock: unexpected line {line!r}")
    return entries


def project_dependencies() -> list[Requirement]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return [Requirement(text) for text in pyproject["project"]["dependencies"]]


def test_the_lock_pins_every_package_with_hashes_for_the_functions_platform() -> None:
    header = lambda_build.LOCK.read_text(encoding="utf-8").splitlines()[:2]
    assert "uv pip compile pyproject.toml" in header[1]
    for flag in ("--python-version 3.13", "--python-platform aarch64-manylinux_2_34", "--generate-hashes"):
        assert flag in header[1]  # as the Makefile's `make lock` writes it
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert header[1].split("uv ", 1)[1] in " ".join(makefile.replace("\\\n", " ").split())
    entries = read_lock()
    assert entries
    for name, entry in entries.items():
        assert entry.hashes, name
        assert entry.via, name


def test_the_lock_covers_exactly_the_runtime_dependencies_of_pyproject() -> None:
    """Its direct pins are pyproject's [project].dependencies, each within its range; every other pin is
    there because a pinned package needs it (nothing left over from an old resolution)."""
    entries = read_lock()
    declared = {canonicalize_name(r.name): r for r in project_dependencies()}
    direct = {name for name, entry in entries.items() if PROJECT in entry.via}
    assert direct == set(declared)
    for name, requirement in declared.items():
        assert requirement.specifier.contains(entries[name].version, prereleases=True), (name, requirement)
    reached: set[str] = set(direct)
    frontier: list[str] = list(direct)
    dependents = {
        name: {canonicalize_name(parent.split()[0]) for parent in entry.via if parent != PROJECT}
        for name, entry in entries.items()
    }
    while frontier:
        current = frontier.pop()
        for child, parents in dependents.items():
            if current in parents and child not in reached:
                reached.add(child)
                frontier.append(child)
    assert reached == set(entries)


def test_the_lock_is_the_closure_of_pyproject_dependencies_on_the_functions_platform() -> None:
    """Checked against the installed packages' own metadata, where they are the locked versions (CI installs
    the lock): what each pinned package requires on python3.13/linux/aarch64 (with the extras asked for) is
    pinned, and nothing else is."""
    entries = read_lock()
    for name, entry in entries.items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pytest.skip(f"{name} is not installed here")
        if installed != entry.version:
            pytest.skip(f"{name} {installed} is installed here, the lock has {entry.version}")
    needed: set[str] = set()
    frontier: list[tuple[str, frozenset[str]]] = [
        (canonicalize_name(r.name), frozenset(r.extras))
        for r in project_dependencies()
        if r.marker is None or r.marker.evaluate(dict(TARGET_ENVIRONMENT, extra=""))
    ]
    seen: set[tuple[str, frozenset[str]]] = set()
    while frontier:
        name, extras = frontier.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        needed.add(name)
        for text in importlib.metadata.requires(name) or []:
            requirement = Requirement(text)
            if applies(requirement.marker, extras):
                frontier.append((canonicalize_name(requirement.name), frozenset(requirement.extras)))
    assert needed == set(entries)


def applies(marker: Marker | None, extras: frozenset[str]) -> bool:
    if marker is None:
        return True
    return any(marker.evaluate(dict(TARGET_ENVIRONMENT, extra=extra)) for extra in [*extras, ""])


# --- helpers ------------------------------------------------------------------------------------------------


def make(target: str, **variables: str) -> None:
    if shutil.which("make") is None:
        pytest.skip("needs make (as `sam build` does)")
    arguments = [f"{name}={value}" for name, value in variables.items()]
    result = subprocess.run(
        ["make", "--no-print-directory", "-f", str(ROOT / "Makefile"), target, *arguments],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def make_dry_run(target: str, **variables: str) -> str:
    if shutil.which("make") is None:
        pytest.skip("needs make (as `sam build` does)")
    arguments = [f"{name}={value}" for name, value in variables.items()]
    result = subprocess.run(
        ["make", "--no-print-directory", "-n", "-f", str(ROOT / "Makefile"), target, *arguments],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout.strip()


def files_under(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file())


def zipped(directory: Path) -> bytes:
    """The directory zipped as `sam package` zips it (samcli's make_zip: deflate, every entry dated 1980)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in files_under(directory):
            info = zipfile.ZipInfo(str(path.relative_to(directory)))
            info.external_attr = 0o100755 << 16
            archive.writestr(info, path.read_bytes(), compress_type=zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def unzipped_like_lambda(built: Path, dest: Path) -> Path:
    """``built`` zipped as `sam package` does and unzipped with the zip's dates, as Lambda gets it."""
    epoch_1980 = time.mktime((1980, 1, 1, 0, 0, 0, 0, 0, -1))
    with zipfile.ZipFile(io.BytesIO(zipped(built))) as archive:
        archive.extractall(dest)
        for info in archive.infolist():
            os.utime(dest / info.filename, (epoch_1980, epoch_1980))
    return dest
