"""Text data sources: labelled texts as a frame with columns `text` and `label`.

text_reviews: an embedded, deterministic generator of short movie reviews. Sentiment words,
negation ("not good" is negative, "never boring" positive), intensifiers, contrast ("good
actors but a dull plot" follows the clause after "but") and neutral filler; a fraction of
labels is flipped (`noise`). Word counts alone cannot read negation or which side of "but"
a word is on, so a bag-of-words model stays below an order-aware one.
Real loaders: text_folder (class sub-folders of .txt files), csv_text, imdb (keras.datasets).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dlrun.errors import DlrunError
from dlrun.registry import DATA

POSITIVE = ["good", "great", "excellent", "wonderful", "brilliant", "moving", "funny", "clever", "superb",
            "charming", "delightful", "gripping"]
NEGATIVE = ["bad", "awful", "boring", "dull", "terrible", "weak", "clumsy", "tedious", "predictable",
            "bland", "silly", "poor"]
NEUTRAL = ["okay", "average", "ordinary", "fine", "acceptable", "passable"]
SUBJECTS = ["the plot", "the acting", "the actors", "the script", "the music", "the ending", "the story",
            "the director", "the dialogue", "the photography", "this film", "the cast"]
INTENSIFIERS = ["very", "really", "truly", "quite", "extremely", "rather"]
NEGATIONS = ["not", "never", "hardly"]
FILLER = ["i watched it on sunday", "we saw it at the cinema", "it runs two hours", "my friend picked it",
          "it came out last year", "the trailer was long", "there is a sequel", "it is in colour"]


@dataclass
class TextTable:
    """Labelled texts: `frame` has columns text and label; `test` an optional given test frame."""

    frame: object
    name: str
    source: str
    test: object = None
    warnings: list[str] = field(default_factory=list)


def _clause(rng, polarity: int) -> str:
    """A clause saying `polarity` (+1/-1) about a subject, possibly through a negation."""
    subject = SUBJECTS[rng.integers(len(SUBJECTS))]
    negate = rng.random() < 0.35
    word_polarity = -polarity if negate else polarity
    words = POSITIVE if word_polarity > 0 else NEGATIVE
    adj = words[rng.integers(len(words))]
    if rng.random() < 0.4:
        adj = f"{INTENSIFIERS[rng.integers(len(INTENSIFIERS))]} {adj}"
    verb = "is" if not subject.endswith("s") or subject == "this film" else "are"
    if negate:
        return f"{subject} {verb} {NEGATIONS[rng.integers(len(NEGATIONS))]} {adj}"
    return f"{subject} {verb} {adj}"


def review(rng, label: int, neutral: bool = False, preamble: int = 0) -> str:
    """One review of class `label` (0 negative, 1 positive, 2 neutral), after 0..`preamble`
    sentences that say nothing about the film's worth (real reviews retell the plot first: a
    model that reads only the first tokens misses the verdict)."""
    parts = [FILLER[i] for i in rng.integers(len(FILLER), size=int(rng.integers(preamble + 1)))] if preamble else []
    if rng.random() < 0.4:
        parts.append(FILLER[rng.integers(len(FILLER))])
    if label == 2:
        parts.append(f"{SUBJECTS[rng.integers(len(SUBJECTS))]} is {NEUTRAL[rng.integers(len(NEUTRAL))]}")
    else:
        polarity = 1 if label == 1 else -1
        if rng.random() < 0.45:  # contrast: the clause after "but" decides
            parts.append(f"{_clause(rng, -polarity)} but {_clause(rng, polarity)}")
        else:
            parts.append(_clause(rng, polarity))
            if rng.random() < 0.3:
                parts.append(_clause(rng, polarity))
    if rng.random() < 0.3:
        parts.append(FILLER[rng.integers(len(FILLER))])
    return " . ".join(parts)


def reviews_frame(n: int = 3000, seed: int = 42, noise: float = 0.05, neutral: bool = False, preamble: int = 0):
    """n generated reviews with labels 'negative'/'positive' (/'neutral'); a `noise` share flipped."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    k = 3 if neutral else 2
    names = ["negative", "positive", "neutral"][:k]
    labels = rng.integers(k, size=n)
    texts = [review(rng, int(c), neutral, preamble) for c in labels]
    flip = rng.random(n) < noise
    labels = np.where(flip, (labels + rng.integers(1, k, size=n)) % k, labels)
    return pd.DataFrame({"text": texts, "label": [names[c] for c in labels]})


@DATA.register("text_reviews", "Generated movie reviews with negation, contrast and label noise (embedded)",
               tags=("text",))
def text_reviews(cfg) -> TextTable:
    n, seed = int(cfg.n), int(cfg.seed)
    noise, neutral = float(cfg.noise), bool(cfg.neutral)
    preamble = int(cfg.preamble)
    return TextTable(reviews_frame(n, seed, noise, neutral, preamble), "text_reviews",
                     f"dlrun:text_reviews?n={n}&seed={seed}&noise={noise}&neutral={neutral}&preamble={preamble}")


