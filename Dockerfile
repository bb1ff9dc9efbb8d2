# The taxi-duration service, and the image the Kubeflow pipeline's steps run in (taxi_duration.kubeflow).
#
#   docker build -t taxi-duration .
#   docker run --rm -p 9696:9696 -e MLFLOW_TRACKING_URI=http://mlflow.example.com taxi-duration
#
# It holds the library, its step notebooks and the service; no data and no model. The model comes from
# MLFLOW_TRACKING_URI (models:/taxi-duration@champion; MODEL_URI overrides), live profiles go to MONITORING_DIR
# (mount a volume there), ride months come from the TLC or a volume at TAXI_DATA_DIR.
# Another base image: --build-arg BASE=... (a Debian-like image with python3 3.10-3.12 and python3-venv).
# Without access to PyPI: `pip download -d WHEELS '.[kubeflow]' setuptools` where there is, then
#   --build-context wheels=WHEELS --build-arg PIP_OPTIONS="--no-index --find-links /wheels"
ARG BASE=python:3.11-slim

FROM scratch AS wheels

FROM ${BASE} AS build
ARG PIP_OPTIONS=
COPY setup.py settings.ini pyproject.toml README.md /src/
COPY taxi_duration /src/taxi_duration
RUN --mount=type=bind,from=wheels,target=/wheels \
    python3 -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir $PIP_OPTIONS "/src[kubeflow]"

FROM ${BASE}
# a user that is not root, numeric so Kubernetes can check runAsNonRoot; no useradd: minimal bases lack it
RUN echo 'app:x:10001:10001:taxi-duration:/home/app:/usr/sbin/nologin' >> /etc/passwd && \
    echo 'app:x:10001:' >> /etc/group && mkdir -p /home/app && chown 10001:10001 /home/app
COPY --from=build /opt/venv /opt/venv
COPY app.py gunicorn.conf.py /app/
COPY nbs/01_data.ipynb nbs/02_features.ipynb nbs/03_train.ipynb nbs/04_registry.ipynb /app/nbs/
# HOST: every interface of the container (gunicorn.conf.py binds loopback unless told otherwise)
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 HOST=0.0.0.0 PORT=9696 \
    TAXI_DURATION_NBS=/app/nbs MONITORING_DIR=/home/app/monitoring MODEL_CACHE_DIR=/home/app/model-cache \
    TAXI_DATA_DIR=/home/app/data MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true WHYLOGS_NO_ANALYTICS=1
USER 10001
WORKDIR /app
EXPOSE 9696
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ['PORT'], timeout=4)"]
# gunicorn reads /app/gunicorn.conf.py: threaded workers, timeouts, graceful stop
CMD ["gunicorn", "app:app"]
