"""The session-wide secret scan of ``tests/conftest.py`` catches a leak, and only a leak.

Each case runs a small pytest session in a subprocess with the project's root conftest as a
plugin, exactly as the suite runs with it.
"""

from __future__ import annotations

import pytest

from tests.conftest import REPO_ROOT, find_leaks, known_secrets, register_secret

pytestmark = [pytest.mark.xdist_group("secret-scan")]

SECRET = "whsec_" + "n0t-a-real-secret-9f3a"

LEAKY = f'''
import logging

from aws_lambda_powertools import Logger

from tests.conftest import register_secret


def test_logs_a_token_with_the_standard_logger():
    token = register_secret("{SECRET}", "webhook secret")
    logging.getLogger("some.library").warning("signing with %s", token)


def test_appends_a_token_to_powertools_logs():
    token = register_secret("apr_" + "{SECRET}", "approval token")
    logger = Logger(child=True)
    logger.append_keys(approval_token=token)
    logger.info("approval requested")
    logger.remove_keys(["approval_token"])


def test_prints_nothing_secret():
    print("hello")
'''

CLEAN = f'''
import logging

from tests.conftest import register_secret


def test_logs_around_a_secret():
    register_secret("{SECRET}", "webhook secret")
    logging.getLogger("lambdagraph.functions.webhooks").warning("signed a delivery")
'''


@pytest.fixture(autouse=True)
def _importable_project(monkeypatch: pytest.MonkeyPatch) -> None:
    # The inner sessions import the root conftest as ``tests.conftest``.
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))


def _run(pytester: pytest.Pytester, source: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_inner=source)
    return pytester.runpytest_subprocess("-p", "tests.conftest", "-p", "no:cacheprovider", *args)


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one-process", "xdist"])
def test_a_logged_secret_fails_the_session_and_says_where(
    pytester: pytest.Pytester, workers: list[str]
) -> None:
    # GIVEN tests that log registered secrets, through logging and through Powertools
    # WHEN the session runs (in one process, or on xdist workers)
    result = _run(pytester, LEAKY, *workers)

    # THEN every test passed, yet the session fails, naming each secret and its test, and
    # the report never repeats a secret's value
    output = result.stdout.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED, output
    result.assert_outcomes(passed=3)
    assert "secrets in log output" in output
    assert "LEAK webhook secret" in output
    assert "test_inner.py::test_logs_a_token_with_the_standard_logger" in output
    assert "LEAK approval token" in output
    assert "test_inner.py::test_appends_a_token_to_powertools_logs" in output
    assert "test_prints_nothing_secret" not in output.split("secrets in log output")[1]
    assert SECRET not in output


def test_a_session_that_logs_no_secret_passes(pytester: pytest.Pytester) -> None:
    # GIVEN a test that registers a secret and logs without it
    # WHEN the session runs
    result = _run(pytester, CLEAN)

    # THEN it passes with no leak section
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    assert "secrets in log output" not in result.stdout.str()


def test_the_configured_api_keys_are_known_secrets() -> None:
    from tests.integration.conftest import KEY_A, KEY_B

    # GIVEN the API keys the integration tests configure WHEN the known secrets are listed
    secrets = known_secrets()

    # THEN both are among them, and a line holding one is masked in the report
    assert {KEY_A, KEY_B} <= secrets.keys()
    [(label, line)] = find_leaks(f"x-api-key: {KEY_A}\nother line", secrets)
    assert label.startswith("API key KEY_A")
    assert line == "x-api-key: <API key KEY_A (tests/integration)>"


def test_short_values_cannot_be_registered() -> None:
    # GIVEN / WHEN / THEN a value too short to scan for without false alarms is refused
    with pytest.raises(ValueError, match="at least 5 characters"):
        register_secret("k1")
