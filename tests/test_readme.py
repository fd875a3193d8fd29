"""README.md's commands, checked against the real thing, so a renamed flag or command fails here.

Every shell line of every ```bash block is checked: an `edgeprune` command is parsed by the real
click command behind the CLI (`typer.main.get_command(app)`, then `make_context` of the
subcommand, which converts every value to its type but does not run the command), a
`make` target must be in the Makefile, a pip extra in pyproject.toml, a script must exist and
know each flag it is given. A line of a kind this file does not know fails, so the README cannot
grow a command nobody checks. The cheap commands also run for real, in a subprocess, through the
installed `edgeprune` entry point (the first training run on small Fashion-MNIST-like data, the
`datasets` summary of an image folder, bench on a tiny bundle). The Python block is compiled, and
run on a small model: the pruner must shrink it.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from datafiles import write_mnist_like

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
EDGEPRUNE = Path(sys.executable).parent / "edgeprune"  # the console script pip installed
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
RUN_S = 300  # the first training run imports torch and trains two short epochs on a shared CPU


def blocks(lang: str) -> list[str]:
    """The README's fenced code blocks of language `lang`."""
    return [body for kind, body in BLOCK.findall(README.read_text()) if kind == lang]


def shell_commands() -> list[list[str]]:
    """Every command of the README's bash blocks as argv: continuation lines joined, comments
    dropped, `a && b` split in two."""
    commands = []
    for body in blocks("bash"):
        for line in body.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            while words:
                cut = words.index("&&") if "&&" in words else len(words)
                commands.append(words[:cut])
                words = words[cut + 1 :]
    return commands


def edgeprune_commands() -> list[list[str]]:
    """The `edgeprune` commands of the bash blocks, then those written inline in the prose
    (`edgeprune experiment --dataset ...`: a command with at least one argument)."""
    inline = [shlex.split(s) for s in re.findall(r"`(edgeprune [^`]+)`", README.read_text())]
    return [c for c in shell_commands() if c[0] == "edgeprune"] + [c for c in inline if len(c) > 2]


def _click_group():
    import typer

    from edgeprune.cli import app

    return typer.main.get_command(app)


def parse_edgeprune(argv: list[str]) -> dict:
    """The parameters `edgeprune ARGS` would call its command with; a click error when a command,
    flag or value is wrong."""
    group = _click_group()
    name, args = argv[1], argv[2:]
    command = group.commands.get(name)
    assert command is not None, f"README runs `edgeprune {name}`, which is not a command ({', '.join(group.commands)})"
    with command.make_context(name, list(args)) as ctx:
        return dict(ctx.params)


# --- every command parses or is found -----------------------------------------------------------


def test_readme_has_commands_of_each_stage():
    names = {c[1] for c in edgeprune_commands()}
    # the newcomer's path: the four stages, the whole study, own data
    assert {"train", "export", "bench", "report", "experiment", "datasets"} <= names


@pytest.mark.parametrize("argv", edgeprune_commands(), ids=lambda c: " ".join(c[:6]))
def test_edgeprune_command_parses(argv):
    params = parse_edgeprune(argv)
    # each flag given is one of the command's options (an unknown one raised above)
    assert params


def test_parser_refuses_a_renamed_flag():
    """The check above can fail: a flag the command does not have, or a bad value, is a click error."""
    import typer

    # typer carries its own click; its usage errors are matched by their words
    with pytest.raises(Exception, match="No such option: --target-flops"):
        parse_edgeprune(["edgeprune", "train", "--dataset", "fashion-mnist", "--target-flops", "0.5"])
    with pytest.raises(typer.BadParameter, match="valid integer"):
        parse_edgeprune(["edgeprune", "train", "--dataset", "fashion-mnist", "--epochs", "two"])
    with pytest.raises(AssertionError, match="not a command"):
        parse_edgeprune(["edgeprune", "prune", "runs/x"])


def test_readme_flag_values_reach_the_command():
    """A parsed line is the command's real input, checked here on the first-run line."""
    [first] = [c for c in edgeprune_commands() if "--limit" in c]
    params = parse_edgeprune(first)
    assert params["dataset"] == "fashion-mnist"
    assert params["epochs"] == int(first[first.index("--epochs") + 1])
    assert params["limit"] == int(first[first.index("--limit") + 1])


def _makefile_targets() -> set[str]:
    return set(re.findall(r"^([\w.-]+):", (REPO / "Makefile").read_text(), re.M))


def _extras() -> set[str]:
    """The names under [project.optional-dependencies] (read by hand: tomllib is Python 3.11+)."""
    text = (REPO / "pyproject.toml").read_text().split("[project.optional-dependencies]", 1)[1]
    section = text.split("\n[", 1)[0]
    return set(re.findall(r"^([\w-]+) = \[", section, re.M))


def _unknown_flags(script: Path, args: list[str]) -> list[str]:
    """The --flags in `args` that `script`'s text never mentions (its usage or its argument parser)."""
    text = script.read_text()
    return [a for a in args if a.startswith("--") and a not in text]


