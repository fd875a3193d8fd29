"""MkDocs hook: a public object on the API reference page without a docstring is a warning, so
`mkdocs build --strict` fails on it. tests/test_docs.py runs the same check without MkDocs.

The objects are the `::: path` lines of docs/reference.md; for a class, each public method and
property it defines is checked too (dataclass fields are described by the class's docstring).
griffe reads the source statically, so the check needs neither torch nor any optional extra.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "docs" / "reference.md"
DIRECTIVE = re.compile(r"^::: *([\w.]+)", re.M)

log = logging.getLogger("mkdocs.hooks.docstrings")  # under "mkdocs": strict mode counts its warnings


def documented_paths(reference: Path = REFERENCE) -> list[str]:
    """The dotted paths the reference page renders, in page order."""
    return DIRECTIVE.findall(reference.read_text())


def _public(name: str) -> bool:
    return not name.startswith("_")


def missing_docstrings(paths: list[str], search_paths: list[Path] | None = None) -> list[str]:
    """Each documented object (and public method or property of a documented class) that has no
    docstring, as a dotted path; an object that cannot be found is reported too."""
    import griffe

    roots: dict[str, object] = {}
    missing: list[str] = []
    for path in paths:
        package = path.split(".")[0]
        if package not in roots:
            roots[package] = griffe.load(package, search_paths=[str(p) for p in (search_paths or [ROOT])])
        try:
            obj = roots[package][path[len(package) + 1 :]] if path != package else roots[package]
        except (KeyError, griffe.AliasResolutionError) as e:
            missing.append(f"{path} (not found: {e})")
            continue
        if not (obj.docstring and obj.docstring.value.strip()):
            missing.append(path)
        if obj.is_class:
            for name, member in obj.members.items():
                if not _public(name) or member.is_alias:
                    continue
                if member.is_function or member.is_class or "property" in getattr(member, "labels", ()):
                    if not (member.docstring and member.docstring.value.strip()):
                        missing.append(f"{path}.{name}")
    return missing


def on_pre_build(config, **kwargs) -> None:
    """Warn (an error under --strict) for every documented public object without a docstring."""
    for path in missing_docstrings(documented_paths()):
        log.warning("docs/reference.md: %s has no docstring", path)
