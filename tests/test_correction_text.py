"""A user's text as the segments a correction model reads, and its answers back as the
user's text (fleetserve/model/correction_text.py): pure text, no model."""

from __future__ import annotations

import pytest

from fleetserve.model.correction_text import PLACEHOLDER, Alphabet, plan

PLAIN = Alphabet(" !$%&'()+,-./0123456789:;=?ABCDEFGHIJKLMNOPQRSTUVWXYZ^abcdefghijklmnopqrstuvwxyz")

ODD_TEXTS = [
    "  I has a apple.  ", "José go to school.", "She said “I has a apple” yesterday.", "He don't like it — really.",
    "I has\ta apple.", "I has a apple.\r\nShe go home.\n", "Mr. Smith go home. He don't. J. K. Rowling write it.",
    "Visit https://example.com/a?b=1 for more informations.", "我 is a student.", "I has a apple 😀.", "!!!", "a",
    ".", "Wait... what? Yes! 3 apples.", "a\x00b c", "e-mail me at bob@x.org, ok?", "", "   ", "\u200b",
    "naïve café…", "ﬁne", "I\u00a0has  a   apple.", "(I has a apple.) \"She go.\"", "I HAS A APPLE. SHE GO.",
    "I love NASA and the USA.", "İSTANBUL IS BIG.",
]


@pytest.mark.parametrize("text", ODD_TEXTS)
def test_a_model_that_copies_gives_back_the_text_as_sent(text):
    """Every character the model leaves alone comes back exactly as it was: accents,
    quotes, dashes, spacing, line breaks, what the model never saw."""
    for alphabet in (PLAIN, Alphabet(None)):
        p = plan(text, alphabet)
        assert p.answer([(t, True) for t in p.inputs]) == text


def test_the_model_reads_plain_single_line_sentences_within_its_alphabet():
    p = plan("She said “I has a apple” — José.\n\tHe go to 北京 yesterday… OK? Yes.", PLAIN)
    assert p.inputs == ["She said 'I has a apple' - Jose.", f"He go to {PLACEHOLDER} yesterday... {PLACEHOLDER}?",
                        "Yes."]
    for text in p.inputs:
        assert set(text) <= PLAIN.chars


def test_sentences_are_cut_at_their_ends_not_at_abbreviations_or_initials():
    p = plan("Mr. Smith go home. He don't. J. K. Rowling write it. e.g. this one. Wait... what? 3 cats. ok.", PLAIN)
    assert p.inputs == ["Mr. Smith go home.", "He don't.", "J. K. Rowling write it. e.g. this one.",
                        "Wait... what?", "3 cats. ok."]


def test_edits_land_on_the_text_as_sent():
    text = "She said “I has a apple” — José go\thome."
    p = plan(text, PLAIN)
    assert p.inputs == ["She said 'I has a apple' - Jose go home."]
    assert p.answer([("She said 'I have an apple' - Jose went home.", True)]) == \
        "She said “I have an apple” — José went\thome."


def test_no_edit_touches_what_the_model_cannot_read():
    p = plan("I love 😀 very much and visit www.example.org daily.", PLAIN)
    assert p.inputs == [f"I love {PLACEHOLDER} very much and visit {PLACEHOLDER} daily."]
    # The model renames the placeholders and inserts beside one: those edits are dropped, the rest kept.
    answer = p.answer([(f"I loves Brastors very much and visit the {PLACEHOLDER} every day.", True)])
    assert answer == "I loves 😀 very much and visit www.example.org every day."


def test_a_sentence_in_capitals_is_read_in_sentence_case_and_answered_in_capitals():
    p = plan("SHE GO TO SCHOOL, I THINK. I love NASA. OK", PLAIN)
    assert p.inputs == ["She go to school, I think.", f"I love {PLACEHOLDER}."]  # an acronym alone: nothing to correct
    assert p.answer([("She went to school, I think.", True), (f"I loves {PLACEHOLDER}.", True)]) == \
        "SHE WENT TO SCHOOL, I THINK. I loves NASA. OK"


def test_a_runaway_or_unrelated_answer_keeps_the_segment_as_sent():
    p = plan("Go on. She go home.", PLAIN)
    assert p.inputs == ["Go on.", "She go home."]
    assert p.answer([("Go on on on on on on on on", False), ("She went home.", True)]) == "Go on. She went home."
    assert p.answer([("The old bells rang at noon.", True), ("She went home.", True)]) == "Go on. She went home."
    # Case alone does not make an answer unrelated: short sentences keep their corrections.
    p = plan("i has a apple", PLAIN)
    assert p.answer([("I have an apple.", True)]) == "I have an apple."


def test_nothing_to_correct_reaches_no_model():
    for text in ("", "   ", "!!!", "42.", "😀 🎉", "\n\n"):
        p = plan(text, PLAIN)
        assert p.inputs == [] and p.answer([]) == text


def test_answers_must_match_the_inputs():
    p = plan("She go. He go.", PLAIN)
    with pytest.raises(ValueError, match="2 segments to correct but 1 answers"):
        p.answer([("She went.", True)])


def test_a_text_with_too_many_sentences_is_refused_early_and_long_words_cost_little():
    with pytest.raises(ValueError, match="more than 64 sentences or lines"):
        plan("She go. " * 100_000, PLAIN, max_inputs=64)
    # Without the length cap the URL search is quadratic in a word's length (seconds at 1 MiB).
    for word in ("a@" * 500_000, "a" * 1_000_000, "http://" + "a" * 1_000_000):
        p = plan(word, PLAIN)
        assert len(p.inputs) == (0 if "@" in word else 1)


def test_an_alphabet_remembers_a_bounded_number_of_characters():
    """Clients choose the characters: a pod must not remember every one it was sent."""
    from fleetserve.model.correction_text import CACHED_CHARS

    alphabet = Alphabet("abc ")
    chars = [chr(0x4E00 + i) for i in range(CACHED_CHARS + 100)] + ["é", "a"]
    assert [alphabet.plain(c) for c in chars] == [None] * (CACHED_CHARS + 100) + [None, "a"]
    assert len(alphabet._cache) == CACHED_CHARS
    assert Alphabet("abce").plain("é") == "e"