def test_other_commands_exist():
    """make targets, pip extras, scripts and their flags; anything else is a kind to teach this test."""
    targets, extras = _makefile_targets(), _extras()
    for argv in shell_commands():
        tool = argv[0]
        if tool == "edgeprune":
            continue
        if tool == "make":
            assert set(argv[1:]) <= targets, f"README runs `{' '.join(argv)}`; the Makefile has {sorted(targets)}"
        elif argv[:2] == ["pip", "install"]:
            for spec in argv[2:]:
                m = re.fullmatch(r"edgeprune(?:\[([\w,-]+)\])?", spec)
                assert m, f"README installs {spec!r}, not edgeprune or an extra of it"
                assert set((m.group(1) or "").split(",")) - {""} <= extras, f"{spec}: pyproject has {sorted(extras)}"
        elif tool.startswith(("deploy/", "benchmarks/")):
            script = REPO / tool
            assert script.is_file() and os.access(script, os.X_OK), f"README runs {tool}, not an executable file"
            unknown = _unknown_flags(script, argv[1:])
            assert not unknown, f"README gives {tool} {unknown}, which it does not know"
        elif argv[:3] == ["docker", "buildx", "build"]:
            dockerfile = argv[argv.index("-f") + 1]
            assert (REPO / dockerfile).is_file(), f"README builds {dockerfile}, which is not there"
        else:
            pytest.fail(f"README shows `{' '.join(argv)}`; teach tests/test_readme.py how to check it")


def test_readme_prose_names_real_benchmark_scripts():
    """`python benchmarks/X.py --flag` in the README's prose: the script exists and knows the flags."""
    spans = re.findall(r"`(python benchmarks/[^`]+)`", README.read_text())
    assert spans, "the headline table's command is named in the README"
    for span in spans:
        argv = shlex.split(span)
        script = REPO / argv[1]
        assert script.is_file(), span
        assert not _unknown_flags(script, argv[2:]), span


def test_readme_links_exist():
    """Relative links of the README point at files in the repository (the docs site checks its own)."""
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README.read_text()):
        if "://" not in target:
            assert (REPO / target).exists(), f"README links to {target}, which is not there"


def test_readme_stays_short():
    """A newcomer's page (issue 29): at most about 12 KB; measurements live in benchmarks/README.md."""
    assert len(README.read_bytes()) <= 12_500


# --- the cheap commands, run for real -------------------------------------------------------------


def _env(**extra) -> dict:
    """This checkout, offline, one thread, no $EDGEPRUNE_DATA unless given."""
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    env.pop("EDGEPRUNE_DATA", None)
    env.update(extra)
    return env


def _run(argv: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    p = subprocess.run([str(EDGEPRUNE), *argv[1:]], cwd=cwd, env=env, capture_output=True, text=True, timeout=RUN_S)
    assert p.returncode == 0, f"`{' '.join(argv)}` exited {p.returncode}:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}"
    assert "Traceback" not in p.stderr
    return p


def test_first_run_trains_and_prunes(tmp_path):
    """The README's first run, verbatim, on a small local Fashion-MNIST-like set ($EDGEPRUNE_DATA)."""
    import json

    [argv] = [c for c in edgeprune_commands() if c[1] == "train" and "--limit" in c]
    data = tmp_path / "data"
    write_mnist_like(data / "fashion-mnist", n_train=2200, n_test=200)
    _run(argv, tmp_path, _env(EDGEPRUNE_DATA=str(data)))
    run = tmp_path / argv[argv.index("--out") + 1]
    for name in ("config.json", "history.jsonl", "model.pt", "metrics.json"):
        assert (run / name).is_file(), f"the first run wrote no {name}"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_n"] == 200
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert len(history) == int(argv[argv.index("--epochs") + 1])
    # the README promises a pruned model: fewer live parameters than the dense CNN, as the history says too
    assert metrics["params"] < metrics["baseline_params"] == 421_642
    assert history[-1]["params_alive"] == metrics["params"]


def test_datasets_of_an_image_folder(tmp_path):
    """`edgeprune datasets --dataset ./photos` on a folder of two classes says what it found."""
    from own_datafiles import write_image_folder

    [argv] = [c for c in edgeprune_commands() if c[1] == "datasets"]
    folder = tmp_path / argv[argv.index("--dataset") + 1]
    write_image_folder(folder, classes=("cat", "dog"), n=6)
    out = _run(argv, tmp_path, _env()).stdout
    assert "cat" in out and "dog" in out


def test_bench_on_the_device_line(tmp_path):
    """The device's bench line runs on a tiny bundle with the runtime's tools alone."""
    from bundle_fixture import make_tiny_bundle

    [argv] = [c for c in edgeprune_commands() if c[1] == "bench" and "--target" in c]
    make_tiny_bundle(tmp_path / argv[2])
    out = _run(argv + ["--runs", "20", "--rounds", "2", "--warmup", "2"], tmp_path, _env()).stdout
    assert "bundle/float" in out and "p50" in out  # the bundle's row was measured


# --- the Python block ----------------------------------------------------------------------------


def test_python_blocks_compile():
    snippets = blocks("python")
    assert snippets, "the README shows the Pruner in a training loop"
    for i, code in enumerate(snippets):
        compile(code, f"README.md python block {i}", "exec")


def test_pruner_loop_runs_and_shrinks_the_model():
    """The README's training loop, run as written on a small MLP and two batches per epoch."""
    import torch
    from torch import nn

    [code] = [s for s in blocks("python") if "edgeprune.Pruner(" in s]
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))
    x, y = torch.randn(64, 16), torch.randint(0, 4, (64,))
    loader = [(x[:32], y[:32]), (x[32:], y[32:])]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = sum(p.numel() for p in model.parameters())
    scope = {"model": model, "example_inputs": x[:4], "optimizer": optimizer, "loader": loader}
    exec(compile(code, "README.md", "exec"), scope)
    summary = scope["pruner"].summary()
    assert summary.macs_after <= 0.5 * summary.macs_before * 1.0001, "target_macs=0.5 was not met"
    assert sum(p.numel() for p in model.parameters()) < before, "the model was not compacted in place"
    assert model(x).shape == (64, 4)
