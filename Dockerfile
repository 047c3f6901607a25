# syntax=docker/dockerfile:1
# rotator: the image the CronJob (cronjob.yaml) runs. Build from the repository root:
#   docker build -t ghcr.io/align/rotator:0.1.0 .
#
# The base is pinned by exact version. Pin it by digest too when you build for the cluster:
#   docker buildx imagetools inspect python:3.11.14-slim-bookworm   (take the index digest)
#   docker build --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:<digest> .
# and put the pushed image's own digest into cronjob.yaml (image: ...@sha256:...).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# --- builder: build the wheel, install it and its pinned dependencies into /opt/venv -----------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Only what the wheel needs (.dockerignore keeps the context to these).
COPY pyproject.toml README.md LICENSE constraints.txt ./
COPY rotator ./rotator
# The wheel is built without its dependencies, then installed with every dependency pinned by
# constraints.txt: the image runs exactly the versions the test suite ran.
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir -c constraints.txt /wheels/rotator-*.whl

# --- runtime --------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="rotator" \
      org.opencontainers.image.description="Rotates the PostHog project API key through sealed-secrets, git, ArgoCD and a gateway rollout, and proves the new key works." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/align/rotator" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim-bookworm"
# git and ssh push the sealed files to the ops repo; procps gives GitPython `pgrep`, which it
# uses to kill a timed-out git's whole process tree (ssh included); tini is PID 1 (below).
# Versions are pinned to
# bookworm's upstream release with any Debian security revision (`+deb12u*`): an exact
# revision would stop building as soon as Debian publishes a security fix.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      git=1:2.39.5-0+deb12u* \
      openssh-client=1:9.2p1-2+deb12u* \
      procps=2:4.0.2-* \
      tini=0.19.0-1* \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 rotator \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
      --shell /usr/sbin/nologin rotator
COPY --from=builder /opt/venv /opt/venv
# The root filesystem is read-only in the cluster: the only writable place is /tmp (an
# emptyDir), so HOME (ssh, git) and TMPDIR (the ops checkout) point there, and Python never
# writes bytecode (pip compiled it at install time). `rotator --version` prints ROTATOR_REVISION.
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    TMPDIR=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ROTATOR_CONFIG=/etc/rotator/config.yaml \
    ROTATOR_REVISION=${REVISION}
USER 10001:10001
# A Job, not a service: there is nothing to probe while it runs, and it exits when done.
HEALTHCHECK NONE
# tini is PID 1: it passes SIGTERM on to rotator (which releases its Lease and reports) and
# reaps the git and ssh processes a timed-out push leaves behind. Without it rotator itself
# would be PID 1, whose signals the kernel drops unless a handler is installed, and nothing
# would reap orphaned children.
ENTRYPOINT ["/usr/bin/tini", "--", "rotator"]
CMD ["run"]
