"""Before a command touches a workflow's object stores: is each store's endpoint reachable,
and, when a store's call fails, one line that names the URL and what to set.

A client library left to find out by itself retries for a minute (gcsfs: six tries with
backoff on every call, each call of a dry run's plan) and prints a traceback per try; one
TCP connect per endpoint says the same in a second.

    problem = unreachable({"storage": "gs://bucket/bert", "wiki.dump": "gs://bucket/raw/dump.xml.bz2"})
    if problem: print(f"error: {problem}")
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

from bertflow.contracts import storage

CONNECT_TIMEOUT = 3.0

CREDENTIALS = {
    "gs": "set GOOGLE_APPLICATION_CREDENTIALS to a service account's key file, "
          "or run `gcloud auth application-default login`",
    "s3": "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), "
          "and AWS_ENDPOINT_URL for an S3 service other than AWS",
}
CREDENTIALS["gcs"] = CREDENTIALS["gs"]
CREDENTIALS["s3a"] = CREDENTIALS["s3"]


def scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else "file"


def endpoint(url: str) -> tuple[str, int] | None:
    """The host and port that serve ``url``'s store (the emulator or endpoint the
    client libraries read from the environment), None for a store without one here."""
    s = scheme(url)
    if s in ("gs", "gcs"):
        # gcsfs and google-cloud-storage honour the emulator variable.
        where = os.environ.get("STORAGE_EMULATOR_HOST") or "https://storage.googleapis.com"
    elif s in ("s3", "s3a"):
        where = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "https://s3.amazonaws.com"
    else:
        return None
    if "://" not in where:
        where = f"http://{where}"
    parts = urlsplit(where)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def unreachable(urls: dict[str, str], timeout: float = CONNECT_TIMEOUT) -> str:
    """"" when every store among ``urls`` (``{what: url}``: ``storage``, a step's data
    path) has its backend installed and answers a TCP connect, else one line: what, the URL,
    and the extra to install, or the endpoint, the cause and the credentials to set."""
    tried: set[tuple[str, int]] = set()
    for what, url in urls.items():
        missing = storage.missing_backend(url)  # an install without the store's extra
        if missing:
            return f"{what} {missing}"
        where = endpoint(url)
        if where is None or where in tried:
            continue
        tried.add(where)
        try:
            socket.create_connection(where, timeout=timeout).close()
        except OSError as e:
            why = e.strerror or str(e) or type(e).__name__
            return (f"{what} {url}: cannot reach {where[0]}:{where[1]} ({why}): check the network; "
                    f"for this store {CREDENTIALS[scheme(url)]}")
    return ""


def store_error(url: str, e: BaseException) -> str:
    """A store's failure in one line, with the credentials to set for its scheme."""
    from .runner import cause

    hint = CREDENTIALS.get(scheme(url))
    return f"{url}: {cause(e)}" + (f" (credentials: {hint})" if hint else "")
