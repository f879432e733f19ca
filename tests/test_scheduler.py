from fleetserve.engine.request import Request
from fleetserve.engine.sampling_params import SamplingParams
from fleetserve.engine.scheduler import Scheduler


def req(rid: str, n: int = 4) -> Request:
    return Request(rid, [1] * n, SamplingParams())


def test_slots_are_given_lowest_first_and_reused():
    s = Scheduler(max_num_seqs=3, max_prefill_tokens=100)
    for i in range(4):
        s.add(req(str(i)))
    batch = s.schedule()
    assert [r.slot for r in batch.prefill] == [0, 1, 2] and not batch.decode
    assert [r.request_id for r in s.waiting] == ["3"]
    s.finish(batch.prefill[1])  # frees slot 1
    batch = s.schedule()
    assert [r.slot for r in batch.decode] == [0, 2]
    assert [(r.request_id, r.slot) for r in batch.prefill] == [("3", 1)]


def test_prefill_budget_limits_admissions_but_admits_at_least_one():
    s = Scheduler(max_num_seqs=8, max_prefill_tokens=10)
    s.add(req("long", 50))
    s.add(req("a", 4))
    assert [r.request_id for r in s.schedule().prefill] == ["long"]
    s.add(req("b", 4))
    s.add(req("c", 4))
    assert [r.request_id for r in s.schedule().prefill] == ["a", "b"]  # c would exceed 10


def test_finish_of_waiting_request_and_unknown_ids():
    s = Scheduler(max_num_seqs=1, max_prefill_tokens=100)
    a, b = req("a"), req("b")
    s.add(a)
    s.add(b)
    s.schedule()
    s.finish(b)  # still waiting
    assert not s.waiting and s.num_unfinished == 1
    s.finish(b)  # twice is harmless
    assert s.get("b") is None and s.get("a") is a


def test_duplicate_ids_are_refused():
    s = Scheduler(max_num_seqs=1, max_prefill_tokens=100)
    s.add(req("a"))
    try:
        s.add(req("a"))
    except ValueError as e:
        assert "duplicate" in str(e)
    else:
        raise AssertionError("duplicate id accepted")


def test_compaction_moves_the_highest_running_request_into_a_freed_slot():
    s = Scheduler(max_num_seqs=4, max_prefill_tokens=100, compact=True)
    reqs = [req(str(i)) for i in range(4)]
    for r in reqs:
        s.add(r)
    s.schedule()
    s.finish(reqs[1])  # slot 1 freed below the highest (3): request 3 moves down
    assert [(m.src, m.dst, m.request.request_id) for m in s.take_moves()] == [(3, 1, "3")]
    assert reqs[3].slot == 1 and sorted(s.running) == [0, 1, 2] and s.take_moves() == []
    s.finish(reqs[2])  # the highest: nothing to move
    assert s.take_moves() == [] and sorted(s.running) == [0, 1]
    s.add(req("new"))
    assert [r.slot for r in s.schedule().prefill] == [2]  # the next slot up, not a hole


def test_without_compaction_holes_stay():
    s = Scheduler(max_num_seqs=3, max_prefill_tokens=100)
    reqs = [req(str(i)) for i in range(3)]
    for r in reqs:
        s.add(r)
    s.schedule()
    s.finish(reqs[0])
    assert s.take_moves() == [] and sorted(s.running) == [1, 2]
