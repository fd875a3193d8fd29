"""Which runtimes have a CPython 3.11 aarch64 wheel on PyPI: one `pip download --no-deps` per runtime.

    python arm64_wheels.py --runtimes onnxruntime,openvino,ncnn --dest DIR --out WHEELS.json

Each runtime's requirement is pyproject.toml's (onnxruntime from the base dependencies, the others
from the extra of the same name). Two platform sets are asked:
  - `manylinux2014`: --platform manylinux2014_aarch64 alone (glibc 2.17, the widest-compatible tag);
  - `bookworm`: every manylinux tag up to glibc 2.36, what Debian bookworm (the image's base,
    python:3.11-slim-bookworm) accepts. OpenVINO's recent aarch64 wheels need glibc 2.35, so they
    appear only here.
The installer uses the bookworm answer. Prints, one a line, the requirement of each runtime that has
a wheel there; WHEELS.json holds the whole table. Standard library only (it runs on the host with
any Python 3.11 that has pip; on 3.10 it needs tomli).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

try:
    import tomllib  # Python 3.11+
except ModuleNotFoundError:  # 3.10: the same parser under its PyPI name (pip install tomli)
    import tomli as tomllib

PYTHON_VERSION = "3.11"
BOOKWORM_GLIBC = (2, 36)
PLATFORM_SETS = {
    "manylinux2014": ["manylinux2014_aarch64"],
    "bookworm": ["manylinux2014_aarch64"]
    + [f"manylinux_2_{minor}_aarch64" for minor in range(BOOKWORM_GLIBC[1], 16, -1)],
}
_WHEEL = re.compile(
    r"^(?P<name>[^-]+)-(?P<version>[^-]+)(?:-(?P<build>\d[^-]*))?-(?P<python>[^-]+)-(?P<abi>[^-]+)-(?P<platform>[^-]+)\.whl$"
)


def parse_wheel(filename: str) -> dict:
    """Name, version, python/abi/platform tags and the oldest glibc a wheel file name asks for
    (the lowest of its manylinux tags; None for a pure-Python or non-Linux wheel)."""
    m = _WHEEL.match(Path(filename).name)
    if not m:
        raise ValueError(f"{filename!r} is not a wheel file name (name-version[-build]-python-abi-platform.whl)")
    tags = m["platform"].split(".")
    glibc = []
    for tag in tags:
        if tag.startswith("manylinux2014_"):
            glibc.append((2, 17))
        elif tag.startswith("manylinux2010_"):
            glibc.append((2, 12))
        elif tag.startswith("manylinux1_"):
            glibc.append((2, 5))
        elif mm := re.match(r"manylinux_(\d+)_(\d+)_", tag):
            glibc.append((int(mm[1]), int(mm[2])))
    oldest = min(glibc) if glibc else None
    return {
        "name": m["name"].replace("_", "-").lower(),
        "version": m["version"],
        "python": m["python"],
        "abi": m["abi"],
        "platforms": tags,
        "min_glibc": f"{oldest[0]}.{oldest[1]}" if oldest else None,
        "aarch64": any(t.endswith("_aarch64") for t in tags),
    }


def requirements(pyproject: Path, runtimes: list[str]) -> dict[str, str]:
    """The pip requirement of each runtime as pyproject.toml states it."""
    project = tomllib.loads(pyproject.read_text())["project"]
    out = {}
    for runtime in runtimes:
        pool = project["dependencies"] if runtime == "onnxruntime" else project["optional-dependencies"].get(runtime)
        found = [r for r in pool or [] if re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower() == runtime]
        if not found:
            raise ValueError(
                f"pyproject.toml has no requirement for {runtime!r} (base dependencies or an extra of that name)"
            )
        out[runtime] = found[0]
    return out


def pip_reason(stderr: str) -> str:
    """The one line of pip's error that says why nothing was downloaded."""
    for line in stderr.splitlines():
        if "Could not find a version" in line or "No matching distribution" in line:
            return line.replace("ERROR: ", "").strip()
    lines = [x.strip() for x in stderr.splitlines() if x.strip()]
    return lines[-1] if lines else "pip download failed without a message"


def probe(requirement: str, platforms: list[str], dest: Path, python: list[str]) -> dict:
    """One `pip download --no-deps --only-binary=:all:` for aarch64 cp311: the wheel it picks, or why none."""
    dest.mkdir(parents=True, exist_ok=True)
    before = set(dest.glob("*.whl"))
    args = ["download", "--no-deps", "--only-binary=:all:", "--python-version", PYTHON_VERSION]
    args += ["--implementation", "cp"]
    args += [arg for p in platforms for arg in ("--platform", p)]
    proc = subprocess.run(
        [*python, "-m", "pip", *args, "--disable-pip-version-check", "-d", str(dest), requirement],
        capture_output=True,
        text=True,
    )
    command = f"pip {' '.join(args)} '{requirement}'"
    if proc.returncode != 0:
        return {"available": False, "reason": pip_reason(proc.stderr), "command": command}
    saved = re.findall(r"(?:Saved|File was already downloaded) (\S+\.whl)", proc.stdout)
    name = Path(saved[-1]).name if saved else next((p.name for p in set(dest.glob("*.whl")) - before), None)
    wheel = parse_wheel(name) if name else None
    if not wheel or not wheel["aarch64"]:  # e.g. a pure-Python wheel: not a runtime built for the board
        return {"available": False, "reason": f"pip chose {name}, not an aarch64 wheel", "command": command}
    return {
        "available": True,
        "wheel": name,
        "version": wheel["version"],
        "min_glibc": wheel["min_glibc"],
        "command": command,
    }


def table(pyproject: Path, runtimes: list[str], dest: Path, python: list[str]) -> dict:
    """Per runtime: its requirement and the answer for each platform set."""
    rows = {}
    for runtime, req in requirements(pyproject, runtimes).items():
        rows[runtime] = {"requirement": req, **{k: probe(req, p, dest, python) for k, p in PLATFORM_SETS.items()}}
    return {
        "python": f"cp{PYTHON_VERSION.replace('.', '')}",
        "platform_sets": PLATFORM_SETS,
        "installs_from": "bookworm",
        "runtimes": rows,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runtimes", required=True, help="comma-separated runtime names")
    ap.add_argument("--pyproject", type=Path, default=Path(__file__).resolve().parent.parent / "pyproject.toml")
    ap.add_argument("--dest", type=Path, required=True, help="where the probed wheels go")
    ap.add_argument("--out", type=Path, required=True, help="the table as JSON")
    args = ap.parse_args(argv)
    names = [n for n in args.runtimes.split(",") if n]
    try:
        result = table(args.pyproject, names, args.dest, [sys.executable])
    except ValueError as e:
        print(f"arm64_wheels: error: {e}", file=sys.stderr)
        return 2
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for runtime, row in result["runtimes"].items():
        if row["bookworm"]["available"]:
            print(row["requirement"])
        else:
            print(f"arm64_wheels: {runtime}: no cp311 aarch64 wheel: {row['bookworm']['reason']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
