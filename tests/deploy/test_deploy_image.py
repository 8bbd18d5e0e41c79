"""The Dockerfile: hadolint finds nothing, the stages are what the image promises (pinned bases, slim
runtime without a compiler, OCI labels, the console script), and both RUN steps are run verbatim, as
`docker build` would run them, in fresh venvs: the build stage's on a copy of exactly the files its COPY
lines name (the wheels, with the compiled path), the runtime stage's with no package index (the
installed agent imports its compiled module and runs). No image is built: there is no container
engine here and no base image registry to pull from."""
from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.deploy.helpers import ROOT, VERSION, run, tool

DOCKERFILE = ROOT / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in DOCKERFILE.read_text().splitlines()
                                          if not line.lstrip().startswith("#")))
    return [(word.upper(), rest.strip()) for word, _, rest in
            (line.strip().partition(" ") for line in text.splitlines() if line.strip())]


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction in _instructions():
        if instruction[0] == "FROM":
            stages.append([])
        stages[-1].append(instruction)
    return stages


def test_hadolint_passes_and_would_catch_a_bad_dockerfile(tmp_path):
    done = run(tool("hadolint"), "--no-color", str(DOCKERFILE), check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install flowwarden\nUSER root\n")
    done = run(tool("hadolint"), "--no-color", str(bad), check=False)
    assert done.returncode != 0 and "DL3007" in done.stdout and "DL3013" in done.stdout, done.stdout


def test_the_stages_pin_their_bases_and_the_runtime_is_slim_and_labelled():
    build, runtime = _stages()
    base, _, name = build[0][1].partition(" AS ")
    assert name.strip() == "build" and re.fullmatch(r"python:3\.11\.\d+-bookworm", base)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", runtime[0][1])
    assert base.split(":")[1].split("-")[0] == runtime[0][1].split(":")[1].split("-")[0], "one Python version"
    runtime_text = " ".join(args for _i, args in runtime)
    for compiler in ("gcc", "build-essential", "apt-get", "python3-dev"):
        assert compiler not in runtime_text, compiler
    labels = " ".join(args for instruction, args in runtime if instruction == "LABEL")
    for key in ("title", "description", "version", "licenses", "source"):
        assert f"org.opencontainers.image.{key}=" in labels, key
    assert f'org.opencontainers.image.version="{VERSION}"' in labels
    assert f"flowwarden=={VERSION}" in runtime_text
    assert ("ENTRYPOINT", '["flowwarden"]') in runtime
    assert ("USER", "0") in runtime and "docs/deploy.md" in DOCKERFILE.read_text()  # root, and why


def _dockerignored(relative: str) -> bool:
    """.dockerignore's rules, last match wins (the subset of the syntax the file uses)."""
    ignored = False
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate, pattern = line.startswith("!"), line.lstrip("!").rstrip("/")
        pattern = pattern.removeprefix("**/")
        parts = relative.split("/")
        if any(fnmatch.fnmatch("/".join(parts[:i]), pattern) or fnmatch.fnmatch(parts[i - 1], pattern)
               for i in range(1, len(parts) + 1)):
            ignored = not negate
    return ignored


def _context(tmp_path: Path) -> Path:
    """The build stage's /src: what its COPY lines name, less what .dockerignore leaves out."""
    (build, _runtime) = _stages()
    src = tmp_path / "src"
    src.mkdir()
    for instruction, args in build:
        if instruction != "COPY":
            continue
        *sources, dest = args.split()
        for source in sources:
            for path in [ROOT / source] + sorted((ROOT / source).rglob("*")):
                relative = path.relative_to(ROOT).as_posix()
                if path.is_dir() or _dockerignored(relative):
                    continue
                target = src / dest / (path.relative_to(ROOT / source) if (ROOT / source).is_dir() else path.name)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
    return src


def _run_step(args: str, *, env_dir: Path, wheels: Path, cwd: Path) -> None:
    """A RUN step's shell command, verbatim (BuildKit's --mount flags are not shell), with the venv's
    pip and python first on PATH and WHEELS (the Dockerfile's ARG) pointing at `wheels`."""
    command = re.sub(r"^(--mount=\S+\s+)+", "", args)
    env = {**os.environ, "PATH": f"{env_dir / 'bin'}:{os.environ['PATH']}", "WHEELS": str(wheels),
           "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)
    done = subprocess.run(["/bin/sh", "-ec", command], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def test_the_image_install_steps_build_the_compiled_wheel_and_install_it_without_an_index(tmp_path):
    (build, runtime) = _stages()
    (build_run,) = [args for instruction, args in build if instruction == "RUN"]
    (runtime_run,) = [args for instruction, args in runtime if instruction == "RUN"]
    src, wheels = _context(tmp_path), tmp_path / "wheels"
    assert sorted(p.name for p in src.iterdir()) == ["README.md", "agent", "pyproject.toml", "setup.py"]
    assert not list(src.rglob("*.so")) and (src / "agent" / "_hotpath.c").exists()

    for name in ("build", "runtime"):
        venv.create(tmp_path / name, with_pip=True)
    _run_step(build_run, env_dir=tmp_path / "build", wheels=wheels, cwd=src)
    (wheel,) = wheels.glob(f"flowwarden-{VERSION}-*.whl")
    assert "linux" in wheel.name, "a platform wheel: the compiled module is in it"

    _run_step(runtime_run, env_dir=tmp_path / "runtime", wheels=wheels, cwd=tmp_path)
    python = tmp_path / "runtime" / "bin" / "python"
    done = run(str(python), "-c", "import agent, agent._hotpath; print(agent.__file__); print(agent._hotpath.__file__)",
               cwd=tmp_path, env={"PATH": os.environ["PATH"]})
    package, compiled = map(Path, done.stdout.split())
    site = tmp_path / "runtime" / "lib"
    assert package.is_relative_to(site) and compiled.is_relative_to(site) and compiled.suffix == ".so"
    assert not list(package.parent.rglob("*.c")), "the wheel ships the compiled module, not its source"
    done = run(str(tmp_path / "runtime" / "bin" / "flowwarden"), "run", "--help", cwd=tmp_path)
    assert "--config" in done.stdout


@pytest.mark.parametrize("path, ignored", [("agent/cli.py", False), ("pyproject.toml", False),
                                            ("agent/_hotpath.cpython-311-x86_64-linux-gnu.so", True),
                                            ("agent/__pycache__/cli.cpython-311.pyc", True),
                                            (".venv/bin/python", True), ("pcaps/crafted/vlan.pcap", True),
                                            ("tests/test_run.py", True), ("bench/out/x", True)])
def test_the_build_context_is_the_package_sources_only(path, ignored):
    assert _dockerignored(path) is ignored
