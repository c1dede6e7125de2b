# One image for every role of the project: MLflow tracking server, trainer (`mlflow run`),
# KServe storage initializer (`mlflow artifacts download`) and the V2 runtime (`python -m mlflowserver`).
# Each role picks its process with `command`/`args` (k8s/, docker-compose.yml); the default CMD serves
# a model already downloaded to /mnt/models. Why one image and what is in it: docs/environments/images.md.
#
#   docker build -t california-housing:dev .      # or `make image`, with Docker or Podman/Buildah

# The Python 3.11 base; `make image` passes a local Debian bookworm stand-in when no registry
# can be reached (containers/make-base).
ARG PYTHON_BASE=python:3.11-slim

FROM ${PYTHON_BASE} AS deps

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1

# A CA bundle for pip behind a TLS-inspecting proxy, given at build time only (`make image` passes
# the host's as the build secret ca-certificates and names it here); unset, pip uses its own.
ARG PIP_CERT

# Exactly the pinned serving lock, nothing resolved at build time (--no-deps), into a relocatable
# venv. Once the lock is checked, what no role loads goes: pip (nothing is installed at run time),
# the test suites wheels ship (pandas/tests, scipy/*/tests, ...), the files for building
# against a package (C/C++ and Cython sources and headers, type stubs), ONNX Runtime's C API
# library (its Python binding links the runtime in) and model-conversion tools, and pyarrow's
# Arrow Flight RPC client and server (`import pyarrow.flight` then fails as "No module named",
# nothing here imports it). Why each can go: docs/environments/images.md.
COPY requirements/serve.lock /tmp/serve.lock
RUN --mount=type=secret,id=ca-certificates \
    python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-deps -r /tmp/serve.lock \
    && /opt/venv/bin/pip check \
    && /opt/venv/bin/pip uninstall --yes --quiet pip \
    && find /opt/venv -depth -type d \( -name tests -o -name test \) -exec rm -rf {} + \
    && find /opt/venv -type f \( -name '*.[ch]' -o -name '*.[ch]pp' -o -name '*.cc' -o -name '*.py[xi]' -o -name '*.pxd' \) -delete \
    && site=/opt/venv/lib/python3.11/site-packages \
    && rm -r "$site"/onnxruntime/capi/libonnxruntime.so.* "$site"/onnxruntime/transformers \
        "$site"/onnxruntime/quantization "$site"/onnxruntime/tools "$site"/pyarrow/libarrow_flight.so.* \
        "$site"/pyarrow/libarrow_python_flight.so* "$site"/pyarrow/_flight.*.so "$site"/pyarrow/flight.py \
        "$site"/pyarrow/__pycache__/flight.*


FROM ${PYTHON_BASE} AS runtime

# No secret is baked in: credentials reach the containers at run time from Secrets / env files.
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HOME=/home/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    OMP_NUM_THREADS=1 \
    DVC_NO_ANALYTICS=1 \
    GIT_PYTHON_REFRESH=quiet \
    MPLCONFIGDIR=/tmp/matplotlib

# uid/gid 1000, the numeric user every manifest pins (runAsUser: 1000). The directories that
# volumes mount over are created here owned by it, so fresh Docker named volumes inherit that owner.
RUN groupadd --gid 1000 app \
    && useradd --uid 1000 --gid 1000 --no-log-init --create-home --home-dir /home/app --shell /usr/sbin/nologin app \
    && mkdir -p /app /mnt/models /mlflow/artifacts /captures \
    && chown 1000:1000 /mnt/models /mlflow/artifacts /captures

COPY --from=deps /opt/venv /opt/venv

# The system libraries the wheels load: LightGBM's OpenMP runtime (libgomp.so.1), absent from
# python:3.11-slim. Right after the venv so a variant without it (the image test's seeded
# mistake, RUNTIME_PACKAGES="") reuses every layer above.
# Unpinned (DL3008): the base release's current package; Debian drops superseded versions from
# its archive, so a pinned version would stop building.
ARG RUNTIME_PACKAGES="libgomp1"
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install --yes --no-install-recommends ${RUNTIME_PACKAGES} \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*

# The project, root-owned and read-only for the runtime user. data/raw holds only the DVC pointer
# (the pinned md5), never the data set itself (.dockerignore). requirements.lock is what training
# pins the model's logged requirements from (model/packaging.py).
WORKDIR /app
COPY requirements.lock MLproject conda.yaml pyproject.toml ./
COPY model/ ./model/
COPY mlflowserver/ ./mlflowserver/
COPY projects/ ./projects/
COPY data/raw/housing.csv.dvc ./data/raw/housing.csv.dvc

USER 1000:1000

EXPOSE 5000 8080

CMD ["python", "-m", "mlflowserver", "--model_name=california-housing", "--model_dir=/mnt/models", "--http_port=8080", "--http_host=0.0.0.0"]

# The monitor role (`mlflow run . -e monitor`, k8s/monitor, Compose's monitor service): this image
# plus Evidently and what it needs beyond the serving lock, in a layer of its own on PYTHONPATH.
# Built only with --target monitor (california-housing-monitor:dev), so the serving image above
# never grows with it (docs/workflows/monitoring.md#where-the-monitor-runs).
FROM ${PYTHON_BASE} AS monitor-packages
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1
ARG PIP_CERT
COPY requirements/serve.lock requirements/monitor.lock /tmp/
# requirements/monitor.lock pins Evidently with every dependency, as requirements.lock does; the
# ones the serving lock already installs are left out (same pins: both locks come from it).
RUN python -c "import re; pin = lambda l: re.match(r'^([A-Za-z0-9_.-]+)==', l); served = {pin(l)[1].lower() for l in open('/tmp/serve.lock') if pin(l)}; open('/tmp/extra.lock', 'w').writelines(l for l in open('/tmp/monitor.lock') if pin(l) and pin(l)[1].lower() not in served)" \
    && python -m venv /opt/build \
    && /opt/build/bin/pip install --no-deps --target /opt/monitor -r /tmp/extra.lock \
    && find /opt/monitor -depth -type d \( -name tests -o -name test \) -exec rm -rf {} +

FROM runtime AS monitor
COPY --from=monitor-packages /opt/monitor /opt/monitor
# Evidently's usage telemetry off; its packages on the path (none is also in the venv).
ENV PYTHONPATH=/opt/monitor \
    DO_NOT_TRACK=1
CMD ["mlflow", "run", ".", "-e", "monitor", "--env-manager", "local", "--experiment-name", "california-housing-monitoring", "-P", "window=/captures"]

# The default target: the serving image, every other role.
FROM runtime
