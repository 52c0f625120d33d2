"""Service minio-init on the host-network overlay: the buckets the platform uses, on moto's S3 server.

MinIO's `mc` (deploy/minio/create-buckets.sh) also creates a least-privileged user and its policy; moto
accepts any credentials, so on this overlay there is no user to create and the S3 credentials in .env
are not checked. Idempotent, as the MinIO job is.
"""

import os

import boto3

BUCKETS = ("loopline-dvc", "loopline-mlflow")  # as deploy/minio/create-buckets.sh

s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
existing = {bucket["Name"] for bucket in s3.list_buckets().get("Buckets", [])}
for name in BUCKETS:
    if name not in existing:
        s3.create_bucket(Bucket=name)
print(f"buckets ready on {os.environ['AWS_ENDPOINT_URL']}: {', '.join(BUCKETS)}")
