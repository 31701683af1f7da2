# Slim, non-root image for every ftq process: api, worker, beat, migrate (and the sandbox).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FTQ_DATA_DIR=/data

WORKDIR /app
RUN useradd --create-home --uid 10001 ftq && mkdir -p /data && chown ftq:ftq /data

COPY pyproject.toml README.md ./
COPY service ./service
COPY api ./api
COPY workers ./workers
COPY sandbox ./sandbox
COPY migrations ./migrations
COPY cli ./cli
RUN pip install .

USER ftq
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)" || exit 1
CMD ["ftq", "api", "--host", "0.0.0.0", "--port", "8000"]
