"""What the engine reports per request and step, and its counters: the same
structs in the engine, on the wire between a pod's processes and in the server.
No torch here: the pod's frontends import this without loading the model's libraries."""

from __future__ import annotations

import enum

import msgspec


class FinishReason(str, enum.Enum):
    STOP = "stop"  # EOS, a stop token or a stop string
    LENGTH = "length"  # max_tokens or the model length
    ABORT = "abort"  # cancelled by the client or the server
    ERROR = "error"  # computing this request's step failed; the others went on
    REJECTED = "rejected"  # the waiting queue was full, or the request waited longer than the queue limit
    INVALID = "invalid"  # the engine cannot run this request (its client checks first, so only a race)


# Finishes that are failures, with the HTTP status a server answers them with.
FAILURE_STATUS = {FinishReason.ERROR: 500, FinishReason.REJECTED: 429, FinishReason.INVALID: 400}


class StepOutput(msgspec.Struct, array_like=True, omit_defaults=True):
    """What one engine step produced for one request: the new token and, when it
    ended, why. The engine sends only these deltas, never whole sequences."""

    request_id: str
    new_token_ids: list[int]
    finish_reason: FinishReason | None = None
    error: str | None = None  # why, when finish_reason is a failure (FAILURE_STATUS)


class EngineStats(msgspec.Struct, tag="stats", array_like=True):
    """The engine's counters. The core process publishes them with every heartbeat."""

    waiting: int = 0
    running: int = 0
    steps: int = 0
    generated_tokens: int = 0
    prefill_tokens: int = 0
    last_step_s: float = 0.0
    last_batch_size: int = 0
    step_seconds: float = 0.0  # summed over steps
    queue_seconds: float = 0.0  # summed over admitted requests: arrival to admission
    admitted: int = 0
    failed: int = 0  # requests ended by an error in their step
    refused: int = 0  # requests that waited longer than the queue limit for a slot
    draft_tokens: int = 0  # tokens proposed by speculative decoding
    accepted_tokens: int = 0  # of which greedy decoding agreed with
    single_thread_steps: int = 0  # steps the measured thread choice ran on one thread
    # The time integral of waiting + running, and the engine's monotonic clock when this
    # copy was taken: two snapshots give the mean number in flight between them, which
    # the autoscaler reads (a sample of the instant count at a fast pod is mostly 0 or 1).
    inflight_seconds: float = 0.0
    clock: float = 0.0


# Of several engines' stats: the latest step and the newest clock; every other field adds up.
_LATEST = ("last_step_s", "clock")


def combined_stats(stats: list[EngineStats]) -> EngineStats:
    """One pod's stats from its engine cores' (a pod with several: engine/core_pool.py).
    The in-flight integrals add up, and with them the mean in flight that the autoscaler
    reads between two snapshots (each core's own clock is the host's monotonic clock)."""
    if len(stats) == 1:
        return stats[0]
    fields = {}
    for name in EngineStats.__struct_fields__:
        values = [getattr(s, name) for s in stats]
        fields[name] = max(values) if name in _LATEST else sum(values)
    return EngineStats(**fields)


class HeldAnswers:
    """Requests whose caller wants every token at once, when the request ends (a
    non-streamed answer with no stop strings to watch): their step outputs are
    collected here instead of being delivered one token per step. At 64 requests per
    step that saves 63 of every 64 wake-ups, messages and detokenizer calls."""

    def __init__(self) -> None:
        self._held: dict[str, list[int]] = {}

    def hold(self, request_id: str) -> None:
        self._held[request_id] = []

    def drop(self, request_id: str) -> None:
        self._held.pop(request_id, None)

    def __len__(self) -> int:
        return len(self._held)

    def filter(self, outputs: list[StepOutput]) -> list[StepOutput]:
        """The outputs to deliver now: those of requests not held, and one output with
        all the tokens of each held request that ended in this step."""
        if not self._held:
            return outputs
        deliver = []
        for out in outputs:
            held = self._held.get(out.request_id)
            if held is None:
                deliver.append(out)
                continue
            held.extend(out.new_token_ids)
            if out.finish_reason is not None:
                del self._held[out.request_id]
                deliver.append(StepOutput(out.request_id, held, out.finish_reason, out.error))
        return deliver
