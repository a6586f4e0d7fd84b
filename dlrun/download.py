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


def require_tfds(source: str, alternatives: str):
    """The tensorflow_datasets module, or one line saying that data=`source` needs it."""
    import importlib.util

    if importlib.util.find_spec("tensorflow_datasets") is None:
        raise DlrunError(f"data={source} needs the tensorflow-datasets package",
                         f"pip install 'dlrun[tfds]', or use {alternatives}")
    import tensorflow_datasets as tfds

    return tfds


def tfds_load(tfds, data_cfg, name: str, splits: list[str], **kwargs):
    """tfds.load of `splits` of data set `name` (with info), bounded by data.download_timeout;
    a failed download or an unknown set is one line. -> (parts, info)"""
    hint = "tensorflow-datasets caches it under data.data_dir (~/tensorflow_datasets) after one online run"
    with downloading(f"data set '{name}' (tfds)", data_cfg.download_timeout, hint):
        try:
            return tfds.load(name, split=splits, with_info=True, data_dir=data_cfg.get("data_dir"),
                             download=bool(data_cfg.download), **kwargs)
        except (ValueError, KeyError, AssertionError) as e:
            raise DlrunError(f"tfds data set '{name}': {str(e).strip().splitlines()[0][:200]}") from None
