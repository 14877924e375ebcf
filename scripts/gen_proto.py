"""Regenerate the Sparkplug protobuf modules, or check that the committed ones are current.

Usage, from anywhere (paths are resolved against the repository root)::

    python scripts/gen_proto.py          # rewrite core/sparkplug/*_pb2.py and *_pb2.pyi
    python scripts/gen_proto.py --check  # exit 1 if the committed files differ

The code generator is ``grpc_tools.protoc`` (grpcio-tools, pinned in pyproject.toml together
with protobuf: the generated code checks the runtime version) with the mypy-protobuf plugin for
the ``.pyi`` stubs. Output depends only on those two pinned tools and the ``.proto`` files, so
regenerating is reproducible and ``--check`` can run in CI.
"""

from __future__ import annotations

import argparse
import difflib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = Path("core/sparkplug")
PROTOS = (PROTO_DIR / "sparkplug_b.proto", PROTO_DIR / "derrick_ext.proto")
SUFFIXES = ("_pb2.py", "_pb2.pyi")
# Generated code is not ours to lint or format: this header keeps ruff off every generated file
# (pyproject's exclude list names only some of them).
LINT_HEADER = "# ruff: noqa\n# fmt: off\n"


def generated_paths() -> list[Path]:
    """Repository-relative paths of every generated file."""
    return [proto.with_name(proto.stem + suffix) for proto in PROTOS for suffix in SUFFIXES]


def _mypy_plugin() -> str:
    here = Path(sys.executable).parent
    plugin = shutil.which("protoc-gen-mypy", path=str(here)) or shutil.which("protoc-gen-mypy")
    if plugin is None:
        raise SystemExit("protoc-gen-mypy not found: install the dev dependencies (mypy-protobuf)")
    return plugin


def generate(out_dir: Path) -> None:
    """Run protoc on PROTOS, writing the modules under ``out_dir`` (mirroring the repo)."""
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        "--proto_path=.",
        f"--python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--plugin=protoc-gen-mypy={_mypy_plugin()}",
        *(str(p) for p in PROTOS),
    ]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"protoc failed ({result.returncode}):\n{result.stderr}")
    for rel in generated_paths():
        path = out_dir / rel
        path.write_text(LINT_HEADER + path.read_text(encoding="utf-8"), encoding="utf-8")


def check() -> int:
    """Regenerate into a temporary directory and compare; return the process exit status."""
    with tempfile.TemporaryDirectory(prefix="gen_proto_") as tmp:
        generate(Path(tmp))
        stale = []
        for rel in generated_paths():
            fresh = (Path(tmp) / rel).read_text(encoding="utf-8")
            committed_path = REPO_ROOT / rel
            committed = ""
            if committed_path.exists():
                committed = committed_path.read_text(encoding="utf-8")
            if fresh != committed:
                stale.append(rel)
                diff = difflib.unified_diff(
                    committed.splitlines(keepends=True),
                    fresh.splitlines(keepends=True),
                    f"{rel} (committed)",
                    f"{rel} (regenerated)",
                    n=1,
                )
                sys.stdout.writelines(list(diff)[:40])
    if stale:
        print(f"stale generated files: {', '.join(map(str, stale))}")
        print("run: python scripts/gen_proto.py")
        return 1
    print("generated protobuf modules are up to date")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="fail if the committed files are not current"
    )
    args = parser.parse_args(argv)
    if args.check:
        return check()
    generate(REPO_ROOT)
    for rel in generated_paths():
        print(f"wrote {rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
