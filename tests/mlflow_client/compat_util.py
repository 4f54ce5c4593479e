"""Helpers shared by the compatibility tests (imported by name; pytest puts this
folder on sys.path)."""

from __future__ import annotations

import http.client
import json
import os
import urllib.parse

import pytest

IS_MLFLOW = os.environ.get("COMPAT_SERVER", "").lower() == "mlflow"


def skip_on_mlflow(reason: str):
    """For behaviour the protocol reference requires but the reference server
    does not have (it answers 500 or HTML): asserted on ours, skipped on mlflow."""
    return pytest.mark.skipif(IS_MLFLOW, reason=f"reference mlflow server differs: {reason}")


def error_code(exc) -> str | None:
    return getattr(exc, "error_code", None)


def raw_request(url: str, method: str, path: str, body: bytes | None = None,
                headers: dict | None = None, timeout: float = 30):
    """Sends `path` byte for byte (no dot-segment normalisation, unlike
    requests/urllib3). Returns (status, headers, body bytes)."""
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        hdrs = dict(headers or {})
        if body is not None:
            hdrs.setdefault("Content-Length", str(len(body)))
        for k, v in hdrs.items():
            conn.putheader(k, v)
        conn.endheaders()
        if body is not None:
            conn.send(body)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, dict(resp.getheaders()), data
    finally:
        conn.close()


def json_or_none(data: bytes):
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
