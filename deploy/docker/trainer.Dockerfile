# syntax=docker/dockerfile:1
# artroute trainer: `python -m trainer ...`, DDP through torchrun, plus TensorBoard.
#
#   docker build -f deploy/docker/trainer.Dockerfile -t artroute-trainer:0.1.0 .
#   docker run --gpus all --shm-size 16g artroute-trainer:0.1.0 \
#       torchrun --standalone --nproc_per_node=gpu -m trainer train ...
#
# The pinned torch wheels (requirements.lock) bundle their own CUDA 13 user-space libraries (nvidia-*-cu13),
# so the base image only has to provide the NVIDIA container runtime contract; the host driver must
# support CUDA 13 (R580 or newer). Pin by digest in your registry mirror for byte-for-byte rebuilds.
ARG CUDA_IMAGE=nvidia/cuda:13.0.1-runtime-ubuntu24.04

FROM ${CUDA_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# Ubuntu 24.04's python3 is 3.12 (pyproject: requires-python >=3.11); a venv keeps pip off the system site.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY requirements.lock pyproject.toml README.md* ./
COPY streams ./streams
COPY trainer ./trainer
# Core dependencies only: no `stack` extra (the embedded tansu/SeaweedFS/Triton-CPU stack).
RUN pip install -c requirements.lock . \
 && python -c "import torch, trainer.corpus.manifest"

RUN groupadd --system --gid 10001 artroute \
 && useradd --system --uid 10001 --gid 10001 --home-dir /work --create-home artroute
# /work is the trainer's working directory: mount the corpus, runs/ and model_repository/ under it.
WORKDIR /work
USER 10001:10001
# TensorBoard (same image: `tensorboard --logdir runs --bind_all`) and the torchrun c10d rendezvous.
EXPOSE 6006 29500
CMD ["python", "-m", "trainer", "--help"]
