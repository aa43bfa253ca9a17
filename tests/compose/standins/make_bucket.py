"""`mc mb --ignore-existing local/<bucket>` of the S3 stand-in: the alias `local` from
MC_HOST_local (http://ACCESS_KEY:SECRET_KEY@host:port), as `mc` reads it."""

from __future__ import annotations

import os
import sys
from urllib.parse import unquote, urlsplit

import boto3

#: mc's alias; its endpoint and keys come from MC_HOST_<alias>.
ALIAS = "local"


def main(bucket: str) -> None:
    url = urlsplit(os.environ[f"MC_HOST_{ALIAS}"])
    s3 = boto3.client(
        "s3",
        endpoint_url=f"{url.scheme}://{url.hostname}:{url.port}",
        aws_access_key_id=unquote(url.username or ""),
        aws_secret_access_key=unquote(url.password or ""),
        region_name="us-east-1",
    )
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if bucket in existing:
        print(f"Bucket `{ALIAS}/{bucket}` already exists.")
        return
    s3.create_bucket(Bucket=bucket)
    print(f"Bucket created successfully `{ALIAS}/{bucket}`.")


if __name__ == "__main__":
    main(sys.argv[1])
