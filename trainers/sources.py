"""Where the built-in text domains come from: offline sources a fresh machine can reach.

Each source lists its documents (an id plus a loader that reads the bytes lazily), says whether
it is available here, and carries a licence note that the corpus manifest records. No source
downloads anything: they read files that are on disk after ``pip install`` (the Python stdlib,
the ``botocore`` and ``torch`` wheels) or after a standard Debian install (man pages).

Built-in domains
    python  Python standard-library source (``*.py`` of the running interpreter, tests
            excluded). PSF License 2.0.
    prose   English technical prose: the Python language reference topics as plain text
            (``pydoc_data/topics.py``, the text behind ``help('TOPIC')``, one topic per document)
            and the long docstrings (>= 200 characters) of each stdlib module (one document per
            module; these also occur inside the python domain's files). PSF License 2.0 (the
            Python documentation licence). About 1.8 MB.
    json    AWS service descriptions as JSON from the ``botocore`` wheel (``service-2``,
            ``paginators-1``, ``waiters-2``, ``examples-1``; the near-identical endpoint rule sets
            are skipped). Apache License 2.0.
    cpp     C and C++ headers: the ``torch`` wheel's ``include/`` tree plus CPython's headers.
            PyTorch BSD-3-Clause, CPython PSF 2.0; bundled third-party headers keep their own
            permissive licences (see the torch wheel's NOTICE).
    man     Manual pages in roff (``/usr/share/man/man[1-8]``, gzipped). Each page is under its
            package's licence (``/usr/share/doc/<package>/copyright``; mostly GPL, BSD, MIT).
            Only where man pages are installed (slim containers often strip them).

A user domain is any glob (``**`` allowed; ``.gz`` files are decompressed): see ``glob_source``.
"""
from __future__ import annotations

import ast
import glob
import gzip
import importlib.util
import os
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

Loader = Callable[[], bytes]


@dataclass(frozen=True)
class Source:
    """A domain's documents. ``documents()`` returns [(doc_id, loader)], ids unique and stable."""

    name: str
    origin: str            # human-readable location (recorded in the manifest)
    licence: str           # licence note (recorded in the manifest)
    documents: Callable[[], list[tuple[str, Loader]]]

    def available(self) -> bool:
        try:
            return len(self.documents()) > 0
        except (OSError, ImportError):
            return False


def _read(path: str) -> Loader:
    def load() -> bytes:
        with (gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")) as f:
            return f.read()
    return load


def _files(root: str | Path, patterns: list[str]) -> list[tuple[str, Loader]]:
    root = str(root)
    paths = {p for pattern in patterns for p in glob.glob(os.path.join(root, pattern), recursive=True)}
    return [(os.path.relpath(p, root), _read(p)) for p in sorted(paths) if os.path.isfile(p)]


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _stdlib_py_paths() -> list[tuple[str, str]]:
    stdlib = sysconfig.get_paths()["stdlib"]
    skip = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}
    out = []
    for path in glob.glob(os.path.join(stdlib, "**", "*.py"), recursive=True):
        rel = os.path.relpath(path, stdlib)
        if not skip & set(Path(rel).parts[:-1]) and os.path.isfile(path):
            out.append((rel, path))
    return sorted(out)


def _python_docs() -> list[tuple[str, Loader]]:
    return [(rel, _read(path)) for rel, path in _stdlib_py_paths()]


def _docstrings(path: str, min_chars: int = 200) -> Loader:
    def load() -> bytes:
        try:
            tree = ast.parse(Path(path).read_bytes())
        except (SyntaxError, ValueError):
            return b""
        nodes = (n for n in ast.walk(tree)
                 if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)))
        docs = (ast.get_docstring(n) for n in nodes)
        return "\n\n".join(d for d in docs if d and len(d) >= min_chars).encode("utf-8")
    return load


def _prose_docs() -> list[tuple[str, Loader]]:
    from pydoc_data.topics import topics  # a dict: topic name -> plain-text reference section

    docs = [("topics/" + name, (lambda text=text: text.encode("utf-8")))
            for name, text in sorted(topics.items())]
    # Long docstrings of the stdlib (same files as the python domain), one document per module.
    return docs + [("docstrings/" + rel, _docstrings(path))
                   for rel, path in _stdlib_py_paths()]


def _json_docs() -> list[tuple[str, Loader]]:
    root = _package_dir("botocore")
    if root is None:
        return []
    kinds = ["service-2", "paginators-1", "waiters-2", "examples-1"]
    patterns = [f"data/**/{k}.json{ext}" for k in kinds for ext in ("", ".gz")]
    return _files(root, patterns)


def _cpp_docs() -> list[tuple[str, Loader]]:
    docs = []
    torch_dir = _package_dir("torch")
    if torch_dir is not None:
        docs += [("torch/" + i, f) for i, f in _files(torch_dir / "include", ["**/*.h", "**/*.hpp", "**/*.cuh"])]
    py_inc = sysconfig.get_paths().get("include")
    if py_inc and os.path.isdir(py_inc):
        docs += [("cpython/" + i, f) for i, f in _files(py_inc, ["**/*.h"])]
    return docs


def _man_docs() -> list[tuple[str, Loader]]:
    return _files("/usr/share/man", [f"man{s}/*" for s in range(1, 9)])


BUILTIN: dict[str, Source] = {
    "python": Source("python", "Python stdlib *.py (sysconfig stdlib path, tests excluded)",
                     "PSF-2.0 (Python Software Foundation License Version 2)", _python_docs),
    "prose": Source("prose", "pydoc_data/topics.py (Python reference text behind help())",
                    "PSF-2.0 (Python documentation licence)", _prose_docs),
    "json": Source("json", "botocore/data service, paginator, waiter and example JSON",
                   "Apache-2.0 (botocore)", _json_docs),
    "cpp": Source("cpp", "torch/include headers and CPython include/*.h",
                  "BSD-3-Clause (PyTorch) and PSF-2.0 (CPython); bundled third-party headers "
                  "keep their own permissive licences (see torch's NOTICE)", _cpp_docs),
    "man": Source("man", "/usr/share/man/man[1-8] (gzipped roff)",
                  "per package (see /usr/share/doc/<package>/copyright); mostly GPL, BSD, MIT",
                  _man_docs),
}


def glob_source(name: str, pattern: str | list[str]) -> Source:
    """A user domain from files: one glob or a list of globs (``~`` expanded, ``**`` allowed)."""
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)

    def documents() -> list[tuple[str, Loader]]:
        paths = set()
        for p in patterns:
            paths.update(x for x in glob.glob(os.path.expanduser(p), recursive=True) if os.path.isfile(x))
        return [(os.path.abspath(x), _read(x)) for x in sorted(paths)]

    return Source(name, "user files: " + ", ".join(patterns), "user-supplied (not checked)", documents)


def resolve_source(name: str, spec: str | list[str] | None = None) -> Source:
    """The source for a domain: the user's glob(s) if given, else the built-in of that name."""
    if spec is not None:
        return glob_source(name, spec)
    if name not in BUILTIN:
        raise ValueError(f"unknown domain {name!r}: built-in domains are {sorted(BUILTIN)}; "
                         f"give your own files with sources={{{name!r}: 'path/**/*.txt'}}")
    return BUILTIN[name]
