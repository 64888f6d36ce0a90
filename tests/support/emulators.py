"""Storage emulators on loopback, each in a process of its own (so a test that measures
its own memory does not count the server's copy of the bytes):

- S3: moto's ``ThreadedMotoServer`` (real HTTP, real boto3 signing on the client side);
- GCS: ``gcp-storage-emulator`` (the JSON and XML APIs google-cloud-storage speaks).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mediajobs.storage.s3 import S3Store
from mediajobs.storage.s3 import make_client as make_s3_client
from tests.conftest import free_port

MOTO_SCRIPT = """
import sys, time
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=int(sys.argv[1]), verbose=False)
server.start()
print("ready", flush=True)
while True:
    time.sleep(3600)
"""

S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the emulator exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(url, timeout=1.0)
            return
        time.sleep(0.1)
    raise RuntimeError(f"{url}: the emulator did not answer in {timeout}s")


@contextlib.contextmanager
def _process(args: list[str], url: str) -> Iterator[str]:
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_http(url, proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """The endpoint URL of a fresh moto S3 server."""
    port = free_port()
    with _process(
        [sys.executable, "-c", MOTO_SCRIPT, str(port)], f"http://127.0.0.1:{port}"
    ) as url:
        yield url


@contextlib.contextmanager
def gcs_emulator() -> Iterator[str]:
    """The host:port of a fresh in-memory GCS emulator."""
    port = free_port()
    args = [
        sys.executable, "-m", "gcp_storage_emulator", "start",
        "--host", "127.0.0.1", "--port", str(port), "--in-memory", "--quiet",
    ]  # fmt: skip
    with _process(args, f"http://127.0.0.1:{port}/"):
        yield f"127.0.0.1:{port}"


def service_account_info() -> dict[str, Any]:
    """A service-account key made up for the test run: enough to sign V4 URLs locally (the
    emulator does not check signatures)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return {
        "type": "service_account",
        "project_id": "mediajobs-test",
        "private_key_id": "test-key",
        "private_key": pem,
        "client_email": "mediajobs-test@mediajobs-test.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    }


def service_account_json() -> str:
    return json.dumps(service_account_info())


def s3_store(endpoint: str, bucket: str | None = None, *, provider: str = "s3") -> S3Store:
    """An S3Store on a new bucket of the moto server at ``endpoint``."""
    bucket = bucket or f"media-{uuid.uuid4().hex[:12]}"
    client = make_s3_client(endpoint_url=endpoint, region="us-east-1", force_path_style=True)
    client.create_bucket(Bucket=bucket)
    return S3Store(client, bucket, provider=provider)
