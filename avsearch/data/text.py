"""The text modality: captions as padded token ids, or precomputed text features.

A text modality is a :class:`Text` array-like in :attr:`Split.features
<avsearch.data.dataset.Split.features>`, of one of two forms:

* **tokens**: int32 token ids of shape (N, L), id :data:`PAD` (0) after the end of a caption,
  with the :class:`Vocabulary` that made them. Its width in ``Dataset.modalities`` is the
  vocabulary's size (the rows of an embedding table).
* **features**: float32 (N, L, D) precomputed token features (BERT's or CLIP's last layer),
  padded with all-zero rows. Its width is D.

Either way :func:`padding_mask` recovers which positions are real from the values alone
(id != 0, or a row that is not all zero), so a network gets one tensor per modality, as for
every other modality, and needs no second input. A real token feature is never exactly the
zero vector, and :func:`check_text_features` refuses a caption with no real row.

Tokenizing is deliberately simple and deterministic: Unicode NFKC, case-folded, words of
letters and digits (inner apostrophes and hyphens kept: "t-shirt", "men's"); the
vocabulary is built from the training split only, most frequent first (ties
alphabetical), so val and test words it never saw become :data:`UNK`. A regular expression
and a counter are all that takes, so no tokenizer library is pulled in; users who want
subwords bring precomputed features.

Captions on disk are JSON lines (:func:`read_captions`), one object per item:
``{"id": "video7", "text": "a man folds a coat" | ["caption 1", "caption 2"], "labels": [3, 7]}``.
Several texts of one item are joined in order (SPTCH concatenates a video's captions).
"""
from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from avsearch.errors import AvsearchInputError

__all__ = ["PAD", "UNK", "SPECIALS", "tokenize", "Vocabulary", "Text", "is_text", "is_tokens",
           "padding_mask", "Captions", "read_captions", "DEFAULT_MAX_TOKENS"]

PAD, UNK = 0, 1
SPECIALS = ("<pad>", "<unk>")
DEFAULT_MAX_TOKENS = 64
_WORD = re.compile(r"[^\W_]+(?:['\-][^\W_]+)*")


def tokenize(text: str) -> list[str]:
    """The words of ``text``: NFKC-normalised, case-folded runs of letters and digits; an
    apostrophe or hyphen between two such runs stays inside the word."""
    return _WORD.findall(unicodedata.normalize("NFKC", text).casefold())


@dataclass(frozen=True)
class Vocabulary:
    """Token strings by id: ``tokens[0]`` is ``<pad>``, ``tokens[1]`` ``<unk>``."""

    tokens: tuple[str, ...]

    def __post_init__(self) -> None:
        if tuple(self.tokens[:2]) != SPECIALS or len(set(self.tokens)) != len(self.tokens):
            raise ValueError("a vocabulary starts with <pad>, <unk> and repeats no token")
        object.__setattr__(self, "_index", {t: i for i, t in enumerate(self.tokens)})

    @classmethod
    def build(cls, texts: Iterable[str], min_count: int = 1,
              max_size: int | None = None) -> "Vocabulary":
        """The words of ``texts`` seen at least ``min_count`` times, most frequent first (ties
        in alphabetical order), at most ``max_size`` entries including the two specials."""
        if min_count < 1 or (max_size is not None and max_size < 3):
            raise ValueError("min_count >= 1 and max_size >= 3 (two specials and a word)")
        counts = Counter(w for t in texts for w in tokenize(t))
        words = sorted((w for w, c in counts.items() if c >= min_count),
                       key=lambda w: (-counts[w], w))
        if max_size is not None:
            words = words[:max_size - len(SPECIALS)]
        return cls(SPECIALS + tuple(words))

    def __len__(self) -> int:
        return len(self.tokens)

    def ids(self, text: str) -> list[int]:
        """Token ids of ``text``; words outside the vocabulary are :data:`UNK`."""
        index = self._index  # type: ignore[attr-defined]
        return [index.get(w, UNK) for w in tokenize(text)]

    def encode(self, texts: Sequence[str], max_tokens: int = DEFAULT_MAX_TOKENS) -> np.ndarray:
        """int32 ids (N, L) of ``texts``, each cut to ``max_tokens`` and padded with
        :data:`PAD`; L is the longest encoded text (at most ``max_tokens``)."""
        rows = [self.ids(t)[:max_tokens] for t in texts]
        out = np.full((len(rows), max((len(r) for r in rows), default=0)), PAD, np.int32)
        for i, r in enumerate(rows):
            out[i, :len(r)] = r
        return out

    def decode(self, ids: Iterable[int]) -> str:
        """The words of ``ids`` up to the first :data:`PAD`, joined by spaces."""
        words = []
        for i in ids:
            if int(i) == PAD:
                break
            words.append(self.tokens[int(i)])
        return " ".join(words)

    def to_json(self) -> list[str]:
        return list(self.tokens)

    @classmethod
    def from_json(cls, tokens: Sequence[str]) -> "Vocabulary":
        return cls(tuple(tokens))


