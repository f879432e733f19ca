"""Tokenising model output the way JFLEG is tokenised, and back."""

from fleetserve.quality.text import detokenize, tokenize


def test_tokenize_splits_clitics_and_punctuation_like_the_references():
    assert tokenize("I don't know, it's John's (maybe).") == "I do n't know , it 's John 's ( maybe ) ."
    assert tokenize("We can't and won't.") == "We ca n't and wo n't ."
    assert tokenize("A self-confident man paid 3.50 dollars...") == "A self-confident man paid 3.50 dollars ..."


def test_tokenize_is_idempotent_and_keeps_misspelt_apostrophes():
    text = "He doens't know the do 's and don'ts ."
    assert tokenize(text) == text
    assert tokenize(tokenize("It's over, isn't it?")) == tokenize("It's over, isn't it?")


def test_detokenize_then_tokenize_round_trips():
    for line in ["So I think we can not live if they did not developped .",
                 "It 's normal , is n't it ?", "Others ( not many ) do n't ."]:
        assert tokenize(detokenize(line)) == line
    assert detokenize("It 's normal , is n't it ?") == "It's normal, isn't it?"
