"""tf.data helpers shared by the data sources: arrays -> shuffled, batched, prefetched."""

from __future__ import annotations


def from_arrays(x, y, batch_size: int, shuffle: bool = False, seed: int = 0):
    """A batched tf.data.Dataset over in-memory arrays (x may be a dict of arrays); no cache:
    the arrays already are in memory."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        n = len(y) if y is not None else len(next(iter(x.values())) if isinstance(x, dict) else x)
        ds = ds.shuffle(min(n, 10_000), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def limit(ds, batches: int | None):
    """Take at most `batches` batches (smoke runs)."""
    return ds if ds is None or not batches else ds.take(int(batches))


def subset(arrays: dict, n: int, seed: int = 0) -> dict:
    """Keep a random subset of n rows of each array in a {name: array} dict (same rows in all)."""
    import numpy as np

    first = next(iter(arrays.values()))
    if len(first) <= n:
        return arrays
    idx = np.random.default_rng(seed).choice(len(first), n, replace=False)
    idx.sort()
    return {k: v[idx] for k, v in arrays.items()}
