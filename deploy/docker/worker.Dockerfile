# syntax=docker/dockerfile:1
# artroute stream worker: `python -m streams worker` (default) or any other `python -m streams` command,
# e.g. `docker run IMAGE replay --bucket artworks --missing-only`, or the routing ledger: `ledger run --api`.
#
#   docker build -f deploy/docker/worker.Dockerfile -t artroute-worker:0.1.0 .
#
# CPU only and small: the model runs in Triton, so the worker gets no torch/CUDA. pyproject lists torch as a
# core dependency (the trainer needs it), so the project itself is installed with --no-deps and its runtime
# dependencies come from deploy/docker/worker-requirements.txt, resolved against requirements.lock.
# Pin base images by digest in your registry mirror (`python:3.11.13-slim-bookworm@sha256:...`) for
# byte-for-byte rebuilds; the tag below is the minimum pin.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first (a layer that changes only when the pins change).
COPY requirements.lock ./
COPY deploy/docker/worker-requirements.txt ./deploy/docker/
RUN pip install -c requirements.lock -r deploy/docker/worker-requirements.txt
# Then the streaming side only (streams/ never imports trainer/), without its declared dependencies (torch...). README.md* is optional (pyproject's readme).
COPY pyproject.toml README.md* ./
COPY streams ./streams
RUN pip install --no-deps . \
 && python -c "import streams.worker.settings, streams.contract.imaging, streams.ledger.service, streams.ledger.api" \
 && ! python -c "import torch" 2>/dev/null

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ARTROUTE_METRICS_PORT=9100
COPY --from=build /opt/venv /opt/venv
# Non-root, fixed uid/gid so Kubernetes' runAsNonRoot can verify it without a user name.
RUN groupadd --system --gid 10001 artroute \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --create-home artroute
WORKDIR /app
USER 10001:10001
# Prometheus metrics (GET /metrics) and liveness (GET /healthz), see docs/deploy.md.
EXPOSE 9100
ENTRYPOINT ["python", "-m", "streams"]
CMD ["worker"]
