"""GLEU on hand-made cases whose value is known, and on the JFLEG copy-source baseline."""

import math

import pytest

from fleetserve.quality.gleu import gleu, gleu_from_stats, sentence_stats
from fleetserve.shared_data import default_eval_set

SRC = ["she go to school every days .", "he have two cat ."]
REFS = [["she goes to school every day .", "he has two cats ."],
        ["she goes to school every day .", "he has two cats ."]]


def test_hypothesis_identical_to_every_reference_scores_100():
    assert gleu(REFS[0], SRC, REFS).corpus == pytest.approx(100.0)


def test_empty_output_scores_zero():
    r = gleu(["", ""], SRC, REFS)
    assert r.corpus == 0.0


def test_copy_of_source_is_penalised_for_the_changes_it_did_not_make():
    # Hand computation for sentence 1 against its reference: hyp = src = "he have two cat ."
    # unigrams: matches with ref {he, two, .} = 3, minus source n-grams missing from the ref
    # that the hyp keeps {have, cat} = 2 -> 1 of 5; bigrams: ref shares none -> 0 -> GLEU 0.
    stats = sentence_stats(SRC[1].split(), SRC[1].split(), REFS[0][1].split())
    assert stats[:4] == [5, 5, 1, 5]
    assert gleu_from_stats(stats) == 0.0
    # Smoothing turns the zero counts into ones (sentence level only).
    assert gleu_from_stats(stats, smooth=True) == pytest.approx(math.exp((math.log(1 / 5) + math.log(1 / 4)
                                                                          + math.log(1 / 3) + math.log(1 / 2)) / 4))


def test_brevity_penalty():
    ref = "a b c d e f g h".split()
    full = gleu_from_stats(sentence_stats(ref, ["x"], ref))
    short = gleu_from_stats(sentence_stats(ref[:6], ["x"], ref))
    assert full == pytest.approx(1.0)
    assert short == pytest.approx(math.exp(1 - 8 / 6))  # every n-gram matches: only the penalty is left


def test_mismatched_lengths_are_an_error():
    with pytest.raises(ValueError, match="must be equal"):
        gleu(["one"], SRC, REFS)


@pytest.mark.skipif(not default_eval_set().is_dir(), reason="JFLEG dev not present at ../shared/data")
def test_copy_source_matches_the_published_jfleg_figure():
    d = default_eval_set()
    src = (d / "dev.src").read_text().splitlines()
    refs = [(d / f"dev.ref{k}").read_text().splitlines() for k in range(4)]
    assert round(gleu(src, src, refs).corpus, 2) == 38.21
