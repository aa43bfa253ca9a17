# Stand-in for minio/minio (service minio) and minio/mc (service minio-init): moto's S3 server
# from PyPI (s3-requirements.txt, installed from wheels: containers here cannot reach the
# index) on MinIO's port 9000, and make_bucket.py, which reads MC_HOST_local as `mc` does and
# creates the bucket idempotently. Not reproduced: credential checks (moto accepts any key),
# persistence in the minio-data volume (moto keeps objects in memory), MinIO's console on 9001
# and its health API (the override file probes moto's own).
FROM python:3.11.16-slim-bookworm
COPY --from=ghcr.io/astral-sh/uv:0.13.8 /uv /usr/local/bin/uv
COPY wheels/ /wheels/
COPY s3-requirements.txt make_bucket.py /opt/s3/
RUN uv venv --python /usr/local/bin/python3.11 /opt/s3/venv \
    && uv pip install --python /opt/s3/venv/bin/python --offline --no-index \
       --find-links /wheels --no-build -r /opt/s3/s3-requirements.txt \
    && rm -rf /wheels \
    && groupadd --gid 10001 app \
    && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin app
ENV PATH=/opt/s3/venv/bin:$PATH \
    PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 9000
CMD ["moto_server", "-H", "0.0.0.0", "-p", "9000"]
