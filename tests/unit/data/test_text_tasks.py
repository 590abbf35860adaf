"""The embedded text tasks (data/text_tasks.py): the SCM's captions and questions, and the
training and evaluation examples built from them."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dicap.data import scm
from dicap.data.text_tasks import (
    CAPTION_TEMPLATES,
    QUESTION_TYPES,
    captions,
    check_task,
    evaluation_examples,
    questions,
    training_examples,
)

DATASETS = ("shapes", "digits")


# scm.caption's grammar: what the tiny CLIP was pretrained on
GRAMMAR = re.compile(
    rf"a photo of a ((small|medium|large) )?(({'|'.join(scm.OBJECT_NAMES)}) )?(?P<cls>[a-z]+)"
    rf"( on ({'|'.join(scm.BACKGROUND_NAMES)}))?(, (left|middle|right))?\."
)
factors = st.builds(
    scm.Factors, bg=st.integers(0, len(scm.BACKGROUNDS) - 1), fg=st.integers(0, len(scm.OBJECTS) - 1),
    cx=st.floats(-scm.POSITION_RANGE, scm.POSITION_RANGE), cy=st.floats(-scm.POSITION_RANGE, scm.POSITION_RANGE),
    scale=st.floats(*scm.SCALE_RANGE), texture=st.floats(*scm.TEXTURE_RANGE), noise_seed=st.integers(0, 2**31 - 2),
)
images = st.tuples(st.sampled_from(DATASETS), st.integers(0, 9), factors)


def rows_of(dataset: str, drawn: list[tuple[int, scm.Factors]]) -> pd.DataFrame:
    return pd.DataFrame([{"label": label, **f.__dict__} for label, f in drawn])


@settings(max_examples=200, deadline=None)
@given(images)
def test_every_caption_and_statement_is_a_pretraining_caption_behind_the_context(image):
    """Zero-shot reads "a photo of a <text>.": each such prompt is one scm.caption could write."""
    dataset, label, f = image
    texts = captions(dataset, label, f) + [s for q in questions(dataset, label, f) for s in q.statements]
    cls = scm.class_names(dataset)[label]
    for text in texts:
        match = GRAMMAR.fullmatch(f"a photo of a {text}.")
        assert match, text
    assert all(GRAMMAR.fullmatch(f"a photo of a {t}.")["cls"] == cls for t in captions(dataset, label, f))


@settings(max_examples=200, deadline=None)
@given(images, images)
def test_five_captions_tell_two_images_apart_exactly_when_their_described_factors_differ(a, b):
    """Relevance is text equality, so an image's caption set is its description: equal sets iff
    the same class, colours, size and place."""
    def described(image):
        dataset, label, f = image
        return dataset, label, f.fg, f.bg, scm.size_word(f), scm.horizontal_word(f)

    same_texts = captions(*a) == captions(*b)
    same_words = [scm.class_names(a[0])[a[1]], *described(a)[2:]] == [scm.class_names(b[0])[b[1]], *described(b)[2:]]
    assert same_texts == same_words
    assert len(captions(*a)) == len(CAPTION_TEMPLATES) == len(set(captions(*a)))


@settings(max_examples=200, deadline=None)
@given(images, st.integers(0, 9))
def test_each_question_has_one_right_statement_and_the_counterfactual_changes_every_one(image, other):
    """The true counterfactual (another class, the same factors) falsifies every right
    statement of the original: all name the class, so it is a hard negative for each."""
    dataset, label, f = image
    qs = questions(dataset, label, f)
    assert [q.type for q in qs] == list(QUESTION_TYPES)
    for q in qs:
        assert len(q.statements) == len(q.answers) == len(set(q.statements)) and 0 <= q.answer < len(q.answers)
    if other != label:
        cf = questions(dataset, other, f)
        for q, q_cf in zip(qs, cf):
            assert q.answers[q.answer] != q_cf.answers[q_cf.answer] or q.type != "object"
            assert q.statements[q.answer] != q_cf.statements[q_cf.answer]


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(DATASETS), st.lists(st.tuples(st.integers(0, 9), factors), min_size=1, max_size=12),
       st.integers(0, 2**32 - 1))
def test_examples_point_at_texts_that_describe_their_images(dataset, drawn, seed):
    rows = rows_of(dataset, drawn)
    train = training_examples("retrieval", dataset, rows, seed)
    assert list(train.image) == list(range(len(rows)))
    for e, i in enumerate(train.image):
        assert train.texts[train.label[e]] in captions(dataset, *drawn[i])
    assert training_examples("retrieval", dataset, rows, seed).texts == train.texts  # drawn by the seed alone
    test = evaluation_examples("retrieval", dataset, rows)
    for i, (label, f) in enumerate(drawn):
        assert {test.texts[t] for t in np.flatnonzero(test.relevant[i])} == set(captions(dataset, label, f))
    vqa = training_examples("vqa", dataset, rows, seed)
    assert len(vqa.image) == len(rows) * len(QUESTION_TYPES)
    assert vqa.candidates[np.arange(len(vqa.label)), vqa.label].all()
    for e in range(len(vqa.label)):
        q = questions(dataset, *drawn[vqa.image[e]])[e % len(QUESTION_TYPES)]
        assert {vqa.texts[t] for t in np.flatnonzero(vqa.candidates[e])} == set(q.statements)
        assert vqa.answers[vqa.label[e]] == q.answers[q.answer]


def test_training_captions_change_with_the_seed():
    rng = np.random.default_rng(0)
    drawn = list(zip(rng.integers(0, 10, 40).tolist(), scm.sample_factors(rng, 40)))
    rows = rows_of("shapes", drawn)
    assert training_examples("retrieval", "shapes", rows, 1).label.tolist() != training_examples("retrieval", "shapes", rows, 2).label.tolist()


def test_unknown_task_is_refused_by_name():
    assert check_task("vqa") == "vqa"
    with pytest.raises(ValueError, match="unknown task 'captioning'"):
        check_task("captioning")


def test_examples_refuse_nothing_silently_on_an_empty_split():
    empty = rows_of("shapes", [])
    assert len(training_examples("retrieval", "shapes", empty, 0).texts) == 0
    assert replace(evaluation_examples("vqa", "shapes", empty)).image.size == 0
