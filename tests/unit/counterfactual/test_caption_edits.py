"""Edited captions (issue 15): over many captions generated from templates, an edit swaps
exactly the first object mention for its partner, keeping number, case and article
agreement, and nothing else; swap tables follow the text features; prompt tables index
the right texts; and the latent generator accepts such a table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dicap.counterfactual.caption_edits import (
    OBJECT_TERMS,
    SURFACES,
    SYNONYMS,
    edit_caption,
    find_mention,
    find_object,
    pluralise,
    prompt_table,
    row_prompts,
    swap_table,
)

ADJECTIVES = ["small", "large", "red", "old", "young", "happy", "wet", "shiny", "brown", "empty"]
VERBS = ["sitting on", "standing near", "lying in", "next to", "parked by", "resting beside"]


# places and words that contain a term as a mere substring ("category" holds "cat")
PLACES = ["the grass", "a street", "the beach", "a category of things", "the carpet", "a cartoon scene",
          "the scattered leaves", "a busy corner", "a dogmatic crowd", "the bedroom", "a cupboard",
          "the bowling alley", "a pizzeria", "the trainers", "a cakewalk", "the forklift area", "a tiebreak",
          "the cowboy's ranch", "a horseshoe", "the sinking ship", "a cat-like shadow"]
NUMBERS = ["two", "three", "some", "many"]
FORMS = sorted(SURFACES)  # every matchable word: terms, synonyms, and their plurals


def _swap(seed: int) -> dict[str, str]:
    """A random derangement of the terms: every term has a partner that is another term."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(OBJECT_TERMS))
    return {OBJECT_TERMS[order[i]]: OBJECT_TERMS[order[(i + 1) % len(order)]] for i in range(len(order))}


@st.composite
def captions(draw):
    """(caption, prefix, mention, suffix, article directly before?) from a few templates."""
    form = draw(st.sampled_from(FORMS))
    _, plural = SURFACES[form]
    mention = form.capitalize() if draw(st.booleans()) else form
    suffix = f" {draw(st.sampled_from(VERBS))} {draw(st.sampled_from(PLACES))}{draw(st.sampled_from(['.', '', '!']))}"
    template = draw(st.sampled_from(["bare", "number", "article", "article_adj"] if plural or form in ("sheep", "scissors")
                                    else ["bare", "article", "article_adj"]))
    article = draw(st.sampled_from(["a", "an", "A", "An"]))
    prefix = {
        "bare": "",
        "number": f"{draw(st.sampled_from(NUMBERS))} ",
        "article": f"{article} ",
        "article_adj": f"{article} {draw(st.sampled_from(ADJECTIVES))} ",
    }[template]
    if template == "bare" and draw(st.booleans()):
        prefix = f"{draw(st.sampled_from(ADJECTIVES)).capitalize()} "
    return prefix + mention + suffix, prefix, mention, suffix, template == "article"


@settings(max_examples=400, deadline=None)
@given(captions(), st.integers(0, 2**16))
def test_an_edit_swaps_exactly_the_first_object_mention(case, seed):
    caption, prefix, mention, suffix, article_before = case
    swap = _swap(seed)
    term, plural = SURFACES[mention.lower()]
    assert find_object(caption) == (len(prefix), len(prefix) + len(mention), term)
    edited = edit_caption(caption, swap)
    assert edited is not None and edited != caption
    # the words after the mention, substrings of terms included, are left byte for byte
    assert edited.endswith(suffix)
    word = pluralise(swap[term]) if plural else swap[term]
    if mention[0].isupper():
        word = word[0].upper() + word[1:]
    if article_before:  # the article agrees with the new word, in its own case
        new_article = "an" if word[0].lower() in "aeiou" else "a"
        new_article = new_article.capitalize() if prefix[0].isupper() else new_article
        assert edited == f"{new_article} {word}{suffix}"
    else:  # an article before an adjective agrees with the adjective: untouched
        assert edited == prefix + word + suffix
    # the edit names the partner at the same place, in the same number
    again = find_mention(edited)
    assert again.term == swap[term] and again.start == len(edited) - len(suffix) - len(word)
    if swap[term] not in ("sheep", "scissors"):  # their plural is the singular
        assert again.plural == plural


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(ADJECTIVES + VERBS + PLACES + ["the", "of", "with", "catalogue", "Category",
                                                            "cartwheel", "bust", "tied", "sinkhole"]), max_size=8))
def test_captions_without_a_term_give_none(words):
    caption = " ".join(words)
    assert find_object(caption) is None and find_mention(caption) is None
    assert edit_caption(caption, _swap(0)) is None


