"""Plain-text corpora for language modelling (task=text_generate): one string of text.

pydoc_topics: embedded, offline and deterministic: the English help-topic texts that ship with
Python itself (`pydoc_data.topics.topics`, what `help("assert")` prints), joined in sorted
topic order; about 465,000 characters of real prose and code examples on Python 3.12.
text_file: any UTF-8 text file (data.path). A missing, empty, folder or non-UTF-8 path is one
line naming the file and the problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dlrun.errors import DlrunError
from dlrun.registry import DATA

TAGS = ("text_generate",)


@dataclass
class Corpus:
    """A text corpus: `text` in reading order, with the name and source MLflow records."""

    text: str
    name: str
    source: str


def _cap(text: str, max_chars) -> str:
    return text[: int(max_chars)] if max_chars else text


@DATA.register("pydoc_topics", "Python's own help-topic texts (pydoc_data.topics): real English prose, offline",
               tags=TAGS)
def pydoc_topics(cfg) -> Corpus:
    import sys
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[k].strip("\n") for k in sorted(topics)) + "\n"
    version = ".".join(map(str, sys.version_info[:2]))
    return Corpus(_cap(text, cfg.get("max_chars")), "pydoc_topics",
                  f"python{version}:pydoc_data.topics?max_chars={cfg.get('max_chars')}")


def read_text_file(path) -> str:
    """The text of a UTF-8 file, or one DlrunError line saying why not."""
    p = Path(str(path)).expanduser()
    if not p.exists():
        raise DlrunError(f"text file '{path}' does not exist")
    if p.is_dir():
        raise DlrunError(f"text file '{path}' is a folder", "give one .txt file")
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark is not text
    except UnicodeDecodeError as e:
        raise DlrunError(f"text file '{path}' is not UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start})",
                         "convert it, e.g. iconv -f latin1 -t utf-8") from None
    if not text.strip():
        raise DlrunError(f"text file '{path}' is empty")
    return text.replace("\r\n", "\n")


@DATA.register("text_file", "A UTF-8 text file as one corpus (data.path)", tags=TAGS)
def text_file(cfg) -> Corpus:
    if not cfg.get("path"):
        raise DlrunError("data=text_file needs data.path", "data.path=<book.txt>")
    text = _cap(read_text_file(cfg.path), cfg.get("max_chars"))
    return Corpus(text, Path(str(cfg.path)).stem, str(Path(str(cfg.path)).expanduser().resolve()))
