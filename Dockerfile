# cti-gateway: the same install steps as the README, in a slim image.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --system --create-home --home-dir /app --uid 10001 gateway
WORKDIR /app

COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY adapters ./adapters
COPY config ./config
RUN python3 -m venv /app/.venv && /app/.venv/bin/pip install --no-cache-dir . \
    && mkdir -p /app/data && chown gateway:gateway /app/data

USER gateway
# the default config listens on 127.0.0.1: in a container, listen on every interface (CMD below)
EXPOSE 8080
VOLUME ["/app/data"]
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/app/.venv/bin/python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["/app/.venv/bin/cti-gateway"]
CMD ["run", "--config", "/app/config/gateway.yaml", "--host", "0.0.0.0"]
