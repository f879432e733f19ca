"""Inject the errors English learners make into a clean sentence.

Each error type is one function from a word list to a changed word list (or
None where the sentence offers no place for that error), so a test can ask for
every type by name. Sentences are handled as words and punctuation marks
(`split_words` / `join_words`); a training pair is `(join_words(corrupted),
join_words(clean))`, so spacing never differs between the two sides unless an
error put it there.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

Words = list[str]
_TOKEN = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]")
_NO_SPACE_BEFORE = {".", ",", "!", "?", ";", ":", ")", "%", "'s"}
_NO_SPACE_AFTER = {"(", "$"}


def split_words(text: str) -> Words:
    return _TOKEN.findall(text)


def join_words(words: Words) -> str:
    out = ""
    for i, w in enumerate(words):
        if i and w not in _NO_SPACE_BEFORE and words[i - 1] not in _NO_SPACE_AFTER:
            out += " "
        out += w
    return out


ARTICLES = ("a", "an", "the")
PREPOSITIONS = ["in", "on", "at", "to", "for", "of", "with", "by", "from", "about", "into", "over"]
FUNCTION_WORDS = ["is", "are", "was", "to", "of", "the", "a", "and", "it", "that", "be", "have", "will", "for"]
AGREEMENT = {"is": "are", "are": "is", "was": "were", "were": "was", "has": "have", "have": "has",
             "does": "do", "do": "does", "doesn't": "don't", "don't": "doesn't", "isn't": "aren't",
             "aren't": "isn't", "wasn't": "weren't", "weren't": "wasn't"}
IRREGULAR = {  # base: (past, past participle)
    "go": ("went", "gone"), "see": ("saw", "seen"), "take": ("took", "taken"), "come": ("came", "come"),
    "give": ("gave", "given"), "make": ("made", "made"), "know": ("knew", "known"), "get": ("got", "gotten"),
    "write": ("wrote", "written"), "eat": ("ate", "eaten"), "begin": ("began", "begun"), "run": ("ran", "run"),
    "buy": ("bought", "bought"), "think": ("thought", "thought"), "bring": ("brought", "brought"),
    "teach": ("taught", "taught"), "find": ("found", "found"), "tell": ("told", "told"), "say": ("said", "said"),
    "leave": ("left", "left"), "feel": ("felt", "felt"), "keep": ("kept", "kept"), "speak": ("spoke", "spoken"),
    "break": ("broke", "broken"), "choose": ("chose", "chosen"), "drive": ("drove", "driven"),
    "fall": ("fell", "fallen"), "grow": ("grew", "grown"), "drink": ("drank", "drunk"), "sing": ("sang", "sung"),
    "swim": ("swam", "swum"), "win": ("won", "won"), "lose": ("lost", "lost"), "pay": ("paid", "paid"),
    "sell": ("sold", "sold"), "send": ("sent", "sent"), "spend": ("spent", "spent"), "stand": ("stood", "stood"),
    "understand": ("understood", "understood"), "hold": ("held", "held"), "meet": ("met", "met"),
    "build": ("built", "built"), "catch": ("caught", "caught"), "fight": ("fought", "fought"),
    "fly": ("flew", "flown"), "forget": ("forgot", "forgotten"), "hear": ("heard", "heard"),
    "lead": ("led", "led"), "sleep": ("slept", "slept"), "wear": ("wore", "worn"), "become": ("became", "become"),
}
IRREGULAR_FORMS = {form: base for base, forms in IRREGULAR.items() for form in forms if form != base}
IRREGULAR_PLURALS = {"child": "children", "man": "men", "woman": "women", "person": "people", "foot": "feet",
                     "tooth": "teeth", "mouse": "mice"}
COMMON_MISSPELLINGS = {
    "because": ["becouse", "becuase", "beacause"], "receive": ["recieve"], "believe": ["beleive"],
    "different": ["diffrent", "differnt"], "government": ["goverment"], "environment": ["enviroment"],
    "necessary": ["neccessary", "necesary"], "definitely": ["definately"], "which": ["wich"],
    "their": ["thier", "there"], "there": ["their"], "then": ["than"], "than": ["then"],
    "its": ["it's"], "your": ["you're"], "too": ["to"], "science": ["sciense"], "technology": ["tecnology"],
    "people": ["peopel", "pepole"], "really": ["realy"], "until": ["untill"], "always": ["allways"],
    "friend": ["freind"], "beautiful": ["beautifull", "beatiful"], "success": ["sucess"],
    "address": ["adress"], "opportunity": ["oportunity"], "tomorrow": ["tommorow"], "would": ["whould"],
    "knowledge": ["knowlege"], "important": ["importent"], "example": ["exemple"], "study": ["studdy"],
}
KEYBOARD = "qwertyuiop asdfghjkl zxcvbnm".split()
VOWELS = set("aeiou")
DETERMINERS_PLURAL = {"many", "several", "two", "three", "four", "five", "some", "these", "those", "few", "all"}
SUBJECTS_3SG = {"he", "she", "it", "this", "that", "everyone", "nobody", "somebody", "everybody"}
SUBJECTS_PLURAL = {"i", "you", "we", "they"}
ADVERBS = {"never", "always", "often", "usually", "sometimes", "also", "still", "rarely", "seldom", "really",
           "only", "just"}
# Words that follow a subject but take no agreement -s: modals, past forms and function words.
NOT_VERBS = {"can", "could", "will", "would", "shall", "should", "may", "might", "must", "had", "did", "not",
             "and", "or", "but", *ARTICLES, *PREPOSITIONS, *ADVERBS}


def _is_word(w: str) -> bool:
    return w[:1].isalpha()


def _match_case(new: str, old: str) -> str:
    return new[:1].upper() + new[1:] if old[:1].isupper() else new


def _positions(words: Words, pred: Callable[[str], bool]) -> list[int]:
    return [i for i, w in enumerate(words) if pred(w)]


def _neighbour(c: str, rng: random.Random) -> str:
    for row in KEYBOARD:
        if c in row:
            i = row.index(c)
            return row[max(0, i - 1)] if rng.random() < 0.5 and i > 0 else row[min(len(row) - 1, i + 1)]
    return c


def spelling(words: Words, rng: random.Random) -> Words | None:
    """A typo (deleted, doubled, swapped or mistyped letter) or a known misspelling."""
    cand = _positions(words, lambda w: _is_word(w) and len(w) >= 3)
    if not cand:
        return None
    i = rng.choice(cand)
    w = words[i]
    low = w.lower()
    if low in COMMON_MISSPELLINGS and rng.random() < 0.7:
        new = _match_case(rng.choice(COMMON_MISSPELLINGS[low]), w)
    else:
        j = rng.randrange(1, len(w))  # keep the first letter: learners rarely get it wrong
        kind = rng.choice(["delete", "double", "swap", "replace", "vowel"])
        if kind == "delete":
            new = w[:j] + w[j + 1:]
        elif kind == "double":
            new = w[:j] + w[j] + w[j:]
        elif kind == "swap" and j < len(w) - 1:
            new = w[:j] + w[j + 1] + w[j] + w[j + 2:]
        elif kind == "vowel" and (vs := [k for k in range(1, len(w)) if w[k] in VOWELS]):
            k = rng.choice(vs)
            new = w[:k] + rng.choice(sorted(VOWELS - {w[k]})) + w[k + 1:]
        else:
            new = w[:j] + _neighbour(w[j], rng) + w[j + 1:]
    if new == w:
        new = w[:1] + w[2:] if len(w) > 3 else w + w[-1]
    return words[:i] + [new] + words[i + 1:]


def article(words: Words, rng: random.Random) -> Words | None:
    """A missing, extra or wrong article."""
    have = _positions(words, lambda w: w.lower() in ARTICLES)
    choice = rng.random()
    if have and choice < 0.45:
        i = rng.choice(have)
        return words[:i] + words[i + 1:]
    if have and choice < 0.8:
        i = rng.choice(have)
        others = [a for a in ARTICLES if a != words[i].lower()]
        return words[:i] + [_match_case(rng.choice(others), words[i])] + words[i + 1:]
    cand = _positions(words, lambda w: _is_word(w) and w.lower() not in ARTICLES and len(w) > 2)
    if not cand:
        return None
    i = rng.choice(cand)
    art = rng.choice(ARTICLES)
    if i == 0:
        return [_match_case(art, words[0]), words[0][:1].lower() + words[0][1:]] + words[1:]
    return words[:i] + [art] + words[i:]


def preposition(words: Words, rng: random.Random) -> Words | None:
    """A wrong, missing or extra preposition."""
    have = _positions(words, lambda w: w.lower() in PREPOSITIONS)
    if have and rng.random() < 0.8:
        i = rng.choice(have)
        if rng.random() < 0.7:
            others = [p for p in PREPOSITIONS if p != words[i].lower()]
            return words[:i] + [_match_case(rng.choice(others), words[i])] + words[i + 1:]
        return words[:i] + words[i + 1:]
    cand = _positions(words, _is_word)
    if len(cand) < 2:
        return None
    i = rng.choice(cand[1:])
    return words[:i] + [rng.choice(PREPOSITIONS)] + words[i:]


def _without_s(verb: str) -> str:
    """The base form of a third-person verb: goes -> go, watches -> watch, studies -> study."""
    if verb.endswith("ies") and len(verb) > 4:
        return verb[:-3] + "y"
    if verb.endswith(("oes", "sses", "xes", "zes", "ches", "shes")):
        return verb[:-2]
    return verb[:-1]


def _subject_of(words: Words, j: int) -> int:
    """Where the subject of the verb at `j` stands: the word before it, or the one before an
    adverb ("she never goes"); -1 at the start of the sentence."""
    k = j - 1
    if k > 0 and words[k].lower() in ADVERBS:
        k -= 1
    return k


def _singular_subject(words: Words, k: int) -> bool:
    """Whether the word at `k` is a third-person singular subject: "she", "it", "the dog"."""
    if k < 0:
        return False
    subj = words[k].lower()
    return subj in SUBJECTS_3SG or (k > 0 and words[k - 1].lower() in ARTICLES and subj.isalpha()
                                    and not subj.endswith("s"))


def _agreement_spots(words: Words) -> list[tuple[int, str]]:
    """Every (position, wrong form) where a subject-verb agreement error fits."""
    spots = [(i, _match_case(AGREEMENT[w.lower()], w)) for i, w in enumerate(words) if w.lower() in AGREEMENT]
    for j, verb in enumerate(words):
        k = _subject_of(words, j)
        if k < 0 or not (verb.isalpha() and verb.islower()) or verb in AGREEMENT or verb in NOT_VERBS \
                or verb in IRREGULAR_FORMS:
            continue
        if _singular_subject(words, k) and verb.endswith("s") and len(verb) > 3 \
                and not verb.endswith(("ss", "us", "is")):
            spots.append((j, _without_s(verb)))  # "she goes" -> "she go"
        elif words[k].lower() in SUBJECTS_PLURAL and len(verb) > 2 and not verb.endswith(("s", "ed", "ing")):
            spots.append((j, verb + ("es" if verb.endswith(("o", "ch", "sh", "x")) else "s")))  # "they goes"
    return spots


def agreement(words: Words, rng: random.Random) -> Words | None:
    """Subject-verb agreement at any verb that agrees: is/are, has/have, a dropped or added -s.

    "she goes" -> "she go", "the dog barks" -> "the dog bark", "they play" -> "they plays"."""
    spots = _agreement_spots(words)
    if not spots:
        return None
    i, wrong = rng.choice(spots)
    return words[:i] + [wrong] + words[i + 1:]


def verb_form(words: Words, rng: random.Random) -> Words | None:
    """Wrong tense or form: went -> go / goed, talked -> talk, going -> go, go -> going.

    No bare verb after a singular subject ("she went" -> "she goed", never "she go"): there a
    bare verb is the agreement error, and the model should learn to add the -s."""
    cand = []
    for i, w in enumerate(words):
        low = w.lower()
        if low in IRREGULAR_FORMS or low in IRREGULAR:
            cand.append(i)
        elif len(low) > 5 and low.isalpha() and (low.endswith("ed") or low.endswith("ing")):
            cand.append(i)
    if not cand:
        return None
    i = rng.choice(cand)
    w, low = words[i], words[i].lower()
    bare = None  # the bare verb, left out after a singular subject
    if low in IRREGULAR_FORMS:
        bare = IRREGULAR_FORMS[low]
        options = [bare, bare + "ed", bare + "ing"]
    elif low in IRREGULAR:
        past, part = IRREGULAR[low]
        options = [x for x in (past, part, low + "ed", low + "ing") if x != low]
    elif low.endswith("ed"):
        bare = low[:-2] if not low.endswith("ied") else low[:-3] + "y"
        options = [bare, bare + "ing", bare + "s"]  # the last: a present tense for the past
    else:
        bare = low[:-3]
        options = [bare, bare + "ed", "to " + bare]
    if _singular_subject(words, _subject_of(words, i)):
        options = [x for x in options if x != bare]
    new = rng.choice(options)
    if new == low:
        new = low + "s"
    parts = _match_case(new, w).split(" ")
    return words[:i] + parts + words[i + 1:]


def number(words: Words, rng: random.Random) -> Words | None:
    """Singular/plural: a plural noun made singular or the reverse ("every days", "many book")."""
    cand = []
    for i, w in enumerate(words):
        low = w.lower()
        if low in IRREGULAR_PLURALS or low in IRREGULAR_PLURALS.values():
            cand.append(i)
        elif i > 0 and words[i - 1].lower() in DETERMINERS_PLURAL and low.isalpha() and len(low) > 2:
            cand.append(i)
        elif i > 0 and words[i - 1].lower() in {*ARTICLES, "every", "each", "one", "this"} and low.isalpha() \
                and len(low) > 2 and not low.endswith("s"):
            cand.append(i)
    if not cand:
        cand = _positions(words, lambda w: w.isalpha() and w.islower() and len(w) > 4 and w not in AGREEMENT)
    if not cand:
        return None
    i = rng.choice(cand)
    w, low = words[i], words[i].lower()
    singular = {v: k for k, v in IRREGULAR_PLURALS.items()}
    if low in IRREGULAR_PLURALS:
        new = rng.choice([IRREGULAR_PLURALS[low] + "s", low + "s"])
    elif low in singular:
        new = rng.choice([singular[low], low + "s"])
    elif low.endswith("ies"):
        new = low[:-3] + "y"
    elif low.endswith("s") and not low.endswith("ss"):
        new = low[:-1]
    elif low.endswith("y") and low[-2:-1] not in VOWELS:
        new = low[:-1] + "ies"
    else:
        new = low + ("es" if low.endswith(("s", "x", "ch", "sh")) else "s")
    return words[:i] + [_match_case(new, w)] + words[i + 1:]


def word_order(words: Words, rng: random.Random) -> Words | None:
    """Two neighbouring words swapped."""
    cand = [i for i in range(len(words) - 1) if _is_word(words[i]) and _is_word(words[i + 1])
            and words[i].lower() != words[i + 1].lower()]
    if not cand:
        return None
    i = rng.choice(cand)
    a, b = words[i], words[i + 1]
    if i == 0:
        a, b = a[:1].lower() + a[1:] if a != "I" else a, _match_case(b, a)
    return words[:i] + [b, a] + words[i + 2:]


def missing_word(words: Words, rng: random.Random) -> Words | None:
    """A dropped word, usually a short function word."""
    cand = _positions(words, lambda w: w.lower() in FUNCTION_WORDS)
    if not cand:
        cand = _positions(words, _is_word)
    if len(_positions(words, _is_word)) < 2 or not cand:
        return None
    i = rng.choice(cand)
    rest = words[:i] + words[i + 1:]
    if i == 0 and rest and words[0][:1].isupper():
        rest[0] = _match_case(rest[0], words[0])
    return rest


def capitalisation(words: Words, rng: random.Random) -> Words | None:
    """A lower-case sentence start, a lower-case "i" or proper noun, or a stray capital."""
    cand = [i for i, w in enumerate(words) if w[:1].isupper()]
    if cand and rng.random() < 0.75:
        i = rng.choice(cand)
        return words[:i] + [words[i][:1].lower() + words[i][1:]] + words[i + 1:]
    lower = _positions(words[1:], lambda w: w.isalpha() and w.islower() and len(w) > 3)
    if not lower:
        return None
    i = rng.choice(lower) + 1
    return words[:i] + [words[i].capitalize()] + words[i + 1:]


def punctuation(words: Words, rng: random.Random) -> Words | None:
    """Missing final stop or comma, an extra comma, or a comma where a stop belongs."""
    marks = _positions(words, lambda w: w in {".", ",", "!", "?", ";", ":"})
    if marks and rng.random() < 0.7:
        i = rng.choice(marks)
        if words[i] in {".", ";"} and i < len(words) - 1 and rng.random() < 0.5:
            return words[:i] + [","] + words[i + 1:]
        return words[:i] + words[i + 1:]
    cand = [i for i in range(1, len(words)) if _is_word(words[i]) and _is_word(words[i - 1])]
    if not cand:
        return None
    i = rng.choice(cand)
    return words[:i] + [","] + words[i:]


ERROR_TYPES: dict[str, Callable[[Words, random.Random], Words | None]] = {
    "spelling": spelling,
    "article": article,
    "preposition": preposition,
    "agreement": agreement,
    "verb_form": verb_form,
    "number": number,
    "word_order": word_order,
    "missing_word": missing_word,
    "capitalisation": capitalisation,
    "punctuation": punctuation,
}
# Relative frequency of each type in the training data (spelling and articles
# dominate learner errors; word order is rarer).
DEFAULT_RATES: dict[str, float] = {
    "spelling": 0.22, "article": 0.12, "preposition": 0.09, "agreement": 0.13, "verb_form": 0.1,
    "number": 0.12, "word_order": 0.04, "missing_word": 0.06, "capitalisation": 0.06, "punctuation": 0.06,
}


def inject(sentence: str, kind: str, rng: random.Random) -> str | None:
    """One error of the named type, or None where the sentence has no place for it."""
    if kind not in ERROR_TYPES:
        raise ValueError(f"unknown error type {kind!r}; choose from {', '.join(ERROR_TYPES)}")
    words = split_words(sentence)
    for _ in range(8):  # some types pick a spot at random that may not change anything
        changed = ERROR_TYPES[kind](words, rng)
        if changed is None:
            return None
        out = join_words(changed)
        if out != join_words(words):
            return out
    return None


def corrupt(sentence: str, num_errors: int, rng: random.Random, rates: dict[str, float] | None = None) -> str:
    """The sentence with `num_errors` errors drawn by `rates`; never returned unchanged
    when num_errors > 0 (a spelling error fits any sentence with a word of 3+ letters)."""
    rates = rates or DEFAULT_RATES
    kinds, weights = list(rates), list(rates.values())
    clean = join_words(split_words(sentence))
    words = split_words(sentence)
    applied = 0
    for _ in range(num_errors * 4):
        if applied == num_errors:
            break
        changed = ERROR_TYPES[rng.choices(kinds, weights)[0]](words, rng)
        if changed is not None and changed != words:
            words, applied = changed, applied + 1
    out = join_words(words)
    if num_errors > 0 and out == clean:
        for kind in ERROR_TYPES:
            if (forced := inject(clean, kind, rng)) is not None:
                return forced
        raise ValueError(f"no error can be injected into {sentence!r}")
    return out
