#!/bin/sh
# One-shot (service minio-init): the buckets and the least-privileged user the platform uses.
# Idempotent: runs on every `docker compose up`.
set -eu
mc alias set local http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"
mc mb --ignore-existing local/loopline-dvc      # DVC remote of the data registry (LOOPLINE_DVC_REMOTE)
mc mb --ignore-existing local/loopline-mlflow   # MLflow artifacts (the tracking server's --artifacts-destination)
mc admin policy create local loopline-buckets /init/loopline-buckets-policy.json
mc admin user add local "$S3_ACCESS_KEY_ID" "$S3_SECRET_ACCESS_KEY"
mc admin policy attach local loopline-buckets --user "$S3_ACCESS_KEY_ID" || echo "policy already attached"
echo "buckets ready: loopline-dvc, loopline-mlflow (user $S3_ACCESS_KEY_ID)"
