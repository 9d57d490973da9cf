import os
import socket
import tempfile

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def temporary_directory_kept():
    """A test that leaves this process's temporary directory moved (``tempfile.tempdir``,
    ``TMPDIR``) fails: every later test would stage its files there."""
    before = (tempfile.tempdir, os.environ.get("TMPDIR"))
    yield
    assert (tempfile.tempdir, os.environ.get("TMPDIR")) == before, "the test left the temporary directory moved"


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3-protocol endpoint on loopback (moto's standalone server), with the
    environment set so that s3fs finds it in this process and in every child process
    (Beam workers, Ray workers). Yields the endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ENDPOINT_URL": url,
        "AWS_ENDPOINT_URL_S3": url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield url
    finally:
        server.stop()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def s3_bucket(s3_endpoint, request):
    """A fresh bucket on the loopback S3 endpoint; yields ``s3://name``."""
    import s3fs

    import re
    import uuid

    name = "bertflow-" + re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:40].strip("-") + "-" + uuid.uuid4().hex[:6]
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint})
    fs.mkdir(name)
    s3fs.S3FileSystem.clear_instance_cache()
    return f"s3://{name}"
