"""The package root: public names load on first use, and each is what the docs say."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest


def _run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_importing_the_package_does_not_import_flytekit() -> None:
    out = _run(
        """
        import sys
        import flyteagents
        import flyteagents.cli
        print(sorted(m for m in sys.modules if m.split(".")[0] in {"flytekit", "botocore", "grpc"}))
        """
    )
    assert out.strip() == "[]"


def test_every_public_name_resolves_under_the_package_name() -> None:
    out = _run(
        """
        import flyteagents
        for name in flyteagents.__all__:
            value = getattr(flyteagents, name)
            module = getattr(value, "__module__", "flyteagents")
            assert module == "flyteagents", (name, module)
            assert name in dir(flyteagents), name
        print(len(flyteagents.__all__))
        """
    )
    assert int(out) >= 30


def test_sensor_stays_the_decorator_after_the_sensor_subpackage_is_imported() -> None:
    out = _run(
        """
        import flyteagents.sensor._file
        import flyteagents
        from flyteagents import sensor
        from flyteagents.sensor import FileSensor
        assert sensor is flyteagents.sensor, flyteagents.sensor
        assert callable(sensor) and sensor.__name__ == "sensor"
        print(FileSensor.__name__)
        """
    )
    assert out.strip() == "FileSensor"


def test_an_unknown_name_is_an_attribute_error() -> None:
    import flyteagents

    with pytest.raises(AttributeError, match="NoSuchThing"):
        flyteagents.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018


def test_threads_loading_public_names_at_the_same_moment_all_get_them() -> None:
    """First uses from several threads at once (flyte runs tasks in a thread of its own, say) must not race.

    flytekit's modules import each other in a cycle: importing two of them from two threads at
    once ends in _DeadlockError or "partially initialized module" unless the loads take turns.
    """
    out = _run(
        """
        import threading
        import flyteagents

        names = [n for n in flyteagents.__all__ if n != "__version__"]
        barrier = threading.Barrier(len(names))
        errors, got = [], {}

        def first_use(name):
            barrier.wait()
            try:
                got[name] = getattr(flyteagents, name)
            except BaseException as exc:
                errors.append(f"{name}: {exc!r}")

        threads = [threading.Thread(target=first_use, args=(n,)) for n in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        from flyteagents import AsyncAgentBase, sensor
        assert got["AsyncAgentBase"] is AsyncAgentBase and got["sensor"] is sensor
        print(len(got))
        """
    )
    assert int(out) >= 30
