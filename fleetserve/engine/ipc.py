"""Messages between the pod's frontends and its engine-core process.

Compact msgpack arrays (msgspec structs with `array_like`), one tagged union
per direction, so a message costs a few microseconds to encode and decode.
The core answers each frontend with one `Outputs` message per step carrying
every request of that frontend that advanced, not one message per token.
"""

from __future__ import annotations

import msgspec

from fleetserve.engine.sampling_params import SamplingParams


class Params(msgspec.Struct, array_like=True, omit_defaults=True):
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop_token_ids: list[int] = []
    ignore_eos: bool = False

    @classmethod
    def of(cls, p: SamplingParams) -> Params:
        # Stop strings and detokenizing settings stay in the frontend: the core sees token ids only.
        return cls(p.max_tokens, p.temperature, p.top_p, p.top_k, p.seed, list(p.stop_token_ids), p.ignore_eos)

    def sampling(self) -> SamplingParams:
        return SamplingParams(max_tokens=self.max_tokens, temperature=self.temperature, top_p=self.top_p,
                              top_k=self.top_k, seed=self.seed, stop_token_ids=self.stop_token_ids,
                              ignore_eos=self.ignore_eos)


# ---- frontend -> core ---------------------------------------------------------------------------

class Hello(msgspec.Struct, tag="hello", array_like=True):
    """A frontend introduces itself; the core answers with `Welcome`."""
    pid: int


class Add(msgspec.Struct, tag="add", array_like=True):
    request_id: str
    prompt_ids: list[int]
    params: Params
    whole: bool = False  # send the tokens once, when the request ends (see outputs.HeldAnswers)


class Abort(msgspec.Struct, tag="abort", array_like=True):
    request_ids: list[str]


ToCore = Hello | Add | Abort


# ---- core -> frontend ---------------------------------------------------------------------------

class Welcome(msgspec.Struct, tag="welcome", array_like=True):
    max_model_len: int
    max_num_seqs: int
    vocab_size: int
    pid: int = 0  # the core's process, which a frontend checks for when the core falls silent


class Outputs(msgspec.Struct, tag="out", array_like=True):
    """One step's results for one frontend: (request id, new token ids, finish reason or "")."""
    items: list[tuple[str, list[int], str]]


class Rejected(msgspec.Struct, tag="rejected", array_like=True):
    """A request the core would not take or could not finish: `status` 429 (waiting queue
    full), 400 (cannot run) or 500 (computing its step failed; the others went on)."""
    request_id: str
    status: int
    message: str


class Stats(msgspec.Struct, tag="stats", array_like=True):
    """The core's state, sent with every heartbeat (on the heartbeat socket, see
    `beats_address`, from a thread of its own so that a long step does not silence it)."""
    waiting: int
    running: int
    steps: int
    generated_tokens: int
    prefill_tokens: int
    last_step_s: float
    last_batch_size: int
    step_seconds: float = 0.0
    queue_seconds: float = 0.0
    admitted: int = 0
    failed: int = 0
    refused: int = 0


ToFrontend = Welcome | Outputs | Rejected | Stats

to_core_encoder = msgspec.msgpack.Encoder()
to_core_decoder = msgspec.msgpack.Decoder(ToCore)
to_frontend_encoder = msgspec.msgpack.Encoder()
to_frontend_decoder = msgspec.msgpack.Decoder(ToFrontend)


def beats_address(core_address: str) -> str:
    """Where the core publishes its heartbeats, beside its request socket."""
    return core_address + "-beats"
