"""The synthetic-error injector: every type fires, and an error is never a no-op."""

import random

import pytest

from fleetserve.training.errors import ERROR_TYPES, corrupt, inject, join_words, split_words
from fleetserve.training.pairs import PairConfig, make_pair, normalise, rare_word

# A sentence with a place for every error type.
RICH = "She goes to the market every day with her two children, and I think it was fine."
EXPECTED = {
    "spelling": None,  # any word changed by a letter or a known misspelling
    "article": lambda a: split_words(a).count("the") != 1 or any(w in split_words(a) for w in ("a", "an")),
    "preposition": None,
    "agreement": lambda a: _changed_words(a) in ({("was", "were")}, {("goes", "go")}, {("think", "thinks")}),
    "verb_form": None,
    "number": None,
    "word_order": lambda a: sorted(split_words(a.lower())) == sorted(split_words(RICH.lower())),
    "missing_word": lambda a: len(split_words(a)) == len(split_words(RICH)) - 1,
    "capitalisation": lambda a: a.lower() == RICH.lower(),
    "punctuation": lambda a: [w for w in split_words(a) if w.isalnum()] == [w for w in split_words(RICH) if w.isalnum()],
}


def _changed_words(a: str) -> set[tuple[str, str]]:
    return {(x, y) for x, y in zip(split_words(RICH), split_words(a)) if x != y}


@pytest.mark.parametrize("kind", list(ERROR_TYPES))
def test_each_error_type_changes_the_sentence(kind):
    rng = random.Random(7)
    for _ in range(50):
        out = inject(RICH, kind, rng)
        assert out is not None and out != RICH, kind
        check = EXPECTED[kind]
        if check is not None:
            assert check(out), (kind, out)


@pytest.mark.parametrize("clean, wrong", [
    ("She goes to school every day.", {"She go to school every day."}),
    ("He watches films and she studies.", {"He watch films and she studies.", "He watches films and she study."}),
    ("She never dresses up.", {"She never dress up."}),
    ("The dog barks at night.", {"The dog bark at night."}),
    ("They play and I think so.", {"They plays and I think so.", "They play and I thinks so."}),
    ("It was late.", {"It were late."}),
])
def test_agreement_errors_land_on_any_verb_that_agrees_with_its_subject(clean, wrong):
    rng = random.Random(11)
    assert {inject(clean, "agreement", rng) for _ in range(40)} == wrong


def test_agreement_leaves_modals_and_past_forms_alone():
    for clean in ("We can swim.", "They went home.", "I had lunch."):
        assert inject(clean, "agreement", random.Random(0)) is None, clean


def test_a_bare_verb_after_a_singular_subject_comes_only_from_agreement():
    """"she go" must mean "she goes" to the model, so tense errors there take other forms."""
    rng = random.Random(5)
    for clean in ("She went to school.", "She walked home.", "The dog never barked."):
        outs = {inject(clean, "verb_form", rng) for _ in range(40)}
        assert not {"She go to school.", "She walk home.", "The dog never bark."} & outs, outs
    assert "They walk." in {inject("They walked.", "verb_form", rng) for _ in range(40)}


def test_number_errors_reach_short_nouns_after_a_determiner():
    rng = random.Random(6)
    assert {inject("She goes to school every day.", "number", rng) for _ in range(20)} == \
        {"She goes to school every days."}
    assert {inject("He has two cats.", "number", rng) for _ in range(20)} == {"He has two cat."}


def test_types_that_need_a_place_say_so():
    rng = random.Random(0)
    assert inject("Run fast.", "article", random.Random(0)) is not None  # an article can always be added
    assert inject("Hello there.", "verb_form", rng) is None
    with pytest.raises(ValueError, match="unknown error type"):
        inject(RICH, "tone", rng)


def test_corrupt_never_returns_the_clean_sentence():
    rng = random.Random(3)
    sentences = ["A cat.", "Yes, it is.", "The sun rose over the quiet hills.", "Oh!", RICH]
    for s in sentences:
        for n in (1, 2, 3):
            assert corrupt(s, n, rng) != join_words(split_words(s))


def test_pairs_mix_clean_and_corrupted_and_targets_are_normalised():
    rng = random.Random(1)
    sentences = [normalise(s) for s in ["the train was late", "a liquid seeks its own level", "he ran home"]]
    assert sentences[0] == "The train was late."
    pairs = [make_pair(sentences, rng, PairConfig(clean_share=0.2)) for _ in range(500)]
    clean = sum(src == tgt for src, tgt in pairs)
    assert 50 < clean < 150
    assert all(tgt[0].isupper() and tgt.endswith(".") for _, tgt in pairs)


def test_join_weights_set_how_many_sentences_make_one_text():
    rng = random.Random(2)
    sentences = ["One.", "Two.", "Three."]
    cfg = PairConfig(clean_share=1.0, join_weights=(0, 0, 0, 0, 1))
    assert all(len(tgt.split()) == 5 for _, tgt in (make_pair(sentences, rng, cfg) for _ in range(20)))


def test_rare_words_are_copied_unchanged_and_errors_never_touch_them():
    rng = random.Random(4)
    sentences = [normalise(s) for s in ["the train was late again", "children played quietly outside",
                                        "she bought several oranges yesterday", "we walked along the river"]]
    known = {w.lower() for s in sentences for w in split_words(s)}
    cfg = PairConfig(clean_share=0.0, rare_share=1.0, rare_words=2)
    with_rare = 0
    for _ in range(300):
        src, tgt = make_pair(sentences, rng, cfg)
        assert not any(0xE000 <= ord(c) < 0xF900 for c in src + tgt), "a placeholder leaked"
        rare = [w for w in split_words(tgt) if w.lower() not in known]
        with_rare += bool(rare)
        for w in rare:
            assert w in split_words(src), (w, src, tgt)
    assert with_rare > 250


def test_rare_words_look_like_names_words_and_numbers():
    rng = random.Random(5)
    words = [rare_word(rng) for _ in range(400)]
    assert any(w[0].isupper() for w in words) and any(w.islower() for w in words)
    assert any(w.replace(",", "").isdigit() for w in words)
    assert len(set(words)) > 300
