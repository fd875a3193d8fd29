"""The API reference's docstring rule (docs/hooks.py), run without MkDocs: every object the
reference page documents, and each public method or property of a documented class, has a
docstring. `mkdocs build --strict` fails on the same check through the hook; here it also runs
under `make test`, and on a small package written to fail, to show that it can."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytest.importorskip("griffe", reason="the docs tools come with the dev extra")


def _hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", REPO / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reference_page_documents_the_public_api():
    paths = _hooks().documented_paths()
    for name in (
        "edgeprune",
        "edgeprune.prune.pruner.Pruner",
        "edgeprune.hf.EdgepruneCallback",
        "edgeprune.prune.layers.LayerRule",
        "edgeprune.errors.BudgetWarning",
        "edgeprune.errors.GuardWarning",
    ):
        assert name in paths, f"docs/reference.md does not document {name}"


def test_every_documented_object_has_a_docstring():
    hooks = _hooks()
    assert hooks.missing_docstrings(hooks.documented_paths()) == []


def test_check_finds_what_is_missing(tmp_path):
    pkg = tmp_path / "fakepkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text('"""A package."""\n')
    (pkg / "mod.py").write_text(
        '"""A module."""\n\n\n'
        "class Done:\n"
        '    """Documented."""\n\n'
        "    def method(self):\n"
        "        return 1\n\n"
        "    @property\n"
        "    def size(self):\n"
        "        return 2\n\n"
        "    def _private(self):\n"
        "        return 3\n\n\n"
        "def bare():\n"
        "    return 4\n"
    )
    missing = _hooks().missing_docstrings(["fakepkg.mod.Done", "fakepkg.mod.bare", "fakepkg.mod.gone"], [tmp_path])
    assert missing[:3] == ["fakepkg.mod.Done.method", "fakepkg.mod.Done.size", "fakepkg.mod.bare"]
    assert len(missing) == 4 and missing[3].startswith("fakepkg.mod.gone (not found")
