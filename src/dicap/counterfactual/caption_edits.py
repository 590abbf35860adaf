"""Edited captions: the counterfactual *text* for image-text retrieval and VQAv2 (Tables 2 and 3).

Flickr30k, MSCOCO captions and VQAv2 have no class labels.  A counterfactual there is made
by inverting an image with its own caption and regenerating it with an *edited* caption
whose main object noun is swapped for the nearest other object term (by CLIP text
features, as the classification suite's ``similarity`` sampling picks ``y_cf``).  The latent
diffusion generator already conditions on any list of texts, so the captions and their
edits become its "class names" with template ``"{}"``:

    swap = swap_table(OBJECT_TERMS, clip_text_features_of_the_terms)
    table = prompt_table(captions, swap)
    bundle = load_latent_diffusion(checkpoint, table.names, "{}", ...)
    rows = rows.iloc[table.kept].assign(label=table.labels)
    generate(store, rows, table.targets, bundle, guide, params)

The object vocabulary (:mod:`dicap.data.vocabulary`) is the 80 MS-COCO categories plus a few
common caption words for them.  Matching is purely lexical, on purpose: it is deterministic,
needs no tagger, and is easy to audit.  Its known limits: the *first* mention wins even
when it is not the head noun (in "an orange cat", "orange" the fruit is what is swapped);
a word in a hyphenated compound ("cat-like") is not a mention; and nouns whose plural is
the singular ("sheep", "scissors") always count as singular.
"""

from __future__ import annotations

import re
from typing import Mapping, NamedTuple, Sequence

import numpy as np

from dicap.counterfactual.sampling import nearest_other
from dicap.data.vocabulary import OBJECT_TERMS, SYNONYMS

# Plurals the ``s``/``es``/``ies`` rule gets wrong; a word mapped to itself never changes.
IRREGULAR_PLURALS: dict[str, str] = {
    "person": "people", "man": "men", "woman": "women", "child": "children",
    "knife": "knives", "mouse": "mice", "sheep": "sheep", "scissors": "scissors",
}

VOWELS = "aeiou"


def pluralise(word: str) -> str:
    """The plural of a (lower-case) term or synonym; a multi-word term pluralises its last word.

    Irregular ones from :data:`IRREGULAR_PLURALS`; otherwise ``-es`` after s/x/z/ch/sh
    ("bus" -> "buses"), ``-ies`` after a consonant + y ("puppy" -> "puppies"), else ``-s``.
    """
    head, _, last = word.rpartition(" ")
    if last in IRREGULAR_PLURALS:
        plural = IRREGULAR_PLURALS[last]
    elif last.endswith(("s", "x", "z", "ch", "sh")):
        plural = last + "es"
    elif len(last) > 1 and last.endswith("y") and last[-2] not in VOWELS:
        plural = last[:-1] + "ies"
    else:
        plural = last + "s"
    return f"{head} {plural}" if head else plural


def _surfaces() -> dict[str, tuple[str, bool]]:
    """Every matchable surface form -> (canonical term, is it plural).

    Singular forms go in first, so a word whose plural is itself ("sheep") is singular.
    Refuses (at import) a vocabulary in which one form would name two terms.
    """
    unknown = set(SYNONYMS.values()) - set(OBJECT_TERMS)
    if unknown:
        raise ValueError(f"SYNONYMS map to non-terms {sorted(unknown)}")
    words = [(t, t) for t in OBJECT_TERMS] + list(SYNONYMS.items())
    out: dict[str, tuple[str, bool]] = {}
    for plural in (False, True):
        for word, term in words:
            form = pluralise(word) if plural else word
            if form in out and out[form][0] != term:
                raise ValueError(f"caption word {form!r} would name both {out[form][0]!r} and {term!r}")
            out.setdefault(form, (term, plural))
    return out


SURFACES: dict[str, tuple[str, bool]] = _surfaces()

# Longest form first: at one position the alternation takes the first that matches, so
# "hot dog" wins over "dog".  A mention may not touch a word character or a hyphen on
# either side ("category" is not "cat"; "cat-like" is no cat); "dog's" is a dog.
_MENTION = re.compile(
    r"(?<![\w-])("
    + "|".join(r"\s+".join(map(re.escape, f.split(" "))) for f in sorted(SURFACES, key=len, reverse=True))
    + r")(?![\w-])",
    re.IGNORECASE,
)
_ARTICLE = re.compile(r"(?<![\w-])(an?)(\s+)$", re.IGNORECASE)


class Mention(NamedTuple):
    """One object mention: its character span in the caption, canonical term, and number."""

    start: int
    end: int
    term: str
    plural: bool


def find_mention(caption: str) -> Mention | None:
    """The first (leftmost, then longest) object mention in ``caption``, or None."""
    match = _MENTION.search(caption)
    if match is None:
        return None
    term, plural = SURFACES[" ".join(match.group(1).lower().split())]
    return Mention(match.start(1), match.end(1), term, plural)


def find_object(caption: str) -> tuple[int, int, str] | None:
    """``(start, end, term)`` of the first object mention in ``caption``, or None.

    Case-insensitive, on word boundaries, longest match first ("hot dog" beats "dog"),
    plurals ("dogs", "buses", "people") and :data:`SYNONYMS` ("man" -> "person") accepted.
    """
    mention = find_mention(caption)
    return None if mention is None else (mention.start, mention.end, mention.term)


