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


@DATA.register("text_file", "A UTF-8 text file as one corpus (data.path); word2vec: one sentence a line",
               tags=(*TAGS, "word2vec"))
def text_file(cfg) -> Corpus:
    if not cfg.get("path"):
        raise DlrunError("data=text_file needs data.path", "data.path=<book.txt>")
    text = _cap(read_text_file(cfg.path), cfg.get("max_chars"))
    return Corpus(text, Path(str(cfg.path)).stem, str(Path(str(cfg.path)).expanduser().resolve()))


# -- word2vec: a generated corpus with planted relations ---------------------------------

CAPITALS = [("france", "paris", "french"), ("germany", "berlin", "german"), ("italy", "rome", "italian"),
            ("spain", "madrid", "spanish"), ("japan", "tokyo", "japanese"), ("china", "beijing", "chinese"),
            ("russia", "moscow", "russian"), ("egypt", "cairo", "egyptian"), ("greece", "athens", "greek"),
            ("poland", "warsaw", "polish"), ("peru", "lima", "peruvian"), ("kenya", "nairobi", "kenyan")]
GENDER = [("king", "queen", "crown"), ("man", "woman", "adult"), ("boy", "girl", "school"),
          ("father", "mother", "family"), ("son", "daughter", "parents"), ("brother", "sister", "sibling"),
          ("uncle", "aunt", "nephew"), ("husband", "wife", "wedding"), ("prince", "princess", "castle"),
          ("actor", "actress", "stage")]
# Each word's contexts carry its pair's own word (the demonym, the attribute) and its side's
# words (capital/city vs country/nation; he/his vs she/her), mostly within 2 words of it, so
# that a vector can learn "which pair" and "which side" apart: the offsets of an analogy.
CAPITAL_TEMPLATES = ["{city} is the {adj} capital city", "the {adj} city {city} is busy", "visit {city} capital of {adj}",
                     "{country} is a {adj} country", "the {adj} nation {country} is large",
                     "travel in {country} nation of {adj}"]
GENDER_TEMPLATES = ["the {attr} {m} said he was there", "he is a {m} of {attr}", "he met his {m} {attr} again",
                    "the {attr} {f} said she was there", "she is a {f} of {attr}", "she met her {f} {attr} again"]
FILLER_WORDS = ["today", "yesterday", "often", "again", "there", "here", "soon", "then", "still", "also"]


@dataclass
class Sentences:
    """Sentences for word embeddings, with the probes their generator planted (or none)."""

    sentences: list[str]
    name: str
    source: str
    analogies: list[tuple[str, str, str, str]]  # a : b :: c : d (b - a + c should be near d)
    groups: list[list[str]]  # words of one kind (countries, capitals, male, female words)


def planted_sentences(n: int, seed: int) -> Sentences:
    """`n` sentences from the templates above, deterministic for a seed, and the probes."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        if rng.random() < 0.5:
            country, city, adj = CAPITALS[rng.integers(len(CAPITALS))]
            s = CAPITAL_TEMPLATES[rng.integers(len(CAPITAL_TEMPLATES))].format(city=city, country=country, adj=adj)
        else:
            m, f, attr = GENDER[rng.integers(len(GENDER))]
            s = GENDER_TEMPLATES[rng.integers(len(GENDER_TEMPLATES))].format(m=m, f=f, attr=attr)
        if rng.random() < 0.5:
            s = f"{s} {FILLER_WORDS[rng.integers(len(FILLER_WORDS))]}"
        out.append(s)
    analogies = [(a[0], a[1], b[0], b[1]) for group in (CAPITALS, GENDER) for a in group for b in group if a != b]
    groups = [[g[side] for g in group] for group in (CAPITALS, GENDER) for side in (0, 1)]
    return Sentences(out, "planted_relations", f"dlrun:planted_relations?n={n}&seed={seed}", analogies, groups)


@DATA.register("planted_relations", "Generated sentences with planted country-capital and male-female pairs (word2vec)",
               tags=("word2vec",))
def planted_relations(cfg) -> Sentences:
    return planted_sentences(int(cfg.n), int(cfg.seed))
