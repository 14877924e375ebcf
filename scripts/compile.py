"""Compile the ingest worker's hot modules to C extensions with mypyc.

    python scripts/compile.py             build unless the build matches the sources
    python scripts/compile.py --check     exit 1 unless the build matches the sources
    python scripts/compile.py --out DIR   build into DIR (default build/mypyc/lib)

The modules are ``ingest.compiled.COMPILED_MODULES``; the build goes to a directory of its
own with a stamp (the interpreter, a fingerprint of the sources), never next to the sources:
only ``derrick-ingest`` loads it (``ingest/compiled.py``), after checking the stamp, so the
edge and anything else importing ``core`` keep the interpreted code, and an edited source
is never shadowed by an old build. ``./derrick bootstrap`` runs this script; the build takes
~15 s on our 2-core machine and needs a C compiler and the interpreter's headers
(Debian: gcc, python3-dev). A cloud host gets the same build with ``--out`` and
``DERRICK_COMPILED_DIR`` (docs/cloud.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ingest.compiled import COMPILED_MODULES, STAMP, check, fingerprint  # noqa: E402


def build(out: Path) -> None:
    from mypyc.build import mypycify  # noqa: PLC0415  (dev dependencies: only when building)
    from setuptools import Distribution  # noqa: PLC0415

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="derrick-mypyc-", dir=out.parent) as tmp:
        work, lib = Path(tmp), Path(tmp) / "lib"
        sources = [f"{name.replace('.', '/')}.py" for name in COMPILED_MODULES]
        os.chdir(ROOT)  # mypyc names modules by their paths and reads our [tool.mypy]
        extensions = mypycify(sources, opt_level="3", target_dir=str(work / "c"))
        # A bare Distribution: setup() would read pyproject.toml's [project] and refuse the
        # flat layout; only build_ext is wanted.
        dist = Distribution({"name": "derrick-compiled", "ext_modules": extensions})
        cmd = dist.get_command_obj("build_ext")
        cmd.build_lib = str(lib)  # type: ignore[attr-defined]
        cmd.build_temp = str(work / "temp")  # type: ignore[attr-defined]
        dist.run_command("build_ext")
        suffix = sysconfig.get_config_var("EXT_SUFFIX")  # .cpython-311-x86_64-linux-gnu.so
        files = {
            ".".join(p.relative_to(lib).parts).removesuffix(suffix): p
            for p in lib.rglob(f"*{suffix}")
        }
        missing = [m for m in COMPILED_MODULES if m not in files]
        if missing:
            raise SystemExit(f"compile: mypyc built no extension for {missing}")
        stamp = {
            "python": sys.version,
            "fingerprint": fingerprint(ROOT),
            "mypy": _mypy_version(),
            "files": {name: p.relative_to(lib).as_posix() for name, p in sorted(files.items())},
        }
        (lib / STAMP).write_text(json.dumps(stamp, indent=1) + "\n")
        if out.exists():
            shutil.rmtree(out)
        lib.rename(out)


def _mypy_version() -> str:
    import mypy.version  # noqa: PLC0415

    return mypy.version.__version__


def stale_reason(out: Path) -> str | None:
    _, reason = check(out, ROOT)
    if reason is None and json.loads((out / STAMP).read_text()).get("mypy") != _mypy_version():
        return "built by another mypy"
    return reason


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "mypyc" / "lib")
    parser.add_argument("--check", action="store_true", help="exit 1 if the build is stale")
    args = parser.parse_args()
    out = args.out.resolve()
    reason = stale_reason(out)
    if args.check:
        if reason is not None:
            print(f"compile: {reason}: run ./derrick bootstrap (or scripts/compile.py)")
            return 1
        return 0
    if reason is None:
        print(f"compile: {len(COMPILED_MODULES)} modules already built in {out}")
        return 0
    print(f"compile: building {len(COMPILED_MODULES)} modules with mypyc ({reason})")
    started = time.monotonic()
    build(out)
    print(f"compile: built into {out} in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
