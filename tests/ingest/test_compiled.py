"""The worker's hot modules compiled with mypyc (``ingest/compiled.py``, ``scripts/compile.py``).

The in-process unit tests import the interpreted modules (nothing activates the build
there); the ingest workers the integration tests start load the compiled ones. Here: the
unit tests of those modules pass against the compiled build too, a build that does not match
is never loaded, and only the worker loads it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.derrick import python_env
from ingest.compiled import COMPILED_MODULES, STAMP, check, default_directory

REPO = Path(__file__).resolve().parents[2]

# Every in-process test file exercising a compiled module (codec, values, pipeline, nodes,
# kpi, the token bucket through the API's limiter).
UNIT_TESTS = (
    "tests/core/test_sparkplug_codec.py",
    "tests/core/test_sparkplug_codec_errors.py",
    "tests/core/test_sparkplug_compression.py",
    "tests/ingest/test_ingest_kpi.py",
    "tests/ingest/test_ingest_nodes.py",
    "tests/ingest/test_ingest_pipeline.py",
    "tests/ingest/test_ingest_ts_nanos.py",
    "tests/ingest/test_ingest_readiness.py",
    "tests/api/test_api_ratelimit.py",
)

_PROBE = """
import json, sys
from pathlib import Path
from ingest import compiled
{before}
state = compiled.activate(Path(sys.argv[1]))
import ingest.pipeline, core.sparkplug.codec
print(json.dumps({{
    "reason": state.reason,
    "modules": list(state.modules),
    "loaded": {{m: compiled.is_compiled(sys.modules[m]) for m in compiled.COMPILED_MODULES
               if m in sys.modules}},
}}))
"""


def _python(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -c code args`` in a fresh interpreter (activation is once per process)."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=python_env(), cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def _probe(directory: Path, before: str = "") -> dict:
    out = _python(_PROBE.format(before=before), str(directory))
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def test_the_checkout_has_a_current_build() -> None:
    files, reason = check(default_directory())
    assert reason is None, reason  # tests/conftest.py builds it before the session
    assert set(COMPILED_MODULES) <= set(files)


def test_activation_loads_every_hot_module_compiled() -> None:
    result = _probe(default_directory())
    assert result["reason"] is None
    assert result["modules"] == list(COMPILED_MODULES)
    assert result["loaded"] == dict.fromkeys(COMPILED_MODULES, True)


def _copy_build(tmp_path: Path) -> Path:
    copy = tmp_path / "lib"
    shutil.copytree(default_directory(), copy)
    return copy


def _edit_stamp(directory: Path, **changes: object) -> None:
    stamp = json.loads((directory / STAMP).read_text())
    stamp.update(changes)
    (directory / STAMP).write_text(json.dumps(stamp))


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("sources", "the sources changed since the build"),
        ("python", "built for Python 3.0.1, this is"),
        ("file", "incomplete build"),
        ("stamp", "no build in"),
        ("garbage", "unreadable"),
        ("damaged", "ingest.pipeline did not load from"),
    ],
)
def test_a_build_that_does_not_match_is_never_loaded(
    tmp_path: Path, damage: str, expected: str
) -> None:
    build = _copy_build(tmp_path)
    if damage == "sources":
        _edit_stamp(build, fingerprint="0" * 64)
    elif damage == "python":
        _edit_stamp(build, python="3.0.1 (elsewhere)")
    elif damage == "file":
        next(build.rglob("pipeline.*.so")).unlink()
    elif damage == "damaged":
        # mypyc's shared library, which every compiled module's code lives in
        next(build.glob("*__mypyc.*.so")).write_bytes(b"\x7fELF not a shared object")
    elif damage == "stamp":
        (build / STAMP).unlink()
    else:
        (build / STAMP).write_text("{not json")
    result = _probe(build)
    assert expected in result["reason"]
    assert result["modules"] == []
    assert not any(result["loaded"].values()), result["loaded"]  # interpreted, all of them


def test_modules_imported_before_activation_stay_interpreted() -> None:
    result = _probe(default_directory(), before="import ingest.nodes")
    assert result["reason"].startswith("already imported interpreted: ")
    assert "ingest.nodes" in result["reason"]
    assert not any(result["loaded"].values())


def test_only_the_worker_loads_the_build() -> None:
    """The edge shares ``core``: it must run on the appliances what it runs in the tests."""
    code = (
        "import sys, edge.__main__, edge.agent, core.sparkplug.codec, core.ratelimit, api.app\n"
        "from ingest.compiled import COMPILED_MODULES, is_compiled\n"
        "print([m for m in COMPILED_MODULES if m in sys.modules and is_compiled(sys.modules[m])])"
    )
    out = _python(code)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_the_unit_tests_pass_against_the_compiled_modules(tmp_path: Path) -> None:
    """mypyc checks annotations at run time and compiles some constructs differently: the
    same unit tests, with the build activated before anything imports the modules."""
    code = (
        "import sys\n"
        "from ingest import compiled\n"
        "state = compiled.activate()\n"
        "assert state.reason is None, state.reason\n"
        "import pytest\n"
        "sys.exit(pytest.main(sys.argv[1:]))"
    )
    out = _python(code, "-q", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "t"),
                  *UNIT_TESTS, timeout=240)  # fmt: skip
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert " passed" in out.stdout and "skipped" not in out.stdout, out.stdout[-500:]
