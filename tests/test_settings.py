"""Settings: typed env helpers fail loudly, secrets from files, a production mode that passes check --deploy."""

from __future__ import annotations

import secrets
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from controlplane.env import StrictEnv
from tests.procs import ROOT, manage_py

PRODUCTION = {
    "DEBUG": "false",
    "SECRET_KEY": secrets.token_urlsafe(64),
    "ALLOWED_HOSTS": "controlplane.example.com",
    "DATABASE_URL": "sqlite:////tmp/controlplane-deploy-check.sqlite3",
}


def run_manage(env: dict[str, str], *args: str, tmp_path) -> subprocess.CompletedProcess:
    base = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "VAR_DIR": str(tmp_path / "var"),
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.run(
        manage_py(*args), env={**base, **env}, capture_output=True, text=True, cwd=ROOT, timeout=120
    )


def test_production_mode_passes_check_deploy_with_no_warnings(tmp_path):
    result = run_manage(
        PRODUCTION, "check", "--deploy", "--fail-level", "WARNING", tmp_path=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_secret_key_is_required_outside_debug(tmp_path):
    env = {k: v for k, v in PRODUCTION.items() if k != "SECRET_KEY"}
    result = run_manage(env, "check", tmp_path=tmp_path)
    assert result.returncode != 0
    assert "SECRET_KEY (or SECRET_KEY_FILE) must be set" in result.stderr


def test_secret_key_can_come_from_a_file(tmp_path):
    secret_file = tmp_path / "secret"
    secret_file.write_text(PRODUCTION["SECRET_KEY"] + "\n")
    env = {k: v for k, v in PRODUCTION.items() if k != "SECRET_KEY"}
    env["SECRET_KEY_FILE"] = str(secret_file)
    result = run_manage(env, "check", "--deploy", "--fail-level", "WARNING", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("DEBUG", "maybe", "DEBUG='maybe' is not a boolean"),
        (
            "CELERY_TASK_SOFT_TIME_LIMIT_SECONDS",
            "ten",
            "CELERY_TASK_SOFT_TIME_LIMIT_SECONDS is malformed",
        ),
        ("CELERY_TASK_TIME_LIMIT_SECONDS", "-5", "must be > 0"),
        ("CELERY_BROKER_URL", "filesystem://", "filesystem:// is refused"),
        ("DATABASE_URL", "mysql://root@localhost/x", "only sqlite:// and postgres://"),
        ("LOG_LEVEL", "loud", "LOG_LEVEL='loud' must be one of"),
    ],
)
def test_malformed_values_stop_start_up_naming_the_variable(tmp_path, name, value, message):
    result = run_manage({**PRODUCTION, name: value}, "check", tmp_path=tmp_path)
    assert result.returncode != 0
    assert message in result.stderr


def test_strict_bool_accepts_the_usual_spellings(monkeypatch):
    env = StrictEnv()
    for text, expected in [
        ("true", True),
        ("1", True),
        ("yes", True),
        ("off", False),
        ("0", False),
    ]:
        monkeypatch.setenv("CP_TEST_BOOL", text)
        assert env.bool("CP_TEST_BOOL") is expected
    monkeypatch.setenv("CP_TEST_BOOL", "sure")
    with pytest.raises(ImproperlyConfigured, match="CP_TEST_BOOL"):
        env.bool("CP_TEST_BOOL")


def test_a_missing_required_variable_is_named(monkeypatch):
    monkeypatch.delenv("CP_TEST_MISSING", raising=False)
    with pytest.raises(ImproperlyConfigured, match="CP_TEST_MISSING"):
        StrictEnv().str("CP_TEST_MISSING")


BROKER_CONFIG = """
import django
django.setup()
from controlplane.celery import app
with app.connection_for_read() as conn:
    print(conn.transport_cls, conn.transport.polling_interval, app.conf.worker_prefetch_multiplier)
"""


def broker_config(tmp_path, **env: str) -> list[str]:
    base = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "VAR_DIR": str(tmp_path / "var"),
        "PYTHONPATH": str(ROOT),
        "DEBUG": "true",
        "DJANGO_SETTINGS_MODULE": "controlplane.settings",
    }
    done = subprocess.run(
        [sys.executable, "-c", BROKER_CONFIG],
        env={**base, **env},
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_the_embedded_broker_polls_every_tenth_of_a_second_and_reserves_4(tmp_path):
    """The default broker (no CELERY_BROKER_URL): the worker's transport polls at
    CELERY_BROKER_POLLING_INTERVAL_SECONDS (0.1 s, not kombu's 1 s) and reserves 4 messages
    so a deferred late ack does not hold the next flow step for 2 s."""
    assert broker_config(tmp_path) == ["sqla", "0.1", "4"]
    tuned = broker_config(tmp_path, CELERY_BROKER_POLLING_INTERVAL_SECONDS="0.25")
    assert tuned == ["sqla", "0.25", "4"]


def test_redis_keeps_prefetch_1(tmp_path):
    [transport, _, prefetch] = broker_config(tmp_path, CELERY_BROKER_URL="redis://127.0.0.1:1/0")
    assert (transport, prefetch) == ("redis", "1")
