"""The HTTP status of a GET, with optional basic auth: what the faasd gateway answers."""

from __future__ import annotations

import base64
import urllib.error
import urllib.request


def http_status(url: str, auth: str | None = None, timeout: float = 30) -> int:
    """The status code of GET `url` (`auth` as "user:password"); an HTTP error's code too."""
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code
