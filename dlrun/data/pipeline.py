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


def fast_subset(idx, n: int, seed: int = 0, keep_order: bool = False):
    """trainer.fast: at most n of the row indices `idx` (seeded sample, or the first n)."""
    import numpy as np

    idx = np.asarray(idx)
    n = int(n)
    if len(idx) <= n:
        return idx
    if keep_order:
        return idx[:n]
    return np.sort(np.random.default_rng(seed).choice(idx, n, replace=False))


def split_indices(n: int, labels, split_cfg, stratify: bool, test_rows: int | None = None):
    """Seeded train/val/test row indices; stratified on labels when asked and possible.

    test_rows: the last N rows are a fixed test set (a source's own split). val_size 0 gives
    an empty validation split.
    """
    import numpy as np

    idx = np.arange(n)
    seed = int(split_cfg.seed)
    strat = labels if stratify else None
    if test_rows:
        rest, test = idx[:-test_rows], idx[-test_rows:]
    else:
        rest, test = _split(idx, float(split_cfg.test_size), seed, strat)
    val_size = float(split_cfg.val_size)
    if val_size <= 0:
        return rest, np.array([], dtype=int), test
    train, val = _split(rest, val_size, seed, None if strat is None else strat[rest])
    return train, val, test


def split_rows(n: int, labels, cfg, stratify: bool, test_rows: int | None = None, what: str = "row(s)") -> dict:
    """{train, val, test: row indices} of a table of `n` rows for a task: seeded and stratified
    as `task.split` says (split_indices), cut to trainer.fast_examples per split under
    trainer.fast, and checked: train and test need two rows each (val may be empty by choice).
    `what` names the rows in the error (texts, pairs)."""
    from dlrun.errors import DlrunError

    idx = dict(zip(("train", "val", "test"), split_indices(n, labels, cfg.task.split, stratify, test_rows), strict=True))
    if cfg.trainer.fast:
        idx = {s: fast_subset(i, cfg.trainer.fast_examples, int(cfg.trainer.seed)) for s, i in idx.items()}
    for split in ("train", "test"):
        if len(idx[split]) < 2:
            raise DlrunError(f"the {split} split has {len(idx[split])} {what} of {n}: too few",
                             "use more data or change task.split sizes")
    return idx


def _split(idx, size, seed, strat):
    from sklearn.model_selection import train_test_split

    from dlrun.errors import DlrunError

    if not 0 < size < 1:
        raise DlrunError(f"split sizes must be between 0 and 1, got {size}")
    try:
        return train_test_split(idx, test_size=size, random_state=seed, stratify=strat)
    except ValueError:  # a class too small to stratify: fall back to a plain shuffle split
        return train_test_split(idx, test_size=size, random_state=seed)