class Text:
    """A text modality's features: token ids (N, L) with their vocabulary, or precomputed
    features (N, L, D); padded as the module docstring says. Indexing gives the rows as
    stored (int32 ids, or the features' dtype); ``values`` is any array-like (numpy or a
    streaming HDF5 reader)."""

    def __init__(self, values: Any, vocabulary: Vocabulary | None = None):
        rank = len(values.shape)
        if (vocabulary is None) != (rank == 3) or rank not in (2, 3):
            raise ValueError("token ids are (N, L) with a vocabulary; features (N, L, D) without")
        self.values, self.vocabulary = values, vocabulary
        self.shape = tuple(int(s) for s in values.shape)

    @property
    def tokens(self) -> bool:
        return self.vocabulary is not None

    @property
    def width(self) -> int:
        """The modality's width: the vocabulary's size, or the features' D."""
        return len(self.vocabulary) if self.vocabulary is not None else self.shape[2]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: Any) -> np.ndarray:
        return self.values[index]

    def __repr__(self) -> str:
        kind = f"tokens, vocabulary {len(self.vocabulary)}" if self.tokens else "features"
        return f"Text(shape={self.shape}, {kind})"


def is_text(features: Any) -> bool:
    """Whether a split's modality array-like is a text modality (:class:`Text`)."""
    return isinstance(features, Text)


def is_tokens(features: Any) -> bool:
    """Whether it is a text modality of token ids."""
    return isinstance(features, Text) and features.tokens


def padding_mask(x: Any) -> Any:
    """Which positions of a text batch are real: ``x != PAD`` for token ids (n, L), a row
    that is not all zero for features (n, L, D). Works on numpy arrays and torch tensors
    alike; gives (n, L) booleans."""
    return x != PAD if x.ndim == 2 else (x != 0).any(-1)


# ----------------------------------------------------------------------------- captions

@dataclass
class Captions:
    """The captions of one JSON-lines file: per item its id, its text (several texts
    joined) and, when the file has them, its labels (class indices)."""

    path: Path
    ids: list[str]
    texts: list[str]
    labels: list[list[int]] | None

    def __len__(self) -> int:
        return len(self.ids)

    def matrix(self, num_class: int) -> np.ndarray:
        """The labels as an (N, num_class) bool matrix."""
        assert self.labels is not None
        out = np.zeros((len(self), num_class), bool)
        for i, row in enumerate(self.labels):
            out[i, row] = True
        return out


_CAPTION_KEYS = {"id", "text", "labels"}


def _fail(path: Path, line: int, msg: str) -> AvsearchInputError:
    return AvsearchInputError(f"{path}: line {line}: {msg}")


def read_captions(path: str | Path) -> Captions:
    """Read and check a captions file: one JSON object per line with ``id`` (a non-empty
    string, unique in the file), ``text`` (a non-empty string, or a non-empty list of them,
    joined with spaces) and optional ``labels`` (a list of class indices >= 0; on every line
    or on none). Blank lines are skipped. Every problem names the file and line."""
    path = Path(path)
    if not path.is_file():
        raise AvsearchInputError(f"{path}: no such file" if not path.exists()
                                 else f"{path}: is a folder, expected a JSON-lines file")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise AvsearchInputError(f"{path}: cannot read as UTF-8 text: "
                                 f"{' '.join(str(err).split())}") from None
    ids: list[str] = []
    texts: list[str] = []
    labels: list[list[int]] = []
    labelled: bool | None = None
    seen: dict[str, int] = {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise _fail(path, n, f"not valid JSON ({err.msg})") from None
        if not isinstance(obj, dict):
            raise _fail(path, n, "expected a JSON object with 'id' and 'text'")
        extra = set(obj) - _CAPTION_KEYS
        if extra:
            raise _fail(path, n, f"unknown field(s) {', '.join(sorted(extra))} (known: id, "
                                 "text, labels)")
        item = obj.get("id")
        if not isinstance(item, str) or not item.strip():
            raise _fail(path, n, f"'id' must be a non-empty string, got {item!r}")
        if item in seen:
            raise _fail(path, n, f"id {item!r} again (first on line {seen[item]})")
        seen[item] = n
        text = obj.get("text")
        parts = [text] if isinstance(text, str) else text
        if not isinstance(parts, list) or not parts or \
                not all(isinstance(p, str) for p in parts):
            raise _fail(path, n, "'text' must be a string or a non-empty list of strings")
        joined = " ".join(p.strip() for p in parts if p.strip())
        if not tokenize(joined):
            raise _fail(path, n, f"item {item!r} has no words in its text")
        has = "labels" in obj
        if labelled is None:
            labelled = has
        elif has != labelled:
            raise _fail(path, n, "'labels' must be on every line or on none "
                                 f"({'missing here' if labelled else 'absent above'})")
        if has:
            row = obj["labels"]
            if not isinstance(row, list) or not all(
                    isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in row):
                raise _fail(path, n, f"'labels' must be a list of class indices >= 0, "
                                     f"got {row!r}")
            labels.append(sorted(set(row)))
        ids.append(item)
        texts.append(joined)
    if not ids:
        raise AvsearchInputError(f"{path}: no captions")
    return Captions(path, ids, texts, labels if labelled else None)