def read_folder(path) -> object:
    """Class sub-folders of .txt files as a frame, through keras.utils.text_dataset_from_directory."""
    import pandas as pd

    p = Path(str(path)).expanduser()
    if not p.is_dir():
        raise DlrunError(f"text folder '{path}' does not exist or is not a folder",
                         "data.path=<folder with one sub-folder of .txt files per class>")
    classes = sorted(d.name for d in p.iterdir() if d.is_dir() and any(d.glob("*.txt")))
    if len(classes) < 2:
        raise DlrunError(f"text folder '{path}' has {len(classes)} class sub-folder(s) with .txt files",
                         "put each class's .txt files in its own sub-folder (pos/, neg/)")
    import keras

    ds = keras.utils.text_dataset_from_directory(str(p), class_names=classes, batch_size=None, shuffle=False,
                                                 follow_links=True, verbose=False)
    texts, labels = [], []
    for x, y in ds.as_numpy_iterator():
        texts.append(x.decode("utf-8", errors="replace"))
        labels.append(classes[int(y)])
    return pd.DataFrame({"text": texts, "label": labels})


def read_texts(path) -> object:
    """Unlabelled .txt files of a folder (any depth) as a frame with the file name beside the text."""
    import pandas as pd

    p = Path(str(path)).expanduser()
    files = sorted(p.rglob("*.txt"))
    if not files:
        raise DlrunError(f"folder '{path}' has no .txt files")
    frame = pd.DataFrame({"file": [str(f.relative_to(p)) for f in files],
                          "text": [f.read_text(errors="replace") for f in files]})
    # a class sub-folder layout carries the truth
    if all(len(Path(f).parts) == 2 for f in frame.file):
        frame["label"] = [Path(f).parts[0] for f in frame.file]
    return frame


@DATA.register("text_folder", "Class sub-folders of .txt files (data.path; optional data.test_path)", tags=("text",))
def text_folder(cfg) -> TextTable:
    if not cfg.get("path"):
        raise DlrunError("data=text_folder needs data.path", "data.path=<folder with pos/ and neg/ sub-folders>")
    test = read_folder(cfg.test_path) if cfg.get("test_path") else None
    return TextTable(read_folder(cfg.path), Path(str(cfg.path)).name, str(cfg.path), test)


def read_csv_text(path, cfg) -> object:
    """A CSV's text and label columns (by name or index), renamed to text/label."""
    from dlrun.data.csv import FileOptions, column, read_csv

    opts = FileOptions.of(cfg)
    frame = read_csv(path, sep=opts.sep, header=bool(opts.header), min_columns=1, encoding=opts.encoding)
    text = column(frame, opts.text_column, path, "data.text_column")
    out = frame.rename(columns={text: "text"})
    out["text"] = out["text"].fillna("").astype(str)
    label_key = opts.label_column
    if label_key is not None:
        try:
            label = column(frame, label_key, path, "data.label_column")
            out = out.rename(columns={label: "label"})
            out["label"] = out["label"].astype(str)
        except DlrunError:
            pass
    return out


@DATA.register("csv_text", "A CSV with a text column and a label column (data.path)", tags=("text",))
def csv_text(cfg) -> TextTable:
    if not cfg.get("path"):
        raise DlrunError("data=csv_text needs data.path", "data.path=<reviews.csv> data.text_column=text")
    frame = read_csv_text(cfg.path, cfg)
    if "label" not in frame:
        raise DlrunError(f"'{cfg.path}' has no label column '{cfg.label_column}'",
                         f"columns: {', '.join(map(str, frame.columns))}")
    return TextTable(frame[["text", "label"]], Path(str(cfg.path)).stem, str(cfg.path))


@DATA.register("imdb", "IMDB movie reviews from keras.datasets (downloads once)", tags=("text",))
def imdb(cfg) -> TextTable:
    import pandas as pd

    try:
        import keras

        (xtr, ytr), (xte, yte) = keras.datasets.imdb.load_data(num_words=None)
        index = keras.datasets.imdb.get_word_index()
    except Exception as e:  # offline, proxy, broken cache: one line
        raise DlrunError(f"could not load IMDB from keras.datasets ({type(e).__name__})",
                         "it needs the network once; offline use data=text_folder or data=text_reviews") from None
    words = {i + 3: w for w, i in index.items()}  # keras shifts ids by 3 (pad, start, unknown)

    def frame(x, y, limit):
        x, y = x[:limit], y[:limit]
        return pd.DataFrame({"text": [" ".join(words.get(i, "?") for i in seq[1:]) for seq in x],
                             "label": ["positive" if v else "negative" for v in y]})

    limit = int(cfg.get("limit") or 25000)
    return TextTable(frame(xtr, ytr, limit), "imdb", "keras.datasets.imdb", frame(xte, yte, limit))
