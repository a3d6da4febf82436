"""An S3-compatible server for the tests: moto's server mode on 127.0.0.1, started and stopped by the fixtures.

`s3_server` (session) starts `moto.server.ThreadedMotoServer` on a free port; `s3` (per test) points the standard
AWS environment at it (fake credentials, AWS_ENDPOINT_URL), creates a fresh bucket and yields its `s3://` URL.
Nothing runs before the tests ask for it, so `make test` needs no server running.
"""
from __future__ import annotations

import logging
import os
import socket
import uuid

import pytest

FAKE_CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def s3_env(endpoint: str, **extra: str) -> dict[str, str]:
    """The AWS variables a process needs to use the test server (and nothing from the user's own ~/.aws)."""
    return {**FAKE_CREDS, "AWS_ENDPOINT_URL": endpoint, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_CONFIG_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true", **extra}


@pytest.fixture(scope="session")
def s3_server():
    pytest.importorskip("moto.server")
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch) -> str:
    """A new empty bucket on the test server, as `s3://vtl-test-XXXXXXXX`; AWS_* env set for this test."""
    for key in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    for key, value in s3_env(s3_server).items():
        monkeypatch.setenv(key, value)
    bucket = f"vtl-test-{uuid.uuid4().hex[:8]}"
    make_bucket(s3_server, bucket)
    return f"s3://{bucket}"


def make_bucket(endpoint: str, bucket: str) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, **{k.lower(): v for k, v in FAKE_CREDS.items()
                                                         if k != "AWS_DEFAULT_REGION"}, region_name="us-east-1")
    client.create_bucket(Bucket=bucket)


def read_only_user(endpoint: str, bucket: str) -> dict[str, str]:
    """Access keys of an IAM user that may list and read `bucket` but not write (for moto's IAM enforcement)."""
    import json

    import boto3

    iam = boto3.client("iam", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                       region_name="us-east-1")
    name = f"reader-{uuid.uuid4().hex[:6]}"
    iam.create_user(UserName=name)
    # Wildcard read actions, not the exact names: moto 5.2 maps ListObjectsV2 to an action name of its own that
    # `s3:ListBucket` no longer matches (it did in moto 5.1). `s3:Get*`/`s3:List*` grant no write in AWS or moto.
    policy = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:Get*", "s3:List*"],
         "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]}]}
    iam.put_user_policy(UserName=name, PolicyName="read-only", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