@pytest.mark.parametrize(("caption", "expected"), [
    ("a hot dog on a plate", (2, 9, "hot dog")),  # longest first: not "dog"
    ("A HOT  DOG stand", (2, 10, "hot dog")),  # any case, any run of spaces between the words
    ("two buses and a dog", (4, 9, "bus")),
    ("people crossing the street", (0, 6, "person")),
    ("a man holding a tennis racket", (2, 5, "person")),  # the first mention, not the last
    ("a cat-like toy on a bench", (20, 25, "bench")),  # a hyphenated compound is no mention
    ("the dog's bowl", (4, 7, "dog")),
    ("the category of items", None),
    ("three knives on the cutting board", (6, 12, "knife")),
])
def test_find_object_examples(caption, expected):
    assert find_object(caption) == expected


@pytest.mark.parametrize(("word", "plural"), [
    ("dog", "dogs"), ("bus", "buses"), ("bench", "benches"), ("person", "people"), ("knife", "knives"),
    ("hot dog", "hot dogs"), ("wine glass", "wine glasses"), ("puppy", "puppies"), ("boy", "boys"),
    ("sheep", "sheep"), ("scissors", "scissors"), ("mouse", "mice"),
])
def test_pluralise(word, plural):
    assert pluralise(word) == plural


def test_edit_examples():
    swap = {"dog": "elephant", "elephant": "dog", "person": "umbrella", "bus": "person", "hot dog": "sandwich"}
    assert edit_caption("A dog runs.", swap) == "An elephant runs."
    assert edit_caption("an elephant and a dog", swap) == "a dog and a dog"
    assert edit_caption("Two men talking", swap) == "Two umbrellas talking"
    assert edit_caption("Buses parked", swap) == "People parked"
    assert edit_caption("a hot dog with mustard", swap) == "a sandwich with mustard"
    assert edit_caption("a small dog", swap) == "a small elephant"  # the article belongs to "small"
    with pytest.raises(KeyError, match="cat"):
        edit_caption("a cat", swap)


def test_vocabulary():
    assert len(OBJECT_TERMS) == 80 == len(set(OBJECT_TERMS))
    assert all(t == t.lower().strip() for t in OBJECT_TERMS)
    assert {"traffic light", "hot dog", "teddy bear", "toothbrush", "person"} <= set(OBJECT_TERMS)
    assert set(SYNONYMS.values()) <= set(OBJECT_TERMS)
    assert {SYNONYMS[w] for w in ("man", "woman", "boy", "girl", "child")} == {"person"}
    assert (SYNONYMS["bike"], SYNONYMS["puppy"], SYNONYMS["kitten"]) == ("bicycle", "dog", "cat")


# --- swap tables ---------------------------------------------------------------------------------------


def test_swap_table_picks_the_most_similar_other_term():
    terms = ["dog", "cat", "car", "truck", "apple"]
    features = np.array([
        [1.0, 0.0, 0.0],
        [0.9, 0.1, 0.0],  # cat ~ dog
        [0.0, 1.0, 0.0],
        [0.0, 5.0, 0.5],  # truck ~ car; its length must not matter (cosine)
        [0.5, 0.0, 1.0],  # apple: nearest is dog (cos .45) before cat (.44)
    ])
    assert swap_table(terms, features) == {"dog": "cat", "cat": "dog", "car": "truck", "truck": "car", "apple": "dog"}


@settings(max_examples=50, deadline=None)
@given(st.integers(2, 80), st.integers(0, 2**16))
def test_swap_table_never_maps_a_term_to_itself(n, seed):
    terms = list(OBJECT_TERMS[:n])
    features = np.random.default_rng(seed).normal(size=(n, 6))
    swap = swap_table(terms, features)
    assert set(swap) == set(terms) and all(swap[t] != t and swap[t] in terms for t in terms)
    f = features / np.linalg.norm(features, axis=1, keepdims=True)
    sim = f @ f.T
    for i, t in enumerate(terms):
        j = terms.index(swap[t])
        assert sim[i, j] >= max(sim[i, k] for k in range(n) if k != i) - 1e-12


def test_swap_table_refuses_mismatched_inputs():
    with pytest.raises(ValueError, match="one row"):
        swap_table(["dog", "cat"], np.eye(3))
    with pytest.raises(ValueError, match="distinct"):
        swap_table(["dog", "dog"], np.eye(2))
    with pytest.raises(ValueError, match="two terms"):
        swap_table(["dog"], np.eye(1))


# --- prompt tables -------------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(captions().map(lambda c: c[0]), st.sampled_from(["the grass", "a busy corner", ""])),
                max_size=12), st.integers(0, 2**16))
