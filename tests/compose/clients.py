"""Small clients the compose test talks to the deployment with, over the published ports."""

from __future__ import annotations

import hashlib
import hmac
import time
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

import httpx

S3_NAMESPACE = {"s3": "http://s3.amazonaws.com/doc/2006-03-01/"}


def s3_keys(endpoint: str, bucket: str, access_key: str, secret_key: str) -> list[str]:
    """Every key of `bucket`: S3's ListObjectsV2, signed with AWS Signature V4 (what MinIO
    checks), without an SDK on this side."""
    keys: list[str] = []
    token = None
    while True:
        params = {"list-type": "2", **({"continuation-token": token} if token else {})}
        answer = _signed_get(endpoint, f"/{bucket}", params, access_key, secret_key)
        answer.raise_for_status()
        root = ET.fromstring(answer.content)
        keys += [k.text or "" for k in root.findall("s3:Contents/s3:Key", S3_NAMESPACE)]
        token = root.findtext("s3:NextContinuationToken", namespaces=S3_NAMESPACE)
        if root.findtext("s3:IsTruncated", namespaces=S3_NAMESPACE) != "true" or not token:
            return keys


def _signed_get(
    endpoint: str, path: str, params: dict[str, str], access_key: str, secret_key: str
) -> httpx.Response:
    region, service = "us-east-1", "s3"
    now = datetime.now(UTC)
    stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    host = urlsplit(endpoint).netloc
    query = "&".join(
        f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(params.items())
    )
    empty = hashlib.sha256(b"").hexdigest()
    headers = f"host:{host}\nx-amz-content-sha256:{empty}\nx-amz-date:{stamp}\n"
    signed = "host;x-amz-content-sha256;x-amz-date"
    request = "\n".join(["GET", path, query, headers, signed, empty])
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(request.encode()).hexdigest()]
    )
    key = f"AWS4{secret_key}".encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    authorization = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed}, "
        f"Signature={signature}"
    )
    return httpx.get(
        f"{endpoint}{path}?{query}",
        headers={
            "x-amz-date": stamp,
            "x-amz-content-sha256": empty,
            "Authorization": authorization,
        },
        timeout=30,
    )


class Airflow:
    """The calls of Airflow 3's REST API (v2) the test makes, logged in with a JWT."""

    def __init__(self, url: str, user: str, password: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=30)
        token = self.http.post("/auth/token", json={"username": user, "password": password})
        token.raise_for_status()
        self.http.headers["Authorization"] = f"Bearer {token.json()['access_token']}"

    def dag(self, dag_id: str) -> httpx.Response:
        return self.http.get(f"/api/v2/dags/{dag_id}")

    def trigger(self, dag_id: str) -> dict:
        answer = self.http.post(
            f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": {}}
        )
        answer.raise_for_status()
        return answer.json()

    def run(self, dag_id: str, run_id: str) -> dict:
        answer = self.http.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
        answer.raise_for_status()
        return answer.json()

    def runs(self, dag_id: str) -> list[dict]:
        answer = self.http.get(
            f"/api/v2/dags/{dag_id}/dagRuns", params={"order_by": "-run_after", "limit": 20}
        )
        answer.raise_for_status()
        return answer.json()["dag_runs"]

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        answer = self.http.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        answer.raise_for_status()
        states: dict[str, str | None] = {}
        for instance in answer.json()["task_instances"]:
            index = instance.get("map_index", -1)
            name = instance["task_id"] + (f"[{index}]" if index >= 0 else "")
            states[name] = instance["state"]
        return states

    def wait_finished(self, dag_id: str, run_id: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.run(dag_id, run_id)
            if run["state"] in ("success", "failed"):
                return run
            time.sleep(3)
        raise TimeoutError(f"{dag_id} {run_id} not finished after {timeout:.0f} s")
