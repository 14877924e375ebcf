"""The worker's hot modules compiled with mypyc: found, checked against the sources, loaded.

``scripts/compile.py`` (run by ``./derrick bootstrap``) compiles the modules of
``COMPILED_MODULES`` to C extensions in a directory of their own (``build/mypyc/lib`` of a
checkout; ``DERRICK_COMPILED_DIR`` elsewhere) with a ``stamp.json`` naming the interpreter
and a fingerprint of every source of ``core`` and ``ingest`` (what mypyc type-checked them
against). :func:`activate` is called by ``derrick-ingest`` before it imports any of them: it
installs an import finder for exactly those module names, so this process loads the
compiled code, and nothing else does. The edge, which shares ``core``, never calls it and
runs the same interpreted code on the appliances as in the tests.

A build that does not match (another Python, an edited source, a module missing) is never
loaded, whatever the reason: the worker runs interpreted and says why. A stale extension can
never shadow an edited source.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

#: Where the time of a message goes, interpreted (docs/benchmarks.md): decode, the pipeline,
#: row building, node state, the KPI engine, the quotas.
COMPILED_MODULES = (
    "ingest.pipeline",
    "ingest.nodes",
    "ingest.writer",
    "ingest.kpi",
    "core.sparkplug.codec",
    "core.sparkplug.values",
    "core.ratelimit",
)
#: The packages whose sources the build depends on.
SOURCE_PACKAGES = ("core", "ingest")
STAMP = "stamp.json"
ENV = "DERRICK_COMPILED_DIR"
_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, slots=True)
class Compiled:
    """What :func:`activate` did: the modules that load compiled, or why none do."""

    modules: tuple[str, ...]
    directory: Path
    reason: str | None = None  # None: loaded

    def describe(self) -> str:
        if self.reason is None:
            return f"compiled modules from {self.directory}: {', '.join(self.modules)}"
        return f"running interpreted: {self.reason}"


def fingerprint(root: Path = _ROOT) -> str:
    """A digest of the interpreter and every source of the packages the build depends on."""
    digest = hashlib.sha256(sys.version.encode() + b"\0")
    for package in SOURCE_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def default_directory() -> Path:
    return Path(os.environ.get(ENV) or _ROOT / "build" / "mypyc" / "lib")


class _Finder(importlib.abc.MetaPathFinder):
    """Finds exactly the compiled modules (and mypyc's shared library) in one directory."""

    def __init__(self, files: dict[str, Path]) -> None:
        self._files = files

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        file = self._files.get(fullname)
        if file is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(file))
        return importlib.util.spec_from_file_location(fullname, file, loader=loader)


def check(directory: Path, root: Path = _ROOT) -> tuple[dict[str, Path], str | None]:
    """The files of a build in ``directory`` by module name, or why it cannot be used."""
    stamp_path = directory / STAMP
    if not stamp_path.exists():
        return {}, f"no build in {directory}"
    try:
        stamp = json.loads(stamp_path.read_text())
        files = {name: directory / rel for name, rel in stamp["files"].items()}
        built_for, sources = stamp["python"], stamp["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return {}, f"unreadable {stamp_path}: {exc}"
    if built_for != sys.version:
        return {}, f"built for Python {built_for.split()[0]}, this is {sys.version.split()[0]}"
    if sources != fingerprint(root):
        return {}, f"the sources changed since the build in {directory}"
    missing = [m for m in COMPILED_MODULES if m not in files]
    absent = [str(f) for f in files.values() if not f.is_file()]
    if missing or absent:
        return {}, f"incomplete build in {directory}: {missing or absent}"
    return files, None


def activate(directory: Path | None = None) -> Compiled:
    """Load the compiled modules in this process from now on, if the build matches."""
    directory = directory or default_directory()
    files, reason = check(directory)
    early = [m for m in COMPILED_MODULES if m in sys.modules]
    if reason is None and early:
        reason = f"already imported interpreted: {', '.join(early)}"
    if reason is not None:
        return Compiled((), directory, reason)
    finder = _Finder(files)
    sys.meta_path.insert(0, finder)
    for name in COMPILED_MODULES:
        try:
            module = importlib.import_module(name)
            if not is_compiled(module):
                raise ImportError(f"loaded from {module.__file__}, not from {directory}")
        except ImportError as exc:
            # A build that matches its stamp but does not load (a damaged file, a missing
            # library): forget every module it brought in, then run interpreted.
            sys.meta_path.remove(finder)
            for loaded in files:
                sys.modules.pop(loaded, None)
            return Compiled((), directory, f"{name} did not load from {directory}: {exc}")
    return Compiled(COMPILED_MODULES, directory)


def is_compiled(module: ModuleType) -> bool:
    return isinstance(getattr(module, "__loader__", None), importlib.machinery.ExtensionFileLoader)
