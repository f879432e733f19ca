from fleetserve.engine.detokenizer import IncrementalDetokenizer
from fleetserve.engine.sampling_params import SamplingParams
from fleetserve.model.tokenizer import Tokenizer


def stream(tok, ids, params):
    d = IncrementalDetokenizer(tok, params)
    pieces = [d.update([i]) for i in ids]
    pieces.append(d.flush())
    return pieces, d


def test_incremental_text_equals_full_decode_with_multibyte_characters(tiny_model_dir):
    tok = Tokenizer(tiny_model_dir)
    text = "Grüße aus Zürich — naïve café, 東京 🙂 done."
    ids = tok.encode(text)
    pieces, d = stream(tok, ids, SamplingParams())
    assert "".join(pieces) == tok.decode(ids) == text
    assert not any("\ufffd" in p for p in pieces)


def test_stop_string_is_held_back_and_cut(tiny_model_dir):
    tok = Tokenizer(tiny_model_dir)
    ids = tok.encode("one two three four")
    pieces, d = stream(tok, ids, SamplingParams(stop=["three"]))
    assert "".join(pieces) == "one two " and d.stopped
    assert not any("thr" in p for p in pieces)  # never leaked before the match was sure


def test_earliest_stop_string_wins(tiny_model_dir):
    tok = Tokenizer(tiny_model_dir)
    pieces, d = stream(tok, tok.encode("alpha beta gamma"), SamplingParams(stop=["gamma", "beta"]))
    assert "".join(pieces) == "alpha "
