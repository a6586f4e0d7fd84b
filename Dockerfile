# dlrun image. CPU by default:
#   docker build -t dlrun .
#   docker run --rm -v "$PWD:/work" -w /work dlrun train task=cnn
# GPU (CUDA libraries from pip; needs the NVIDIA container toolkit on the host):
#   docker build --build-arg VARIANT=gpu -t dlrun:gpu .
#   docker run --rm --gpus all -v "$PWD:/work" -w /work dlrun:gpu train strategy=mirrored
ARG PYTHON=3.11
FROM python:${PYTHON}-slim

ARG VARIANT=cpu
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 MPLBACKEND=Agg
RUN apt-get update && apt-get install -y --no-install-recommends git && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/dlrun
COPY pyproject.toml README.md ./
COPY dlrun ./dlrun
COPY configs ./configs
# Same pyproject as every other install; the gpu extra adds tensorflow[and-cuda].
RUN if [ "$VARIANT" = "gpu" ]; then pip install ".[gpu]"; else pip install .; fi \
    && dlrun --version && dlrun list > /dev/null

WORKDIR /work
ENTRYPOINT ["dlrun"]
CMD ["--help"]
