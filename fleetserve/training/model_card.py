"""README.md of a model directory trained by the recipe: what it is, how it was made, how well it does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fleetserve.training.errors import ERROR_TYPES


def render(figures: dict[str, Any], scores: dict[str, Any] | None) -> str:
    r = figures["recipe"]
    pairs = r["pairs"]
    rates = dict(pairs["rates"])
    total_rate = sum(rates.values())
    rate_rows = "\n".join(
        f"| {kind} | {ERROR_TYPES[kind].__doc__.strip().splitlines()[0]} | {rates[kind] / total_rate:.0%} |"
        for kind in ERROR_TYPES
    )
    if scores:
        c, copy = scores["candidate"], scores["copy_source"]
        score_text = (
            f"| set | GLEU (corpus, JFLEG definition) | sentence GLEU | unchanged | time |\n"
            f"| --- | --- | --- | --- | --- |\n"
            f"| {scores['eval_set']}, this model | **{c['gleu']:.2f}** (±{c['gleu_std']:.2f}) | "
            f"{c['sentence_gleu']:.2f} | {c['unchanged']:.1%} | {c['seconds']:.0f} s ({c['sentences']} sentences) |\n"
            f"| {scores['eval_set']}, copy of the source | {copy['gleu']:.2f} | {copy['sentence_gleu']:.2f} | "
            f"100% | |\n\nMeasured with `fleetserve eval {scores.get('model', 'DIR')}` "
            f"({scores.get('machine', 'this machine')}). JFLEG's published copy-the-source figure is 38.21."
        )
        if c["gleu"] <= copy["gleu"]:
            score_text += ("\n\n**This model scores below copying the source**: on learner essays it makes as many "
                           "wrong edits as right ones (it was trained on short dictionary examples, a different "
                           "domain). It corrects simple errors in short sentences; do not use it on real text.")
    else:
        score_text = "Not evaluated yet: run `fleetserve eval DIR`."
    return f"""---
license: other
language: en
tags: [grammatical-error-correction, fleetserve]
---

# fleetserve demo correction model

A small Llama-architecture decoder trained from scratch by `fleetserve train-demo` to rewrite an
English sentence with its grammar and spelling corrected. It exists so that fleetserve can show real
corrections on a fresh machine with no model hub, and so that speed work (quantization above all)
has a quality gate to pass. It is a demonstration model, not a production corrector: see its scores
before relying on its output.

## Use

```bash
fleetserve serve models/correct-6m        # then POST {{"text": "..."}} to /v1/correct
fleetserve eval models/correct-6m         # GLEU on JFLEG dev
```

The prompt format is in `generation_config.json` (`correction_prompt`:
`<|source|>{{text}}<|correct|>`; the model answers with the corrected text and `<|end|>`), and the chat
template wraps the last user message the same way. `correction_alphabet` there lists the characters
it was trained on: `/v1/correct` and `fleetserve eval` show it nothing else (quotes, dashes and accents
in a plain form, other words as a placeholder name it copies) and correct a text sentence by sentence.

## Scores

{score_text}

## Model

- Architecture: `LlamaForCausalLM`, hidden {r['hidden_size']}, {r['num_layers']} layers,
  {r['num_heads']} heads ({r['num_kv_heads']} KV heads), MLP {r['intermediate_size']}, tied embeddings,
  {figures['parameters'] / 1e6:.2f}M parameters, float32 safetensors.
- Tokenizer: byte-level BPE, {r['vocab_size']} tokens, trained on the training sentences and a corrupted
  copy of each (so misspelt words split into sensible pieces).

## Data

- Clean text: the {figures['train_sentences'] + figures['heldout_sentences']} usable example sentences of
  WordNet 3.0 glosses (`../shared/data/corpus/wordnet-examples.txt`, Princeton University, WordNet
  license: free use, copy and distribution with the copyright notice; see `WORDNET-LICENSE.txt` there).
  Each line is normalised (first letter upper case, a final stop); {figures['heldout_sentences']} sentences
  ({r['holdout_share']:.0%}, listed in `heldout.txt`) are held out and never trained on.
- Pairs: one to {len(pairs['join_weights'])} sentences joined (weights {tuple(pairs['join_weights'])}), so inputs are as
  long as learner sentences; {pairs['clean_share']:.0%} of pairs keep the source clean (the model must leave
  correct text alone); the rest get about one error per {pairs['words_per_error']:g} words (at least one), drawn by
  type as below. In {pairs.get('rare_share', 0):.0%} of pairs up to {pairs.get('rare_words', 0)} words are replaced on both
  sides by invented words or numbers that no error touches, so the model learns to copy what it does
  not know instead of "correcting" it into a word it does. A fresh pair is drawn for every training example.
- Never trained on JFLEG (it is the evaluation set).

| error type | what it does | share of injected errors |
| --- | --- | --- |
{rate_rows}

## Recipe

`fleetserve train-demo --out DIR` (seed {r['seed']}): {r['steps']} AdamW steps of {r['batch_size']} pairs
(lr {r['lr']} with {r['warmup']} warm-up steps and cosine decay to 10%, weight decay {r['weight_decay']},
gradient clipping 1.0), loss on the corrected text only, bf16 autocast for matrix products with float32
master weights, pairs up to {r['max_seq_len']} tokens. {_conservative(r)}Training took
{_minutes(figures)} on {figures['threads']} CPU threads (torch {figures['torch']}); the loss curves
(held-out loss on sentences never trained on) are in `training.json`.

## License

The weights are released with fleetserve. The training text is WordNet's (license above); the
evaluation data (JFLEG, CC BY-NC-SA 4.0) was only used to measure.
"""


def _conservative(r: dict[str, Any]) -> str:
    if not r.get("conservative_steps"):
        return ""
    c = r["conservative_pairs"]
    return (f"Then a conservative phase of {r['conservative_steps']} steps with a fresh optimizer (lr "
            f"{r['conservative_lr']}, 100 warm-up steps, cosine decay) on pairs with {c['clean_share']:.0%} clean "
            f"sources and one error per {c['words_per_error']:g} words, so the model learns to leave alone what it "
            f"does not recognise. ")


def _minutes(figures: dict[str, Any]) -> str:
    total = figures["training_seconds"] + (figures.get("main_phase_seconds") or 0)
    text = f"{total / 60:.0f} minutes"
    if figures.get("main_phase_seconds"):
        text += (f" ({figures['main_phase_seconds'] / 60:.0f} for the main phase, then "
                 f"{figures['training_seconds'] / 60:.0f} for the rest, run with `--from-main-phase`)")
    return text


def write(out: str | Path, figures: dict[str, Any], scores: dict[str, Any] | None = None) -> Path:
    path = Path(out) / "README.md"
    path.write_text(render(figures, scores))
    return path
