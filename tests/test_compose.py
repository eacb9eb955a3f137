"""Static checks of the container deployment: compose.yaml, Dockerfile and .dockerignore.

There is no Docker engine in CI, so these parse the files and pin the behaviour the
deployment relies on: separate web/worker/beat containers from one image, start-up
ordering on healthy databases and a finished migration, required secrets, a non-root
image with static files collected at build time.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

APP_SERVICES = ("migrate", "web", "worker", "beat")
LONG_RUNNING_APP_SERVICES = ("web", "worker", "beat")
BACKING_SERVICES = ("postgres", "redis")


# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict) -> dict:
    return compose["services"]


def command_argv(service: dict) -> list[str]:
    """The service's command as an argv list (compose accepts a list or a shell string)."""
    command = service.get("command")
    assert command, "service must set an explicit command (the image CMD is gunicorn)"
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def healthcheck_text(service: dict) -> str:
    test = service["healthcheck"]["test"]
    return test if isinstance(test, str) else " ".join(str(part) for part in test)


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def depends_on(service: dict) -> dict[str, dict]:
    deps = service.get("depends_on") or {}
    assert isinstance(deps, dict), "depends_on must use the long form with conditions"
    return deps


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with comments dropped and continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    assert not pending, "Dockerfile ends in a dangling line continuation"
    return instructions


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def dockerignore_patterns() -> set[str]:
    return {
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    }


# --- compose: topology -----------------------------------------------------------------------


def test_compose_defines_exactly_the_six_services(services: dict) -> None:
    assert set(services) == {"postgres", "redis", "migrate", "web", "worker", "beat"}


def test_app_services_share_one_image_built_from_the_dockerfile(services: dict) -> None:
    images = {services[name].get("image") for name in APP_SERVICES}
    builds = {repr(services[name].get("build")) for name in APP_SERVICES}
    assert len(images) == 1 and None not in images, images
    assert len(builds) == 1, builds
    build = services["web"]["build"]
    context = build if isinstance(build, str) else build.get("context", ".")
    assert context in (".", "./")
    if isinstance(build, dict):
        assert build.get("dockerfile", "Dockerfile") == "Dockerfile"


def test_backing_services_use_pinned_upstream_images(services: dict) -> None:
    assert re.fullmatch(r"postgres:1[6-9][\w.-]*", services["postgres"]["image"])
    assert re.fullmatch(r"redis:7[\w.-]*", services["redis"]["image"])
    for name in BACKING_SERVICES:
        assert "build" not in services[name]


# --- compose: commands -----------------------------------------------------------------------


def test_web_runs_gunicorn_on_the_wsgi_app_bound_to_all_interfaces(services: dict) -> None:
    argv = command_argv(services["web"])
    assert argv[0] == "gunicorn"
    assert "controlplane.wsgi:application" in argv
    bind = argv[argv.index("--bind") + 1] if "--bind" in argv else None
    binds = [bind] + [arg.split("=", 1)[1] for arg in argv if arg.startswith("--bind=")]
    assert "0.0.0.0:8000" in binds


def test_worker_runs_the_celery_worker(services: dict) -> None:
    assert command_argv(services["worker"])[:4] == ["celery", "-A", "controlplane", "worker"]


def test_beat_runs_celery_beat_with_its_schedule_in_var_dir(services: dict) -> None:
    argv = command_argv(services["beat"])
    assert argv[:4] == ["celery", "-A", "controlplane", "beat"]
    assert argv[argv.index("-s") + 1] == "/app/var/celerybeat-schedule"


def test_beat_schedule_survives_container_recreation(compose: dict, services: dict) -> None:
    mounts = [str(volume) for volume in services["beat"].get("volumes", [])]
    named = [m.split(":", 1)[0] for m in mounts if m.split(":")[1:2] == ["/app/var"]]
    assert named and named[0] in (compose.get("volumes") or {}), mounts


def test_migrate_runs_migrations_once_without_restarting(services: dict) -> None:
    argv = command_argv(services["migrate"])
    assert argv[:3] == ["python", "manage.py", "migrate"]
    assert "--noinput" in argv
    # YAML 1.1 would read an unquoted `no` as False; compose needs the string "no".
    assert services["migrate"].get("restart", "no") == "no"


