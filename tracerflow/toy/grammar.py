"""The toy corpus: a seeded synthetic grammar of indirect-object (IOI) sentences.

    Mary and John went to the store, John gave a drink to Mary.

Prompts end right before the indirect object, the name that is not repeated; held-out sentences
use name pairs never seen in training. Why this grammar: docs/toy.md.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

NAMES = (
    "Mary", "John", "Alice", "Bob", "Tom", "Sarah", "James", "Anna",
    "David", "Emma", "Paul", "Lucy", "Mark", "Kate", "Peter", "Laura",
)  # fmt: skip
PLACES = (
    "store", "park", "school", "beach", "market", "office", "station", "garden",
)  # fmt: skip
OBJECTS = ("drink", "book", "ball", "gift", "letter", "cake", "key", "ring")
# {a} and {b} are the two names in order of mention; {s} is the subject (the repeated name).
TEMPLATES = (
    "{a} and {b} went to the {place}, {s} gave a {obj} to",
    "When {a} and {b} went to the {place}, {s} gave a {obj} to",
    "{a} and {b} were at the {place}. {s} handed the {obj} to",
    "Then {a} and {b} had a long day at the {place}, and {s} gave a {obj} to",
    "After {a} and {b} met at the {place}, {s} passed the {obj} to",
)
NOTEBOOK_PROMPT = "Mary and John went to the store, John gave a drink to"
BUILTIN_PROMPTS = (
    NOTEBOOK_PROMPT,
    "When Alice and Bob went to the park, Bob gave a ball to",
    "Sarah and Tom were at the school. Sarah handed the book to",
    "Then Emma and David had a long day at the beach, and David gave a cake to",
    "After Lucy and Paul met at the market, Lucy passed the letter to",
    "Kate and Mark went to the office, Mark gave a key to",
)
HELD_OUT_FRACTION = 0.2
# The held-out evaluation corpus shipped with the toy preset (``data/eval-corpus.txt``): drawn from
# the held-out name pairs with a seed no training draw uses (training: 0-3, 7, 10 000-10 749).
EVAL_CORPUS_SEED = 20_000
EVAL_CORPUS_SENTENCES = 250


@dataclass(frozen=True)
class Sentence:
    """One IOI sentence: ``prompt`` ends before the answer ``" " + io``."""

    prompt: str
    io: str
    subject: str

    @property
    def answer(self) -> str:
        return " " + self.io

    @property
    def text(self) -> str:
        return f"{self.prompt}{self.answer}."


def name_pairs() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(training, held-out) ordered pairs of distinct names, split once with a fixed seed.

    The built-in prompts' pairs are always in the held-out set, so the demo's prompts are
    sentences the model never saw.
    """
    pairs = [(a, b) for a in NAMES for b in NAMES if a != b]
    random.Random(1234).shuffle(pairs)
    n_held_out = int(len(pairs) * HELD_OUT_FRACTION)
    builtin = {_pair_of(prompt) for prompt in BUILTIN_PROMPTS}
    held_out = [p for p in pairs if p in builtin]
    held_out += [p for p in pairs if p not in builtin][: n_held_out - len(held_out)]
    held_out_set = set(held_out)
    train = [p for p in pairs if p not in held_out_set]
    return train, held_out


def _pair_of(prompt: str) -> tuple[str, str]:
    words = prompt.replace(",", " ").replace(".", " ").split()
    first = words.index("and") - 1
    return words[first], words[first + 2]


def sample_sentences(n: int, *, held_out: bool, seed: int) -> list[Sentence]:
    """``n`` sentences drawn with ``random.Random(seed)`` from the training or held-out pairs.

    Half the sentences repeat the first name (so the IO is the second), half the second.
    """
    train_pairs, held_out_pairs = name_pairs()
    pairs = held_out_pairs if held_out else train_pairs
    rng = random.Random(seed)
    sentences = []
    for _ in range(n):
        a, b = rng.choice(pairs)
        subject, io = (a, b) if rng.random() < 0.5 else (b, a)
        template = rng.choice(TEMPLATES)
        prompt = template.format(
            a=a, b=b, s=subject, place=rng.choice(PLACES), obj=rng.choice(OBJECTS)
        )
        sentences.append(Sentence(prompt=prompt, io=io, subject=subject))
    return sentences


def builtin_sentences() -> list[Sentence]:
    """The built-in prompts with their answers."""
    sentences = []
    for prompt in BUILTIN_PROMPTS:
        a, b = _pair_of(prompt)
        subject = prompt.split()[-5]  # "<subject> gave a drink to"
        io = b if subject == a else a
        sentences.append(Sentence(prompt=prompt, io=io, subject=subject))
    return sentences


def eval_corpus_texts() -> list[str]:
    """The toy preset's held-out evaluation corpus: one full sentence per line, a few thousand
    tokens, from name pairs the model and transcoders never saw."""
    sentences = sample_sentences(EVAL_CORPUS_SENTENCES, held_out=True, seed=EVAL_CORPUS_SEED)
    return [sentence.text for sentence in sentences]
