"""Network access for data sets and pretrained weights (keras.datasets, keras.applications,
TFDS): a bounded wait and one clear line when there is no network."""

from __future__ import annotations

import contextlib

from dlrun.errors import DlrunError


def _is_network_error(e: BaseException) -> bool:
    import http.client
    import socket
    import urllib.error

    network = (urllib.error.URLError, TimeoutError, ConnectionError, socket.gaierror, http.client.HTTPException)
    return isinstance(e, network) or str(e).startswith("URL fetch failure")


@contextlib.contextmanager
def downloading(what: str, timeout: float, hint: str):
    """Bound every socket operation by `timeout` seconds and turn a failed download into one line.

    Offline, a download fails at name resolution at once; on a network that drops packets the
    socket timeout makes it fail after `timeout` seconds instead of hanging.
    """
    import socket

    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(float(timeout))
    try:
        yield
    except Exception as e:
        if not _is_network_error(e):
            raise
        reason = (str(e).strip().splitlines() or [type(e).__name__])[-1].split(" -- ")[-1][:120]
        raise DlrunError(f"cannot download {what}: no network? ({reason})", hint) from None
    finally:
        socket.setdefaulttimeout(old)