def test_prompt_table_indices_point_at_the_right_texts(caps, seed):
    swap = _swap(seed)
    table = prompt_table(caps, swap)
    edits = [edit_caption(c, swap) for c in caps]
    assert table.kept.tolist() == [i for i, e in enumerate(edits) if e is not None]
    assert table.dropped.tolist() == [i for i, e in enumerate(edits) if e is None]
    assert len(table.labels) == len(table.targets) == len(table.kept)
    assert table.labels.dtype == table.targets.dtype == np.int64
    assert len(set(table.names)) == len(table.names)  # distinct prompts
    for row, i in enumerate(table.kept):
        assert table.names[table.labels[row]] == caps[i]
        assert table.names[table.targets[row]] == edits[i]
    # the sources come first, in first-appearance order
    sources = list(dict.fromkeys(caps[i] for i in table.kept))
    assert table.names[: len(sources)] == sources
    assert set(table.names) == set(sources) | {edits[i] for i in table.kept}


def test_prompt_table_reuses_an_edit_that_is_also_a_source():
    swap = {"dog": "cat", "cat": "dog"}
    table = prompt_table(["a dog runs", "the grass", "a cat runs", "a dog runs"], swap)
    assert table.names == ["a dog runs", "a cat runs"]
    assert table.labels.tolist() == [0, 1, 0] and table.targets.tolist() == [1, 0, 1]
    assert table.kept.tolist() == [0, 2, 3] and table.dropped.tolist() == [1]


def test_prompt_table_of_no_objects_is_empty():
    table = prompt_table(["the grass", "a busy corner"], {"dog": "cat"})
    assert table.names == [] and table.labels.shape == (0,) and table.dropped.tolist() == [0, 1]


# --- the generator accepts a caption prompt table --------------------------------------------------------


@pytest.mark.usefixtures("single_thread")
def test_the_latent_generator_runs_on_a_caption_table(tmp_path):
    pytest.importorskip("diffusers")
    from dicap.backbones.guides import make_guide
    from dicap.backbones.latent_diffusion import load_latent_diffusion
    from dicap.counterfactual import generate
    from dicap.testing.tiny_models import save_latent_checkpoint
    from latent_stand_ins import StandInTextEncoder, TinyStore
    from latent_stand_ins import pixels as _pixels

    caps = ["A dog on the grass.", "the category of things", "two buses parked by a street", "a hot dog on a plate"]
    swap = swap_table(OBJECT_TERMS, np.random.default_rng(0).normal(size=(len(OBJECT_TERMS), 8)))
    table = prompt_table(caps, swap)
    assert table.dropped.tolist() == [1]
    encoder = StandInTextEncoder()
    bundle = load_latent_diffusion(save_latent_checkpoint(tmp_path), table.names, "{}", device="cpu", text_encoder=encoder)
    assert bundle.n_classes == len(table.names) == 6
    store = TinyStore(_pixels(len(caps), seed=7))
    rows = pd.DataFrame({"row": np.arange(len(caps)), "split": "train", "index": np.arange(len(caps))}).iloc[table.kept]
    rows = rows.assign(label=table.labels)
    guide = make_guide("cfg", bundle, cfg_posterior="diffusion")
    params = {"steps": 3, "inversion_depth": 0.5, "batch_size": 2, "guidance_scale": 2.0, "guide": "cfg",
              "sampling": "similarity", "reconstruction_fraction": 0.0}
    arrays, out = generate.generate(store, rows, table.targets, bundle, guide, params)
    assert arrays["images"].shape == (3, 16, 16, 3)
    assert out["y"].tolist() == table.labels.tolist() and out["y_cf"].tolist() == table.targets.tolist()
    assert out["row"].tolist() == table.kept.tolist()
    # each row's prompt embedding is its caption's, its target's the edited caption's
    expected = encoder([table.names[int(y)] for y in table.targets])
    np.testing.assert_allclose(bundle.prompt_embeddings[table.targets].numpy(), expected.numpy(), rtol=1e-6)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from(["a dog runs", "the grass", "two men walk", "A cat sleeps", "a dog runs",
                                 "a quiet corner", "three buses stop"]), max_size=12))
def test_row_prompts_give_every_row_its_own_text_and_an_edit_or_itself(texts):
    swap = {"dog": "cat", "cat": "dog", "person": "bicycle", "bus": "truck"}
    swap |= {t: "person" for t in OBJECT_TERMS if t not in swap}
    rows = row_prompts(texts, swap)
    assert len(rows.labels) == len(rows.targets) == len(rows.edited) == len(texts)
    assert len(set(rows.names)) == len(rows.names)
    for i, text in enumerate(texts):
        edit = edit_caption(text, swap)
        assert rows.names[rows.labels[i]] == text
        assert rows.edited[i] == (edit is not None)
        assert rows.names[rows.targets[i]] == (edit if edit is not None else text)