def test_no_container_runs_web_and_celery_together(services: dict) -> None:
    for name, service in services.items():
        if "command" not in service:
            continue
        argv = command_argv(service)
        text = " ".join(argv)
        assert not ("gunicorn" in text and "celery" in text), name
        assert "honcho" not in text, f"{name} runs a multi-process supervisor"
        assert not ("worker" in argv and "beat" in argv), f"{name} embeds beat in a worker"
        assert "-B" not in argv and "--beat" not in argv, f"{name} embeds beat in a worker"


def test_long_running_services_restart_unless_stopped(services: dict) -> None:
    for name in (*BACKING_SERVICES, *LONG_RUNNING_APP_SERVICES):
        assert services[name].get("restart") == "unless-stopped", name


# --- compose: health and start-up ordering -----------------------------------------------------


def test_postgres_healthcheck_uses_pg_isready(services: dict) -> None:
    assert "pg_isready" in healthcheck_text(services["postgres"])


def test_redis_healthcheck_pings_redis(services: dict) -> None:
    assert "redis-cli ping" in healthcheck_text(services["redis"])


def test_web_healthcheck_probes_readyz_with_python_over_loopback(services: dict) -> None:
    test = services["web"]["healthcheck"]["test"]
    assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL")
    text = healthcheck_text(services["web"])
    assert "http://127.0.0.1:8000/readyz" in text
    assert "python" in text and "urllib" in text
    assert "curl" not in text and "wget" not in text  # neither is in the slim image


def test_app_services_wait_for_healthy_databases(services: dict) -> None:
    for name in APP_SERVICES:
        deps = depends_on(services[name])
        for backing in BACKING_SERVICES:
            assert deps.get(backing, {}).get("condition") == "service_healthy", (name, backing)


def test_long_running_app_services_wait_for_migrations_to_finish(services: dict) -> None:
    for name in LONG_RUNNING_APP_SERVICES:
        deps = depends_on(services[name])
        assert deps.get("migrate", {}).get("condition") == "service_completed_successfully", name
    assert "migrate" not in depends_on(services["migrate"])


def test_web_publishes_port_8000(services: dict) -> None:
    ports = [str(port) for port in services["web"].get("ports", [])]
    assert any(port.endswith(":8000") for port in ports), ports
    for name, service in services.items():
        if name != "web":
            assert not service.get("ports"), f"{name} should not be published"


def test_postgres_keeps_data_in_a_named_volume(compose: dict, services: dict) -> None:
    mounts = [str(volume) for volume in services["postgres"].get("volumes", [])]
    data = [m.split(":", 1)[0] for m in mounts if ":/var/lib/postgresql/data" in m]
    assert data and data[0] in (compose.get("volumes") or {}), mounts


# --- compose: configuration and secrets ---------------------------------------------------------


def test_secret_key_is_required_for_every_app_service(services: dict) -> None:
    for name in APP_SERVICES:
        value = environment(services[name]).get("SECRET_KEY", "")
        assert re.fullmatch(r"\$\{SECRET_KEY:\?[^}]+\}", value), (name, value)


def test_postgres_password_is_required_and_feeds_database_url(services: dict) -> None:
    required = r"\$\{POSTGRES_PASSWORD:\?[^}]+\}"
    password = environment(services["postgres"]).get("POSTGRES_PASSWORD", "")
    assert re.fullmatch(required, password), password
    postgres_env = environment(services["postgres"])
    for name in APP_SERVICES:
        url = environment(services[name]).get("DATABASE_URL", "")
        match = re.fullmatch(rf"postgres(?:ql)?://([^:]+):{required}@postgres:5432/(\w+)", url)
        assert match, (name, url)
        assert match.group(1) == postgres_env["POSTGRES_USER"]
        assert match.group(2) == postgres_env["POSTGRES_DB"]


