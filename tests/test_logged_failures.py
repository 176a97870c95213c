"""
The suite-wide guard in C{conftest.py}: a test fails when the gateway logs a
failure the test did not declare, since the gateway logs (rather than raises)
the errors it survives.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.logger import Logger

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).with_name("conftest.py")


def _log_a_failure(exception: BaseException) -> None:
    try:
        raise exception
    except BaseException:
        Logger(namespace="lunaroute.example").failure("example step failed")


def test_a_logged_failure_is_seen_and_an_expected_one_is_accepted(logged_failures) -> None:
    """The watcher sees C{log.failure} events; declaring the type makes them expected."""
    _log_a_failure(OSError("disk full"))
    assert [e["log_format"] for e in logged_failures.unexpected()] == ["example step failed"]
    logged_failures.expect(KeyError)
    assert len(logged_failures.unexpected()) == 1
    logged_failures.expect(OSError)
    assert logged_failures.unexpected() == []
    assert len(logged_failures.matching(OSError)) == 1


def test_a_critical_event_without_a_failure_is_seen(logged_failures) -> None:
    """A plain critical event counts too, and can be expected by its text."""
    Logger(namespace="lunaroute.example").critical("out of {what}", what="file handles")
    assert len(logged_failures.unexpected()) == 1
    logged_failures.expect(message="out of file handles")
    assert logged_failures.unexpected() == []


def test_errors_and_warnings_are_not_failures(logged_failures) -> None:
    """Only failures and critical events fail a test; warnings are normal operation."""
    log = Logger(namespace="lunaroute.example")
    log.warn("provider slow")
    log.error("provider answered 500")
    assert logged_failures.events == []


def test_an_undeclared_logged_failure_fails_the_test(pytester: pytest.Pytester) -> None:
    """Run with the real conftest: an undeclared failure is an error, a declared one is not."""
    pytester.makeconftest(CONFTEST.read_text(encoding="utf-8"))
    pytester.makepyfile(
        test_example="""
        from twisted.logger import Logger

        def fail_quietly():
            try:
                1 / 0
            except ZeroDivisionError:
                Logger(namespace="lunaroute.example").failure("swallowed")

        def test_undeclared():
            fail_quietly()

        def test_declared(logged_failures):
            logged_failures.expect(ZeroDivisionError)
            fail_quietly()

        def test_quiet():
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(["*1 unexpected failure(s) logged*", "*ZeroDivisionError*"])
    assert "test_undeclared" in "\n".join(line for line in result.stdout.lines if line.startswith("ERROR"))
