"""The text tasks (retrieval, VQA): the SCM's captions and questions, their scoring, the masked
loss, the tables and the guards on methods."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dicap.config import ConfigError, validate_config, with_defaults
from dicap.data import scm
from dicap.data.text_tasks import (CAPTION_TEMPLATES, QUESTION_TYPES, captions, check_task, questions, evaluation_examples,
                                   training_examples)
from dicap.evaluation.text_metrics import recall_at, retrieval_scores, vqa_scores
from dicap.prompting.methods import check_text_task_method
from dicap.report.text_tables import build_task_table, task_markdown

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


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 8), st.integers(1, 12), st.integers(0, 10_000))
def test_recall_grows_with_k_and_is_complete_at_every_item(n_queries, n_items, seed):
    rng = np.random.default_rng(seed)
    sims = torch.from_numpy(rng.normal(size=(n_queries, n_items)).astype(np.float32))
    relevant = rng.random((n_queries, n_items)) < 0.3
    relevant[np.arange(n_queries), rng.integers(0, n_items, n_queries)] = True
    hits = recall_at(sims, relevant, [1, 2, 5, n_items])
    assert (hits[1] <= hits[2]).all() and (hits[2] <= hits[5]).all() and hits[n_items].all()
    best = sims.argmax(1).numpy()
    assert (hits[1] == relevant[np.arange(n_queries), best]).all()


def test_retrieval_scores_both_ways():
    """Two images, three texts: image 0 matches texts 0 and 1, image 1 text 2."""
    relevant = np.array([[True, True, False], [False, False, True]])
    perfect = torch.tensor([[0.9, 0.8, 0.1], [0.1, 0.2, 0.9]])
    swapped = torch.tensor([[0.1, 0.2, 0.9], [0.9, 0.8, 0.1]])
    groups = {"base": np.array([True, False]), "novel": np.array([False, True])}
    assert retrieval_scores(perfect, relevant, groups, [1])["i2t_r1"] == 100 and retrieval_scores(perfect, relevant, groups, [1])["t2i_r1"] == 100
    worst = retrieval_scores(swapped, relevant, groups, [1, 2])
    assert worst["i2t_r1"] == 0 and worst["t2i_r1"] == 0 and worst["i2t_r2"] == 50 and worst["base_i2t_r2"] == 100 and worst["novel_i2t_r2"] == 0
    with pytest.raises(ValueError, match="relevant"):
        retrieval_scores(perfect, np.array([[True, True, False], [False, False, False]]), groups, [1])


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10_000))
def test_vqa_picks_only_among_each_questions_candidates(seed):
    rng = np.random.default_rng(seed)
    n_q, n_t = 12, 9
    candidates = rng.random((n_q, n_t)) < 0.4
    candidates[np.arange(n_q), rng.integers(0, n_t, n_q)] = True
    label = np.array([rng.choice(np.flatnonzero(c)) for c in candidates])
    sims = torch.from_numpy(rng.normal(size=(n_q, n_t)).astype(np.float32))
    kind = np.array(["a", "b", "c"] * 4)
    answers = [f"answer {t}" for t in range(n_t)]
    scores = vqa_scores(sims, candidates, label, kind, answers, {"all": np.ones(n_q, bool)})
    masked = np.where(candidates, sims.numpy(), -np.inf).argmax(1)
    assert scores["top1"] == pytest.approx(100 * (masked == label).mean())
    assert scores["vqa_accuracy"] == pytest.approx(scores["top1"]) == pytest.approx(scores["all_accuracy"])
    assert np.mean([scores[f"{k}_accuracy"] for k in "abc"]) == pytest.approx(scores["top1"])
    oracle = torch.from_numpy(np.eye(n_t, dtype=np.float32)[label])
    assert vqa_scores(oracle, candidates, label, kind, answers, {})["top1"] == 100


def test_masked_cross_entropy_ignores_texts_outside_the_candidates(clip_model):
    """A VQA example's loss and gradient are those of its own statements alone."""
    from helpers import NAMES, tokenize

    from dicap.prompting.learner import PromptLearner, cosine
    from dicap.prompting.methods import parse_method
    from dicap.prompting.trainer import batch_losses

    names = [*NAMES, "ring", "bar"]  # five texts, three of them each example's candidates
    learner = PromptLearner(clip_model, tokenize, names, 4, None)
    x = torch.nn.functional.normalize(torch.randn(6, 32), dim=-1)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    mask = torch.zeros(6, len(names), dtype=torch.bool)
    mask[:, :3] = True
    spec = parse_method("coop")
    terms = batch_losses(learner, spec, x, y, None, None, torch.arange(6), {}, 10.0, mask)
    sims = cosine(x, learner.class_features(x))
    expected = torch.nn.functional.cross_entropy(10.0 * sims[:, :3], y)
    assert terms["ce"][1].item() == pytest.approx(expected.item(), rel=1e-5)
    unmasked = batch_losses(learner, spec, x, y, None, None, torch.arange(6), {}, 10.0)
    assert unmasked["ce"][1].item() > terms["ce"][1].item()  # the two other texts add to the softmax's denominator


