"""`mediajobs storage check` and /readyz against real buckets (moto's S3 server and the
GCS emulator, both on loopback, both in processes of their own)."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import httpx
import pytest

from tests.support.emulators import S3_CREDENTIALS, gcs_emulator, moto_server, service_account_json
from tests.support.serving import Serving, clean_env, mediajobs


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        client = boto3.client(
            "s3",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        client.create_bucket(Bucket="media")
        yield url


def s3_env(moto_url: str, bucket: str = "media", **extra: str) -> dict[str, str]:
    return clean_env(
        S3_BUCKET=bucket,
        S3_ENDPOINT_URL=moto_url,
        S3_REGION="us-east-1",
        S3_FORCE_PATH_STYLE="true",
        **S3_CREDENTIALS,
        **extra,
    )


def test_storage_check_reports_a_reachable_writable_s3_bucket(moto_url):
    done = mediajobs("storage", "check", env=s3_env(moto_url))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "storage s3://media: ok"
    for step in ("write", "read", "list", "sign", "delete"):
        assert any(line.strip().startswith(f"ok   {step}:") for line in lines), done.stdout


def test_storage_check_fails_clearly_on_a_missing_bucket(moto_url):
    done = mediajobs("storage", "check", env=s3_env(moto_url, bucket="no-such-bucket"))
    assert done.returncode == 1
    assert done.stdout.splitlines()[0] == "storage s3://no-such-bucket: FAILED"
    assert "FAIL write" in done.stdout
    assert "error (storage_denied)" in done.stdout


def test_storage_check_reports_a_gcs_bucket_and_a_previous_lightsail_one(moto_url):
    with gcs_emulator() as host:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        storage.Client(
            project="p",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": f"http://{host}"},
        ).create_bucket("gmedia")
        previous = (
            '[{"provider": "lightsail", "kind": "s3", "bucket": "media", '
            f'"endpoint_url": "{moto_url}", "region": "us-east-1", "force_path_style": true}}]'
        )
        env = clean_env(
            GCS_BUCKET="gmedia",
            STORAGE_EMULATOR_HOST=host,
            GCS_SERVICE_ACCOUNT_JSON=service_account_json(),
            STORAGE_PREVIOUS=previous,
            **S3_CREDENTIALS,
        )
        done = mediajobs("storage", "check", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[0] == "storage gcs://gmedia: ok"
    assert "previous lightsail://media: ok" in done.stdout


@pytest.mark.slow
def test_readyz_runs_the_storage_check_against_the_configured_bucket(
    moto_url, database_url, redis_url
):
    for bucket, expected in (("media", (200, "ok")), ("missing", (503, "error: storage_denied"))):
        env = s3_env(moto_url, bucket, DATABASE_URL=database_url, REDIS_URL=redis_url)
        with Serving(env) as serving:
            ready = httpx.get(f"{serving.base}/readyz", timeout=15)
            assert (ready.status_code, ready.json()["checks"]["storage"]) == expected
