# syntax=docker/dockerfile:1
# flowwarden node agent image: the DaemonSet in daemonset/ runs it (root with every capability dropped
# but NET_RAW and NET_ADMIN, read-only root filesystem: docs/deploy.md says why not a non-root user).
# Base images pinned by version; pin their digests too when you build (FROM python:3.11.14-...@sha256:...).
# tests/deploy/test_dockerfile.py runs hadolint on this file and runs both RUN steps below, verbatim,
# in fresh venvs (wheels built, then installed with no index).

# Build: the full image has gcc and the Python headers for agent/_hotpath.c.
FROM python:3.11.14-bookworm AS build
ARG WHEELS=/wheels
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY agent ./agent
# The wheel of flowwarden and of every dependency; fail unless the compiled per-packet path is in it
# (setup.py builds it as optional, so a missing compiler would otherwise give a slower wheel silently).
RUN pip wheel --no-cache-dir --wheel-dir "$WHEELS" . \
 && python -c 'import glob, sys, zipfile; names = zipfile.ZipFile(glob.glob(sys.argv[1] + "/flowwarden-*.whl")[0]).namelist(); sys.exit(0 if any(n.startswith("agent/_hotpath.") and n.endswith(".so") for n in names) else "no compiled agent/_hotpath in the wheel")' "$WHEELS"

# Runtime: slim, no compiler, no build tools; the wheels are mounted from the build stage for the
# install only, so they are not a layer of the image.
FROM python:3.11.14-slim-bookworm
ARG WHEELS=/wheels
LABEL org.opencontainers.image.title="flowwarden" \
      org.opencontainers.image.description="Kubernetes node agent: judges pod traffic against NetworkPolicies and TLS expectations" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/flowwarden/flowwarden" \
      org.opencontainers.image.documentation="https://github.com/flowwarden/flowwarden/blob/main/README.md"
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links "$WHEELS" flowwarden==0.1.0 \
 && python -c 'import agent._hotpath' \
 && flowwarden --help > /dev/null
# UID 0 on purpose: Kubernetes gives a non-root process no capability under allowPrivilegeEscalation:
# false (no ambient capabilities; no_new_privs ignores file capabilities), and capture needs NET_RAW.
# The DaemonSet drops every capability but NET_RAW and NET_ADMIN (docs/deploy.md).
# hadolint ignore=DL3002
USER 0
ENTRYPOINT ["flowwarden"]
CMD ["run"]
