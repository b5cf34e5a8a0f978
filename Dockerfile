# Peon's operator image; backup and restore Jobs run `peon archive` and `peon store` from it too.
#   make image                      (wheels first, then docker build)
# The build installs from the wheels in dist/wheels, so it needs no network; BASE may be any
# Debian-like image with python3 and venv (the tests use one made with debootstrap).
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS build
LABEL peon.dev/image=build
COPY dist/wheels /wheels
RUN python3 -m venv /opt/peon \
 && /opt/peon/bin/pip install --no-cache-dir --no-index --find-links=/wheels peon-operator \
 && find /opt/peon -name '__pycache__' -prune -exec rm -rf {} + \
 && rm -rf /opt/peon/lib/python3*/site-packages/pip /opt/peon/bin/pip*

FROM ${BASE}
LABEL peon.dev/image=operator
COPY --from=build /opt/peon /opt/peon
# restic, the off-site backup engine that store Jobs run (built from its pinned Go module by
# tools/testbed/build-gotool restic; tools/image puts it here).
COPY dist/restic /usr/local/bin/restic
# USER and HOME: any uid works (Kubernetes may pick one), with no passwd entry to look up.
ENV PATH=/opt/peon/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 USER=peon HOME=/tmp
# Non-root by default; the chart also sets a read-only root file system. Backup Jobs ask for
# root themselves (to read every file of a world and keep its owners).
USER 10001:10001
ENTRYPOINT ["peon-operator"]
