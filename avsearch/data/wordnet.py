"""Reading synsets from WordNet 3.0's ``data.noun`` (Debian's ``wordnet-base`` package).

The built-in video-text data (``avclips``) writes its captions from WordNet's synonyms,
hypernyms and glosses, so nothing is downloaded and no library is needed: a data file is
one synset per line,

    synset_offset lex_filenum ss_type w_cnt word lex_id [word lex_id ...] p_cnt
    [pointer_symbol synset_offset pos source/target ...] | gloss

(``wndb(5WN)``): ``w_cnt`` is two hexadecimal digits, ``p_cnt`` three decimal digits, a
word's spaces are underscores, and the offset is the line's byte position in the file, so a
synset is read by seeking to it. License lines at the top start with two spaces.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from avsearch.errors import AvsearchInputError

__all__ = ["DEFAULT_ROOT", "Synset", "read_synset", "parse_synset_line", "hypernym_chain"]

DEFAULT_ROOT = Path("/usr/share/wordnet")
HYPERNYM = "@"                       # pointer symbol of a (class) hypernym


@dataclass(frozen=True)
class Synset:
    """One noun synset: its offset, words (spaces restored), hypernym offsets and gloss
    (definition, and the quoted examples after it)."""

    offset: int
    words: tuple[str, ...]
    hypernyms: tuple[int, ...]
    gloss: str

    @property
    def definition(self) -> str:
        """The gloss before its first ``;`` (the examples follow it)."""
        return self.gloss.split(";")[0].strip()


def parse_synset_line(line: str) -> Synset:
    """A :class:`Synset` from one line of ``data.noun``; ValueError when it is malformed."""
    head, sep, gloss = line.partition(" | ")
    if not sep:
        head, gloss = line.rstrip().rstrip("|"), ""
    fields = head.split()
    offset, pos = int(fields[0]), fields[2]
    if pos != "n":
        raise ValueError(f"synset {fields[0]} is of part of speech {pos!r}, not a noun")
    count = int(fields[3], 16)
    words = tuple(fields[4 + 2 * i].replace("_", " ") for i in range(count))
    at = 4 + 2 * count
    pointers = int(fields[at])
    hypernyms = []
    for i in range(pointers):
        symbol, target, target_pos = fields[at + 1 + 4 * i: at + 4 + 4 * i]
        if symbol == HYPERNYM and target_pos == "n":
            hypernyms.append(int(target))
    return Synset(offset, words, tuple(hypernyms), gloss.strip())


def read_synset(offset: int, root: Path | str | None = None) -> Synset:
    """The noun synset at byte ``offset`` of ``root/data.noun``.

    Raises:
        AvsearchInputError: the file is missing (the message names the Debian package), or
            the offset does not start a synset line.
    """
    path = (Path(root) if root is not None else DEFAULT_ROOT) / "data.noun"
    if not path.exists():
        raise AvsearchInputError(f"{path} not found: WordNet's data come from Debian's "
                                 "wordnet-base package (apt-get install wordnet-base)")
    with open(path, "rb") as f:
        f.seek(offset)
        raw = f.readline()
    try:
        line = raw.decode("utf-8")
        if not line.startswith(f"{offset:08d} "):
            raise ValueError("the offset does not start a synset")
        return parse_synset_line(line)
    except (ValueError, IndexError) as err:
        raise AvsearchInputError(f"{path}: no noun synset at offset {offset:08d} "
                                 f"({err}); is it WordNet 3.0's data.noun?") from None


def hypernym_chain(synset: Synset, depth: int, root: Path | str | None = None) -> list[Synset]:
    """The first hypernym, its first hypernym, ... up to ``depth`` of them."""
    chain: list[Synset] = []
    current = synset
    while len(chain) < depth and current.hypernyms:
        current = read_synset(current.hypernyms[0], root)
        chain.append(current)
    return chain
