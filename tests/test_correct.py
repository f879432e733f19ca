import pytest

from fleetserve.model.correction_text import char_edits


def apply(source: str, edits: list[dict]) -> str:
    for e in sorted(edits, key=lambda e: e["start"], reverse=True):
        source = source[: e["start"]] + e["replacement"] + source[e["end"]:]
    return source


@pytest.mark.parametrize("source,target", [
    ("she go to school yesterday", "She went to school yesterday."),
    ("I have a apple", "I have an apple"),
    ("Its a nice day , isnt it", "It's a nice day, isn't it?"),
    ("unchanged text.", "unchanged text."),
    ("", "Something."),
    ("remove all of this", ""),
])
def test_edits_rebuild_the_target(source, target):
    edits = char_edits(source, target)
    assert apply(source, edits) == target
    assert all(0 <= e["start"] <= e["end"] <= len(source) for e in edits)


def test_edit_offsets_point_at_the_changed_word():
    assert char_edits("I has a cat", "I have a cat") == [{"start": 2, "end": 5, "replacement": "have"}]
    assert char_edits("same", "same") == []


def test_edits_rebuild_the_target_for_random_word_edits_and_repeats():
    """Insertions, deletions and substitutions anywhere, repeated words included (where a
    common head and tail can overlap), always rebuild the target from the source."""
    import random

    rng = random.Random(0)
    words = ["a", "a", "the", "cat", "sat", ",", ".", "on", "mat", "it's", "is"]
    for _ in range(2000):
        source = [rng.choice(words) for _ in range(rng.randint(0, 8))]
        target = list(source)
        for _ in range(rng.randint(1, 3)):
            i = rng.randint(0, len(target))
            kind = rng.choice("ids")
            if kind == "i":
                target.insert(i, rng.choice(words))
            elif target and i < len(target):
                if kind == "d":
                    del target[i]
                else:
                    target[i] = rng.choice(words)
        src, tgt = " ".join(source), " ".join(target)
        assert apply(src, char_edits(src, tgt)) == tgt, (src, tgt)