@pytest.mark.parametrize("method", ["zeroshot", "coop", "kgcoop", "dicap", "dicap_kgcoop"])
def test_text_tasks_take_learners_with_one_prompt_per_text(method):
    assert check_text_task_method(method).name == method


@pytest.mark.parametrize("method", ["cocoop", "maple", "cpl", "dicap_pos", "dicap_cocoop", "dicap_maple", "dicap_pos_kgcoop"])
def test_text_tasks_refuse_per_image_learners_and_the_positive_term(method):
    with pytest.raises(ValueError, match=f"method '{method}' cannot run a text task"):
        check_text_task_method(method)
    config = with_defaults({"tasks": {"methods": ["zeroshot", method]}})
    with pytest.raises(ConfigError, match="tasks.methods"):
        validate_config(config)


def test_unknown_task_is_refused_by_name():
    assert check_task("vqa") == "vqa"
    with pytest.raises(ValueError, match="unknown task 'captioning'"):
        check_task("captioning")


def test_task_table_mean_and_std_over_seeds(tmp_path):
    files = []
    for seed, r1 in ((1, 40.0), (2, 60.0)):
        path = tmp_path / "tasks" / "retrieval" / "metrics" / "shapes" / f"seed{seed}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame([{"method": "zeroshot", "seed": seed, "i2t_r1": 30.0, "split": "test_unbiased"},
                      {"method": "dicap", "seed": seed, "i2t_r1": r1, "split": "test_unbiased"}]).to_csv(path, index=False)
        files.append(path)
    table = build_task_table("retrieval", "embedded", ["shapes"], files)
    assert list(table["method"]) == ["zeroshot", "dicap"]
    dicap = table.set_index("method").loc["dicap"]
    assert dicap["i2t_r1"] == 50 and dicap["i2t_r1_std"] == pytest.approx(np.std([40, 60], ddof=1), abs=1e-4) and dicap["seeds"] == "1 2"
    assert "50.00 ± 14.14" in task_markdown("retrieval", table)
    with pytest.raises(ValueError, match="not a vqa metrics file"):
        build_task_table("vqa", "embedded", ["shapes"], files)
    moved = tmp_path / "tasks" / "retrieval" / "metrics" / "shapes" / "seed3.csv"
    moved.write_bytes(files[0].read_bytes())
    with pytest.raises(ValueError, match="its path says seed 3"):
        build_task_table("retrieval", "embedded", ["shapes"], [moved])


def test_examples_refuse_nothing_silently_on_an_empty_split():
    empty = rows_of("shapes", [])
    assert len(training_examples("retrieval", "shapes", empty, 0).texts) == 0
    assert replace(evaluation_examples("vqa", "shapes", empty)).image.size == 0