def swap_table(terms: Sequence[str], text_features: np.ndarray) -> dict[str, str]:
    """Each term's nearest *other* term by cosine similarity of ``text_features``.

    Row ``i`` of ``text_features`` (e.g. CLIP's text embedding of ``"a photo of a {term}."``)
    belongs to ``terms[i]``.  The nearest other term is the hardest plausible alternative,
    as the paper's ``similarity`` sampling picks ``y_cf`` for classification.
    """
    terms = list(terms)
    features = np.asarray(text_features, dtype=np.float64)
    if features.ndim != 2 or len(features) != len(terms):
        raise ValueError(f"text_features of shape {features.shape} do not give one row to each of {len(terms)} terms")
    if len(set(terms)) != len(terms):
        raise ValueError("terms must be distinct")
    if len(terms) < 2:
        raise ValueError("a swap needs at least two terms")
    nearest = nearest_other(features, list(range(len(terms))))
    return {terms[i]: terms[j] for i, j in nearest.items()}


def _article(article: str, word: str) -> str:
    """``a``/``an`` agreeing with ``word``'s first letter, in ``article``'s first-letter case."""
    new = "an" if word[:1].lower() in VOWELS else "a"
    return new.capitalize() if article[:1].isupper() else new


def edit_caption(caption: str, swap: Mapping[str, str]) -> str | None:
    """``caption`` with its first object mention replaced by that term's ``swap`` partner.

    The replacement keeps the mention's number (plural in, plural out, via
    :func:`pluralise`) and the case of its first letter; an article ``a``/``an`` directly
    before the mention is made to agree with the new word ("a dog" -> "an elephant").
    Everything else is left byte for byte, so the edit differs from the source only in
    the object.  None when the caption names no object term.  A term missing from ``swap``
    raises ``KeyError``: the table should cover the whole vocabulary.
    """
    mention = find_mention(caption)
    if mention is None:
        return None
    if mention.term not in swap:
        raise KeyError(f"no swap partner for object term {mention.term!r}")
    new = swap[mention.term]
    new = pluralise(new) if mention.plural else new
    if caption[mention.start].isupper():
        new = new[:1].upper() + new[1:]
    head = caption[: mention.start]
    article = _ARTICLE.search(head)
    if article is not None:
        head = head[: article.start(1)] + _article(article.group(1), new) + article.group(2)
    return head + new + caption[mention.end :]


class PromptTable(NamedTuple):
    """What the latent generator needs for a batch of captioned images.

    ``names``: distinct texts, the source captions (first-appearance order) then the edits
    not already among them; pass as ``class_names`` with template ``"{}"``.  ``labels`` and
    ``targets`` (int64, one per kept row) index ``names``: each kept row's own caption and
    its edit, i.e. ``rows["label"]`` and ``targets`` of ``generate``.  ``kept`` are the
    positions (into the input captions) of those rows, in order; ``dropped`` the positions
    of the captions that name no object term and so have no counterfactual.
    """

    names: list[str]
    labels: np.ndarray
    targets: np.ndarray
    kept: np.ndarray
    dropped: np.ndarray


def prompt_table(captions: Sequence[str], swap: Mapping[str, str]) -> PromptTable:
    """Source and edited captions as one prompt table, with label/target indices per row."""
    edits = [edit_caption(c, swap) for c in captions]
    kept = [i for i, e in enumerate(edits) if e is not None]
    index: dict[str, int] = {}
    for i in kept:
        index.setdefault(captions[i], len(index))
    for i in kept:
        index.setdefault(edits[i], len(index))
    return PromptTable(
        names=list(index),
        labels=np.array([index[captions[i]] for i in kept], dtype=np.int64),
        targets=np.array([index[edits[i]] for i in kept], dtype=np.int64),
        kept=np.array(kept, dtype=np.int64),
        dropped=np.array([i for i, e in enumerate(edits) if e is None], dtype=np.int64),
    )


class RowPrompts(NamedTuple):
    """A shard's prompts for :func:`dicap.counterfactual.generate.generate`, one entry per row.

    ``names`` are the distinct texts (the latent model's "class names", template ``"{}"``);
    ``labels[i]`` indexes row ``i``'s own text and ``targets[i]`` its edit.  A text that names
    no object cannot be edited: its target is its own label (the round trip, no
    intervention) and ``edited[i]`` is False, so the trainer drops it from DiCap's term.
    """

    names: list[str]
    labels: np.ndarray
    targets: np.ndarray
    edited: np.ndarray


def row_prompts(texts: Sequence[str], swap: Mapping[str, str]) -> RowPrompts:
    """:func:`prompt_table` for every row, the unedited ones kept with themselves as target."""
    table = prompt_table(texts, swap)
    index = {name: i for i, name in enumerate(table.names)}
    for i in table.dropped:
        index.setdefault(texts[i], len(index))
    labels = np.array([index[t] for t in texts], dtype=np.int64)
    targets = labels.copy()
    targets[table.kept] = table.targets
    edited = np.zeros(len(texts), dtype=bool)
    edited[table.kept] = True
    return RowPrompts(list(index), labels, targets, edited)
