"""/v1/correct: prompt construction from the model directory, and character edits.

The prompt format belongs to the model, not the server: `generation_config.json`
may hold `"correction_prompt"` (a template with `{text}`); otherwise the model's
chat template is used with the instruction below as the user turn.
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path

from fleetserve.engine.sampling_params import SamplingParams
from fleetserve.model.tokenizer import Tokenizer

DEFAULT_INSTRUCTION = "Correct the grammar and spelling of this text. Reply with the corrected text only.\n\n{text}"
_PIECES = re.compile(r"\s+|\w+|[^\w\s]")


class CorrectionPrompt:
    def __init__(self, model_dir: str | Path, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        path = Path(model_dir) / "generation_config.json"
        config = json.loads(path.read_text()) if path.is_file() else {}
        self.template: str | None = config.get("correction_prompt")
        # Tokens the format adds around the text: the text's own length is then
        # known without tokenizing it a second time.
        self.overhead = len(self.encode(""))

    def encode(self, text: str) -> list[int]:
        if self.template is not None:
            return self.tokenizer.encode(self.template.replace("{text}", text))
        return self.tokenizer.encode_chat([{"role": "user", "content": DEFAULT_INSTRUCTION.replace("{text}", text)}])

    def request(self, text: str, max_model_len: int) -> tuple[list[int], SamplingParams]:
        """Prompt ids and greedy sampling with room for a correction up to twice the
        text's length; ValueError when the prompt leaves no room in the context."""
        ids = self.encode(text)
        room = max_model_len - len(ids)
        if room < 1:
            raise ValueError(f"text is too long: its prompt is {len(ids)} tokens and this model's "
                             f"maximum context length is {max_model_len}")
        budget = 2 * max(len(ids) - self.overhead, 1) + 16
        return ids, SamplingParams(max_tokens=min(room, budget), temperature=0.0)


def char_edits(source: str, target: str) -> list[dict]:
    """Word-level diff of source -> target as character spans of `source`:
    [{"start", "end", "replacement"}], applied right to left they give `target`."""
    a, b = _PIECES.findall(source), _PIECES.findall(target)
    offsets = [0]
    for piece in a:
        offsets.append(offsets[-1] + len(piece))
    edits = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op != "equal":
            edits.append({"start": offsets[i1], "end": offsets[i2], "replacement": "".join(b[j1:j2])})
    return edits
