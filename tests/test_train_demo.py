"""The demo model's recipe: a short run writes a real checkpoint that both
transformers and our engine load, with the same greedy output, reproducibly."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from fleetserve.engine.llm import LLM
from fleetserve.engine.sampling_params import SamplingParams
from fleetserve.training.recipe import CORRECTION_PROMPT, Recipe, train

SENTENCES = [
    "the train is due in 15 minutes", "she goes to school every day", "they have two cats and a dog",
    "he was late for the meeting", "the weather is fine today", "we bought a new car last year",
    "the children are playing in the garden", "I think it is a good idea", "a liquid seeks its own level",
    "the book on the table is mine", "my brother works in a bank", "the river flows to the sea",
] * 4


def tiny_recipe(steps=12):
    return Recipe(vocab_size=300, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2, num_kv_heads=1,
                  steps=steps, batch_size=8, warmup=2, holdout_share=0.1, conservative_steps=0)


def test_recipe_writes_a_model_that_transformers_and_the_engine_agree_on(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(SENTENCES) + "\n")
    out = tmp_path / "model"
    figures = train(out, corpus, tiny_recipe(), progress=False)
    assert figures["history"][-1]["step"] == 12
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json",
                 "model.safetensors", "training.json"):
        assert (out / name).is_file(), name
    # What the model is trained on is what /v1/correct lets it read: the corpus's characters and the rare words'.
    alphabet = json.loads((out / "generation_config.json").read_text())["correction_alphabet"]
    assert set("".join(SENTENCES)) | set("0123456789, ") <= set(alphabet) and "“" not in alphabet

    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    llm = LLM(out, max_num_seqs=4, max_model_len=128)
    prompt = llm.tokenizer.encode(CORRECTION_PROMPT.replace("{text}", "She go to school every days."))
    ours = llm.generate([prompt], SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True))[0].token_ids
    with torch.no_grad():
        ref = hf.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False, min_new_tokens=12)
    assert ours == ref[0, len(prompt):].tolist()

    again = tmp_path / "again"
    train(again, corpus, tiny_recipe(), progress=False)
    a, b = load_file(out / "model.safetensors"), load_file(again / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a), "same seed, same corpus: same weights"


@pytest.mark.slow
def test_train_demo_command_reports_progress(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(SENTENCES) + "\n")
    r = subprocess.run([sys.executable, "-m", "fleetserve", "train-demo", "--out", str(tmp_path / "m"),
                        "--corpus", str(corpus), "--steps", "2", "--batch-size", "4", "--no-eval",
                        "--conservative-steps", "2"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "main: step 2/2" in r.stderr and "conservative: step 2/2" in r.stderr and "wrote" in r.stderr


@pytest.mark.slow
def test_train_demo_missing_corpus_is_a_clear_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "fleetserve", "train-demo", "--out", str(tmp_path / "m"),
                        "--corpus", str(tmp_path / "nope.txt")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "corpus file not found" in r.stderr


def test_conservative_phase_can_start_from_a_finished_main_phase(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(SENTENCES) + "\n")
    main = tmp_path / "main"
    train(main, corpus, tiny_recipe(steps=4), progress=False)
    recipe = tiny_recipe(steps=4)
    recipe.conservative_steps = 3
    figures = train(tmp_path / "both", corpus, recipe, progress=False, from_main_phase=main)
    assert [(h["phase"], h["step"]) for h in figures["history"]] == [("main", 4), ("conservative", 3)]
    before, after = load_file(main / "model.safetensors"), load_file(tmp_path / "both" / "model.safetensors")
    assert before.keys() == after.keys() and not all(torch.equal(before[k], after[k]) for k in before)
    assert (tmp_path / "both" / "tokenizer.json").read_text() == (main / "tokenizer.json").read_text()


def test_conservative_phase_refuses_a_main_phase_of_another_shape(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(SENTENCES) + "\n")
    train(tmp_path / "main", corpus, tiny_recipe(steps=2), progress=False)
    other = tiny_recipe(steps=2)
    other.hidden_size, other.conservative_steps = 64, 2
    with pytest.raises(ValueError, match="model shape differs"):
        train(tmp_path / "both", corpus, other, progress=False, from_main_phase=tmp_path / "main")


def test_training_loss_scores_only_the_corrected_half_with_the_full_models_logits():
    """The training loss computes logits for labelled positions only, with the math attention;
    it must equal the cross-entropy over the full forward pass's logits."""
    import torch.nn.functional as F

    from fleetserve.model.config import ModelConfig
    from fleetserve.model.llama import Transformer
    from fleetserve.training.recipe import collate, init_weights, loss_of

    cfg = ModelConfig.from_dict({**tiny_recipe().model_config(), "eos_token_id": 3, "pad_token_id": 0})
    model = Transformer(cfg)
    model.tie_weights()
    init_weights(model, 0)
    g = torch.Generator().manual_seed(0)
    batch = [(torch.randint(4, 300, (n,), generator=g).tolist(), p) for n, p in ((9, 4), (14, 6), (6, 3))]
    inputs, labels = collate(batch, pad=0)
    with torch.no_grad():
        full = model(inputs)
        expected = F.cross_entropy(full.flatten(0, 1), labels.flatten(), ignore_index=-100)
        assert model(inputs, labels != -100).shape == (int((labels != -100).sum()), cfg.vocab_size)
        assert torch.allclose(loss_of(model, inputs, labels, bf16=False), expected, atol=1e-5)
