# dlrun image. CPU by default:
#   docker build --build-arg COMMIT="$(git rev-parse HEAD)" -t dlrun .
#   docker run --rm --user "$(id -u):$(id -g)" -v "$PWD:/work" dlrun train task=cnn
# GPU (TensorFlow's CUDA libraries from pip; the host needs the NVIDIA driver and container toolkit):
#   docker build --build-arg VARIANT=gpu --build-arg COMMIT="$(git rev-parse HEAD)" -t dlrun:gpu .
#   docker run --rm --gpus all --user "$(id -u):$(id -g)" -v "$PWD:/work" dlrun:gpu train strategy=mirrored
# tests/test_packaging.py builds a wheel from exactly what this file copies (less .dockerignore),
# installs it outside the checkout and trains once, and lints this file with hadolint.
ARG PYTHON=3.11
# 3.11: the Python constraints.txt is resolved for (scripts/pyproject_deps.py needs >= 3.11)
FROM python:${PYTHON}-slim

ARG VARIANT=cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 MPLBACKEND=Agg
WORKDIR /opt/dlrun

# 1. The dependencies alone, read from the project metadata and held to the tested set
#    (constraints.txt): this layer is rebuilt only when one of these three files changes, not on
#    every code change. VARIANT=gpu adds the gpu extra (tensorflow[and-cuda]).
COPY pyproject.toml constraints.txt ./
COPY scripts/pyproject_deps.py scripts/
RUN extras=""; if [ "$VARIANT" = "gpu" ]; then extras="gpu"; fi \
    && python scripts/pyproject_deps.py $extras > /tmp/requirements.txt \
    && pip install --requirement /tmp/requirements.txt --constraint constraints.txt \
    && rm /tmp/requirements.txt

# 2. dlrun itself (the package, its Hydra configs as dlrun.configs, the Optuna sweeper), no dependencies
COPY README.md ./
COPY dlrun dlrun/
COPY configs configs/
COPY hydra_plugins hydra_plugins/
RUN pip install --no-deps . && dlrun --version && dlrun list > /dev/null

# Not root. `docker run --user "$(id -u):$(id -g)"` runs as the caller instead, so mlflow.db and
# outputs/ in a bind-mounted folder belong to them; HOME (Keras, Matplotlib and dataset caches)
# is writable by any uid.
RUN useradd --uid 1000 --create-home --home-dir /home/dlrun dlrun \
    && chmod 1777 /home/dlrun && mkdir /work && chown dlrun:dlrun /work
ENV HOME=/home/dlrun
USER 1000:1000
WORKDIR /work

# The commit the image was built from (there is no git repository in the image): an OCI label,
# and the mlflow.source.git.commit tag of every run (dlrun reads DLRUN_COMMIT).
ARG COMMIT=""
LABEL org.opencontainers.image.title="dlrun" org.opencontainers.image.revision="${COMMIT}"
ENV DLRUN_COMMIT=${COMMIT}

ENTRYPOINT ["dlrun"]
CMD ["--help"]
