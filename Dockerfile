# lbd in a container. The config is mounted at /etc/lbd/lbd.yaml:
#   docker run -v $PWD/conf/lbd.yaml:/etc/lbd/lbd.yaml:ro -p 8080:8080 lbd
# The HEALTHCHECK probes the admin API's /healthz; admin.listen must be reachable inside the container
# (127.0.0.1:9900 by default).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/lbd
COPY pyproject.toml README.md ./
COPY lbd ./lbd
RUN pip install . && rm -rf /opt/lbd/build \
    && useradd --system --no-create-home --shell /usr/sbin/nologin lbd \
    && mkdir -p /etc/lbd /var/lib/lbd && chown lbd:lbd /var/lib/lbd
COPY conf/lbd.yaml /etc/lbd/lbd.yaml

USER lbd
EXPOSE 8080 9900
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9900/healthz', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["lbd"]
CMD ["run", "-c", "/etc/lbd/lbd.yaml"]
