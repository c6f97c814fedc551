# lbd in a container. Build, then run with the image's own config (conf/container.yaml):
#   docker build -t lbd .
#   docker run -d --name lbd -p 8080:8080 -v lbd-state:/var/lib/lbd --stop-timeout 15 lbd
#   curl http://127.0.0.1:8080/ ; curl http://127.0.0.1:8080/readyz
# With your own config: add -v $PWD/my-lbd.yaml:/etc/lbd/lbd.yaml:ro (bind 0.0.0.0 inside the container,
# and keep node.shutdown_timeout_seconds below --stop-timeout, or docker stop SIGKILLs the drain).
# The HEALTHCHECK probes the admin API's /healthz on 127.0.0.1:9900 inside the container.
# Build stage: compile lbd's data path (Cython, lbd/build.py's COMPILED) into a wheel. LBD_REQUIRE_EXTENSIONS
# makes a module that does not compile fail the build instead of shipping an interpreted data path.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 LBD_REQUIRE_EXTENSIONS=1
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml setup.py README.md LICENSE /src/
COPY lbd /src/lbd
RUN pip wheel --no-deps --wheel-dir /wheels /src

# Runtime stage: no compiler, no source; the wheel's compiled modules run from site-packages.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# Dependencies pinned by requirements.lock (a pip freeze; its header says how to regenerate it), then
# lbd's wheel without resolving anything again. lbd runs from site-packages, and its workers
# (python -m lbd.worker) cannot pick up a stray copy of the source. The build must be compiled: the last
# command fails the image otherwise.
COPY requirements.lock /tmp/requirements.lock
RUN pip install --requirement /tmp/requirements.lock
COPY --from=build /wheels /tmp/wheels
RUN pip install --no-deps /tmp/wheels/*.whl && rm -rf /tmp/wheels /tmp/requirements.lock \
    && python -c "import sys; from lbd import build; sys.exit(build.data_path() != 'compiled')" \
    && useradd --system --no-create-home --shell /usr/sbin/nologin lbd \
    && mkdir -p /etc/lbd /var/lib/lbd && chown lbd:lbd /var/lib/lbd
COPY conf/container.yaml /etc/lbd/lbd.yaml

# Registrations made through the admin API are kept in /var/lib/lbd (state_dir); mount a volume there
# to keep them across container restarts.
VOLUME /var/lib/lbd
WORKDIR /var/lib/lbd
ENV STATE_DIRECTORY=/var/lib/lbd

USER lbd
# Only the listener: the admin API listens on the container's loopback.
EXPOSE 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9900/healthz', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["lbd"]
CMD ["run", "-c", "/etc/lbd/lbd.yaml"]
