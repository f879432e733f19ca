"""Messages between the pod's frontends and its engine-core process.

Compact msgpack arrays (msgspec structs with `array_like`), one tagged union
per direction, so a message costs a few microseconds to encode and decode. The
request's settings travel as the engine's own `SamplingParams`, and its results
as the engine's own `StepOutput`s: one message per step and frontend, carrying
every request of that frontend that advanced, never one per token.
"""

from __future__ import annotations

import msgspec

from fleetserve.engine.outputs import EngineStats, StepOutput
from fleetserve.engine.sampling_params import SamplingParams

# ---- frontend -> core ---------------------------------------------------------------------------


class Hello(msgspec.Struct, tag="hello", array_like=True):
    """A frontend introduces itself; the core answers with `Welcome`."""
    pid: int


class Add(msgspec.Struct, tag="add", array_like=True):
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
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
    """One step's results for one frontend; a failed or refused request is an output
    whose finish reason is a failure (outputs.FAILURE_STATUS)."""
    items: list[StepOutput]


ToFrontend = Welcome | Outputs | EngineStats  # the stats are the heartbeat (see beats_address)

to_core_encoder = msgspec.msgpack.Encoder()
to_core_decoder = msgspec.msgpack.Decoder(ToCore)
to_frontend_encoder = msgspec.msgpack.Encoder()
to_frontend_decoder = msgspec.msgpack.Decoder(ToFrontend)


def beats_address(core_address: str) -> str:
    """Where the core publishes its heartbeats (EngineStats, from a thread of its own so
    that a long step does not silence it), beside its request socket."""
    return core_address + "-beats"