def test_app_services_use_redis_broker_and_production_settings(services: dict) -> None:
    for name in APP_SERVICES:
        env = environment(services[name])
        assert env.get("CELERY_BROKER_URL") == "redis://redis:6379/0", name
        assert env.get("ALLOWED_HOSTS") == "${ALLOWED_HOSTS:-localhost}", name
        assert env.get("DEBUG", "false").lower() in ("false", "0", "no", "off"), name


def test_no_secret_has_a_literal_value_in_compose(services: dict) -> None:
    for name, service in services.items():
        for key, value in environment(service).items():
            if "SECRET" in key or "PASSWORD" in key:
                assert value.startswith("${"), f"{name}.{key} is hard-coded"


# --- Dockerfile ------------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_with_slim_bookworm_runtime() -> None:
    froms = [args for keyword, args in dockerfile_instructions() if keyword == "FROM"]
    assert len(froms) >= 2, froms
    assert froms[-1].split()[0] == "python:3.11-slim-bookworm"


def test_dockerfile_installs_locked_requirements_with_hashes_into_a_venv() -> None:
    runs = [args for keyword, args in dockerfile_instructions() if keyword == "RUN"]
    installs = [run for run in runs if "pip install" in run]
    assert installs, "no pip install step"
    assert all("--require-hashes" in run for run in installs), installs
    assert any("requirements/base.txt" in run and "/opt/venv" in run for run in installs)
    assert (ROOT / "requirements" / "base.txt").is_file()
    copies = [args for keyword, args in final_stage() if keyword == "COPY"]
    assert any(c.startswith("--from=") and "/opt/venv" in c for c in copies), copies


def test_dockerfile_collects_static_files_at_build_time() -> None:
    runs = [args for keyword, args in final_stage() if keyword == "RUN"]
    collect = [run for run in runs if "manage.py collectstatic" in run]
    assert collect, "collectstatic must run in the final stage"
    assert "--noinput" in collect[0]
    assert "SECRET_KEY=" in collect[0], "collectstatic needs a build-only SECRET_KEY inline"


def test_dockerfile_does_not_bake_a_secret_key_into_the_image() -> None:
    for keyword, args in dockerfile_instructions():
        if keyword in ("ENV", "ARG"):
            assert not re.search(r"\bSECRET_KEY\b", args), f"{keyword} {args}"


def test_dockerfile_runs_as_a_non_root_user() -> None:
    stage = final_stage()
    users = [args for keyword, args in stage if keyword == "USER"]
    assert users, "final stage never drops root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), users[-1]
    # Nothing after the last USER switches back to root.
    last_user = max(i for i, (keyword, _) in enumerate(stage) if keyword == "USER")
    assert all(keyword != "USER" for keyword, _ in stage[last_user + 1 :])


def test_dockerfile_sets_python_runtime_env_and_writable_var_dir() -> None:
    env = " ".join(args for keyword, args in final_stage() if keyword == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "PYTHONUNBUFFERED=1" in env
    assert "VAR_DIR=/app/var" in env
    runs = " ".join(args for keyword, args in final_stage() if keyword == "RUN")
    assert re.search(r"(chown|install -d -o)\s+\S*app\S*\s.*?/app/var", runs), runs


def test_dockerfile_exposes_8000_and_defaults_to_gunicorn() -> None:
    stage = final_stage()
    assert ("EXPOSE", "8000") in stage
    cmds = [args for keyword, args in stage if keyword == "CMD"]
    assert cmds, "no default CMD"
    assert cmds[-1].startswith('["gunicorn", "controlplane.wsgi:application"')


# --- .dockerignore ---------------------------------------------------------------------------


def test_dockerignore_keeps_local_state_tests_and_secrets_out_of_the_image() -> None:
    patterns = dockerignore_patterns()
    for required in (".git", ".venv", "var", "node_modules", "tests", ".env"):
        assert required in patterns, required
    assert patterns & {"__pycache__", "**/__pycache__"}, "__pycache__ not ignored"


def test_dockerignore_keeps_what_the_build_needs() -> None:
    patterns = dockerignore_patterns()
    for needed in ("requirements", "requirements/base.txt", "manage.py", "static", "templates"):
        assert needed not in patterns, needed
    for package in ("controlplane", "governance", "agents", "flows", "approvals"):
        assert package not in patterns, package
