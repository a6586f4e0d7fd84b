"""Start-up cost of a run: the heavy imports (TensorFlow, MLflow and its store) without
Python's cyclic garbage collector walking them again and again.

Importing TensorFlow creates about 400,000 objects that live as long as the process. While
they are imported the collector runs full passes over everything alive (six during
TensorFlow's import alone), every later full pass walks them all again, and so does the
final pass when the interpreter exits: together more than a second of CPU per run, more than
all of dlrun's own work. Pausing the collector during these imports and then freezing what is
alive (`gc.freeze`: later passes skip those objects) removes that cost; the import leaves only
a few thousand objects of garbage behind, which stay.
"""

from __future__ import annotations

import contextlib
import gc
import sys


@contextlib.contextmanager
def paused_gc():
    """Run the block with the cyclic collector paused; freeze what is alive afterwards if the
    block imported modules (a sweep's later jobs import nothing new and freeze nothing, so
    their objects stay collectable)."""
    if not gc.isenabled():  # nested, or paused by the caller
        yield
        return
    before = len(sys.modules)
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        if len(sys.modules) > before:
            gc.freeze()
