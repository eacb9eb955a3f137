# One image for every role of the control plane: web (gunicorn, the default CMD),
# Celery worker, Celery beat and the one-shot `migrate` job. compose.yaml picks the role
# with `command:`.
#
#   docker build -t controlplane .
#
# Both stages use the same base image so the venv's interpreter symlinks stay valid.

# --- builder: resolve and install the locked runtime dependencies into /opt/venv ---------
FROM python:3.11-slim-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# Build tools only for the rare dependency without a wheel for this platform; they never
# reach the final image.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv

# Every package (transitive ones included) is pinned with hashes; pip refuses anything else.
COPY requirements/base.txt /tmp/requirements/base.txt
RUN /opt/venv/bin/pip install --require-hashes -r /tmp/requirements/base.txt


# --- runtime ------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm AS runtime

LABEL org.opencontainers.image.title="controlplane" \
      org.opencontainers.image.description="Governance control plane for AI agents" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH="/opt/venv/bin:${PATH}" \
    DJANGO_SETTINGS_MODULE=controlplane.settings \
    VAR_DIR=/app/var \
    STATIC_ROOT=/app/staticfiles

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin app

WORKDIR /app

COPY --from=builder /opt/venv /opt/venv
# Code stays owned by root, so the app user cannot modify it. .dockerignore keeps tests,
# the local venv, var/ and VCS data out.
COPY . /app

# Static files are collected (and compressed + hashed by whitenoise's manifest storage) at
# build time into STATIC_ROOT, outside VAR_DIR so a volume on /app/var never hides them.
# The SECRET_KEY here exists only for this RUN: it is not an ENV/ARG and is not in the image.
# VAR_DIR is then recreated empty and owned by the app user: the only writable app path.
RUN SECRET_KEY=collectstatic-build-only-not-a-secret DEBUG=false \
        python manage.py collectstatic --noinput \
    && rm -rf /app/var \
    && install -d -o app -g app -m 0750 /app/var

USER 10001:10001

EXPOSE 8000

# gunicorn reads WEB_CONCURRENCY (worker count) and GUNICORN_CMD_ARGS from the environment.
# /dev/shm for worker heartbeat files: /tmp on overlayfs can stall workers.
CMD ["gunicorn", "controlplane.wsgi:application", "--bind", "0.0.0.0:8000", "--worker-tmp-dir", "/dev/shm"]
