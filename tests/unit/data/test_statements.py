"""The rule-based statements (data/statements.py) that turn a question and an answer into a text."""

from __future__ import annotations

import pytest

from dicap.data.statements import declarative, statement

# --- statements -------------------------------------------------------------------------------

STATEMENTS = [
    ("Is the man holding a bat?", "yes", "the man is holding a bat."),
    ("Is the man holding a bat?", "no", "the man is not holding a bat."),
    ("Is the sky blue?", "yes", "the sky is blue."),
    ("Is the red car parked?", "no", "the red car is not parked."),
    ("Is this a kitchen?", "yes", "this is a kitchen."),
    ("Is this man happy?", "no", "this man is not happy."),
    ("Is it raining?", "yes", "it is raining."),
    ("Are there any clouds?", "no", "there are not any clouds."),
    ("Does the man have a hat?", "no", "the man does not have a hat."),
    ("Can you see the ocean?", "yes", "you can see the ocean."),
    ("What color is the cat?", "Black", "the cat is black."),
    ("What color are the walls?", "white", "the walls are white."),
    ("What colour is the man's shirt?", "blue", "the man's shirt is blue."),
    ("What color?", "red", "the color is red."),
    ("How many dogs are there?", "2", "there are 2 dogs."),
    ("How many people are in the picture?", "3", "there are 3 people in the picture."),
    ("How many people are sitting on the bench?", "1", "there is 1 people sitting on the bench."),
    ("How many players does the team have?", "11", "the number of players is 11."),
    ("What is the man holding?", "kite", "the man is holding kite."),
    ("What are the people watching?", "tv", "the people are watching tv."),
    ("What is the woman doing?", "surfing", "the woman is surfing."),
    ("What is the name of the street?", "main st", "the name of the street is main st."),
    ("Where is the cat?", "on bed", "the cat is on bed."),
    ("Where are the people?", "beach", "the people are in beach."),
    ("Which hand is he using?", "left", "left."),
    ("Who is in the photo?", "man", "man."),
    ("What sport is this?", "tennis", "tennis."),
    ("Is the man holding a bat?", "maybe", "maybe."),
]


@pytest.mark.parametrize("question, answer, expected", STATEMENTS)
def test_declarative_by_question_type(question, answer, expected):
    assert declarative(question, answer) == expected
    assert statement(question, answer) == f"{question} {expected}"


def test_statements_are_deterministic_and_refuse_an_empty_answer():
    assert [statement(q, a) for q, a, _ in STATEMENTS] == [statement(q, a) for q, a, _ in STATEMENTS]
    with pytest.raises(ValueError, match="empty answer"):
        declarative("What color is the cat?", "  ")
