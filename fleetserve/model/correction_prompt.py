"""The correction prompt: how a text to correct becomes the model's prompts.

The prompt format belongs to the model: `generation_config.json`
may hold `"correction_prompt"` (a template with `{text}`); otherwise the model's
chat template is used with the instruction below as the user turn. It may also hold
`"correction_alphabet"`, the characters the model was trained on (see correction_text.py:
the text is cut into sentences, and what the model cannot read is kept from it).
"""

from __future__ import annotations

import json
from pathlib import Path

from fleetserve.model.correction_text import Alphabet, CorrectionPlan, plan
from fleetserve.model.tokenizer import Tokenizer

MAX_SEGMENTS = 64  # sentences (or lines) of one text: each is a request of its own
MAX_TEXT_CHARS = 100_000  # far more than MAX_SEGMENTS sentences fit in any context this serves
DEFAULT_INSTRUCTION = "Correct the grammar and spelling of this text. Reply with the corrected text only.\n\n{text}"


class CorrectionPrompt:
    def __init__(self, model_dir: str | Path, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        path = Path(model_dir) / "generation_config.json"
        config = json.loads(path.read_text()) if path.is_file() else {}
        self.template: str | None = config.get("correction_prompt")
        self.alphabet = Alphabet(config.get("correction_alphabet"))
        # Tokens the format adds around the text: the text's own length is then
        # known without tokenizing it a second time.
        self.overhead = len(self.encode(""))

    def encode(self, text: str) -> list[int]:
        if self.template is not None:
            return self.tokenizer.encode(self.template.replace("{text}", text))
        return self.tokenizer.encode_chat([{"role": "user", "content": DEFAULT_INSTRUCTION.replace("{text}", text)}])

    def request(self, text: str, max_model_len: int) -> tuple[list[int], int]:
        """Prompt ids and max_tokens, with room for a correction up to twice the text's
        length (decoded greedily); ValueError when the prompt leaves no room in the context."""
        ids = self.encode(text)
        room = max_model_len - len(ids)
        if room < 1:
            raise ValueError(f"text is too long: the prompt of {text[:40]!r}{'...' if len(text) > 40 else ''} is "
                             f"{len(ids)} tokens and this model's maximum context length is {max_model_len}")
        budget = 2 * max(len(ids) - self.overhead, 1) + 16
        return ids, min(room, budget)

    def plan(self, text: str) -> CorrectionPlan:
        """`text` cut into the segments the model corrects one by one (correction_text.py);
        ValueError for a text of more than MAX_TEXT_CHARS characters or MAX_SEGMENTS sentences."""
        if len(text) > MAX_TEXT_CHARS:
            raise ValueError(f"text is too long: {len(text):,} characters, at most {MAX_TEXT_CHARS:,} per request")
        return plan(text, self.alphabet, MAX_SEGMENTS)

    def requests(self, todo: CorrectionPlan, max_model_len: int) -> list[tuple[list[int], int]]:
        """Prompt ids and max_tokens of each of the plan's inputs; ValueError for one too long
        for the context."""
        return [self.request(t, max_model_len) for t in todo.inputs]
