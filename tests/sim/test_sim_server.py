"""The continuous-batching server engine, driven directly (no world, no links)."""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Callable

import pytest
from scipy import integrate

from perllm.domain import Decision, PowerSpec, Request, ServerPerf, ServerSpec
from perllm.perf.model import deployment
from perllm.sim.server import Job, ServerEngine, decode_steps, decode_time_s

POWER = PowerSpec(idle_w=20.0, max_w=300.0)
# A made-up deployment whose decode starts compute-bound at batch 1 and becomes memory-bound
# as the KV cache grows: c = 20 ms, alpha = 10 ms + kv * 10 us.
CROSSING = ServerPerf(
    prefill_fixed_s=0.05,
    prefill_s_per_token=1e-4,
    step_overhead_s=1e-3,
    step_weights_s=0.01,
    step_s_per_kv_token=1e-5,
    step_compute_s_per_seq=0.02,
)
MEMORY_BOUND = deployment("rtx-3090", "llama-2-7b", "q4").perf()


def make_spec(
    perf: ServerPerf = MEMORY_BOUND, *, max_batch: int = 8, kv_capacity: int = 100_000
) -> ServerSpec:
    return ServerSpec(
        name="s0",
        tier="edge",
        hardware="test",
        model="test",
        max_batch=max_batch,
        kv_capacity_tokens=kv_capacity,
        perf=perf,
        power=POWER,
        link="lan",
    )


_ids = itertools.count()


def make_job(prompt: int, output: int, arrival_s: float = 0.0, priority: int = 0) -> Job:
    request = Request.of(
        id=next(_ids),
        arrival_s=arrival_s,
        service_class="c",
        prompt_tokens=prompt,
        output_tokens=output,
        request_bytes=4 * prompt,
        response_bytes=4 * output,
        deadline_s=1e9,
    )
    return Job(request, Decision(server=0, priority=priority), dispatch_s=arrival_s)


class Trace:
    """What the engine looked like after every transition."""

    def __init__(self) -> None:
        self.max_batch = 0
        self.max_reserved = 0
        self.max_kv = 0.0
        self.max_queue = 0
        self.finished: list[Job] = []


def drive(engine: ServerEngine, arrivals: list[tuple[float, Job]]) -> Trace:
    """Run the engine as the world does: wake-ups at ``next_event_s``, arrivals in between."""
    pending = deque(sorted(arrivals, key=lambda pair: pair[0]))
    trace = Trace()
    for _ in range(100_000):
        wake = engine.next_event_s()
        if pending and pending[0][0] < wake:
            time_s, job = pending.popleft()
            engine.add(job, time_s)
        elif wake < math.inf:
            trace.finished += engine.wakeup(wake)
        else:
            break
        trace.max_batch = max(trace.max_batch, engine.batch)
        trace.max_reserved = max(trace.max_reserved, engine.reserved)
        trace.max_kv = max(trace.max_kv, engine.kv_tokens())
        trace.max_queue = max(trace.max_queue, len(engine.queue))
    else:  # pragma: no cover
        pytest.fail("the engine did not settle")
    return trace


def integrated_steps_s(perf: ServerPerf, batch: int, kv0: float, n: float) -> float:
    """Independent reference: the integral of the roofline step time over ``n`` steps."""
    if n <= 0:
        return 0.0

    def step(k: float) -> float:
        return perf.step_s(batch, kv0 + batch * k)

    # Where the compute and memory terms cross, the integrand has a kink: split there.
    c = perf.step_compute_s_per_seq * batch
    alpha = perf.step_weights_s + kv0 * perf.step_s_per_kv_token
    beta = batch * perf.step_s_per_kv_token
    return quad_split(step, n, (c - alpha) / beta if beta > 0 else -1.0)


def quad_split(f: Callable[[float], float], n: float, kink: float) -> float:
    """``integral of f over [0, n]``, split at ``kink`` when it lies inside."""
    pieces = [0.0, kink, n] if 0.0 < kink < n else [0.0, n]
    total = 0.0
    for lo, hi in itertools.pairwise(pieces):
        value, _ = integrate.quad(f, lo, hi, limit=200, epsabs=0.0, epsrel=1e-12)
        total += value
    return total


# -- decode_time_s / decode_steps -----------------------------------------------------------------

GRID = [
    # (ovh, c, alpha, beta): memory-bound, compute-bound, crossing, flat
    (1e-3, 0.005, 0.01, 1e-5),
    (0.0, 0.0, 0.02, 1e-6),
    (1e-3, 0.02, 0.01, 1e-5),  # compute-bound, crosses to memory-bound at 1,000 steps
    (4e-4, 0.3, 0.006, 2e-5),  # crosses at 14,700 steps
    (1e-3, 0.02, 0.01, 0.0),  # compute-bound forever
    (1e-3, 0.005, 0.01, 0.0),  # memory-bound, no KV growth
    (2e-3, 0.01, 0.01, 1e-4),  # starts exactly at the crossing
]
STEPS = [1e-3, 0.5, 1.0, 7.0, 100.0, 999.0, 1000.0, 1001.0, 20_000.0, 1e6]


@pytest.mark.parametrize("params", GRID, ids=[str(p) for p in GRID])
def test_decode_steps_inverts_decode_time(params: tuple[float, float, float, float]) -> None:
    for n in STEPS:
        dt = decode_time_s(n, *params)
        assert decode_steps(dt, *params) == pytest.approx(n, rel=1e-9), n
        assert decode_time_s(decode_steps(dt, *params), *params) == pytest.approx(dt, rel=1e-9)


@pytest.mark.parametrize("params", GRID, ids=[str(p) for p in GRID])
def test_decode_time_is_the_integral_of_the_roofline_step(
    params: tuple[float, float, float, float],
) -> None:
    ovh, c, alpha, beta = params
    for n in STEPS[:-1]:

        def step(k: float) -> float:
            return ovh + max(c, alpha + beta * k)

        reference = quad_split(step, n, (c - alpha) / beta if beta > 0 else -1.0)
        assert decode_time_s(n, *params) == pytest.approx(reference, rel=1e-9), n


@pytest.mark.parametrize("params", GRID, ids=[str(p) for p in GRID])
def test_decode_time_is_increasing_and_zero_at_zero(
    params: tuple[float, float, float, float],
) -> None:
    assert decode_time_s(0.0, *params) == 0.0
    assert decode_steps(0.0, *params) == 0.0
    times = [decode_time_s(n, *params) for n in STEPS]
    assert all(a < b for a, b in itertools.pairwise(times))


# -- one request ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("perf", "prompt", "output"),
    [
        (MEMORY_BOUND, 100, 300),
        (MEMORY_BOUND, 1, 1),
        (MEMORY_BOUND, 2000, 2),
        (CROSSING, 100, 2000),  # compute-bound for the first ~900 steps
    ],
    ids=["memory-bound", "one-token", "long-prompt", "crossing"],
)
def test_single_request_finishes_at_prefill_plus_integrated_steps(
    perf: ServerPerf, prompt: int, output: int
) -> None:
    engine = ServerEngine(make_spec(perf))
    job = make_job(prompt, output)
    trace = drive(engine, [(0.0, job)])
    assert trace.finished == [job]
    prefill = perf.prefill_s(prompt)
    decode = integrated_steps_s(perf, 1, prompt + 1, output - 1)
    assert job.start_s == 0.0
    assert job.first_token_s == pytest.approx(prefill, rel=1e-12)
    assert job.finish_s == pytest.approx(prefill + decode, rel=1e-9)
    # Alone, it draws the batch-1 power the whole time, and nothing idles before it.
    assert job.inference_j == pytest.approx(POWER.busy_w(1) * job.finish_s, rel=1e-12)
    assert engine.inference_j == pytest.approx(job.inference_j, rel=1e-12)
    assert job.idle_j == 0.0
    assert engine.busy_s == pytest.approx(job.finish_s)


def test_idle_gap_goes_to_the_first_request_and_the_rest_trails() -> None:
    engine = ServerEngine(make_spec())
    job = make_job(50, 20, arrival_s=2.0)
    drive(engine, [(2.0, job)])
    assert job.idle_j == pytest.approx(POWER.idle_w * 2.0)
    horizon = job.finish_s + 3.0
    assert engine.idle_energy_until(horizon) == pytest.approx(POWER.idle_w * 5.0)


# -- continuous batching --------------------------------------------------------------------------


def test_second_request_joins_mid_decode_and_both_finish() -> None:
    perf = MEMORY_BOUND
    alone_engine = ServerEngine(make_spec(perf))
    alone = make_job(100, 400)
    drive(alone_engine, [(0.0, alone)])

    engine = ServerEngine(make_spec(perf))
    first, second = make_job(100, 400), make_job(50, 100)
    t_join = perf.prefill_s(100) + 0.5  # mid-decode of the first
    assert t_join < alone.finish_s
    trace = drive(engine, [(0.0, first), (t_join, second)])

    assert {id(j) for j in trace.finished} == {id(first), id(second)}
    assert trace.max_batch == 2
    assert second.start_s == t_join  # joins at once: continuous batching
    assert second.first_token_s == pytest.approx(t_join + perf.prefill_s(50))
    assert second.finish_s < first.finish_s
    assert first.finish_s > alone.finish_s + perf.prefill_s(50) - 1e-12

    # Reference, piece by piece: the first decodes alone until t_join, pauses for the
    # second's prefill, decodes in a batch of two while the second needs 99 steps, then alone.
    ovh, w, pk, cps = (
        perf.step_overhead_s,
        perf.step_weights_s,
        perf.step_s_per_kv_token,
        perf.step_compute_s_per_seq,
    )
    s1 = decode_steps(t_join - perf.prefill_s(100), ovh, cps, w + 101 * pk, pk)
    t2 = t_join + perf.prefill_s(50)
    kv2 = 101 + s1 + 51
    second_end = t2 + integrated_steps_s(perf, 2, kv2, 99)
    kv3 = 101 + s1 + 99
    first_end = second_end + integrated_steps_s(perf, 1, kv3, 399 - s1 - 99)
    assert second.finish_s == pytest.approx(second_end, rel=1e-9)
    assert first.finish_s == pytest.approx(first_end, rel=1e-9)

    # Energy: batch-1 power alone, batch-2 power together, split evenly; nothing is lost.
    together = second.finish_s - t_join
    expected = POWER.busy_w(1) * (first.finish_s - together) + POWER.busy_w(2) * together
    assert engine.inference_j == pytest.approx(expected, rel=1e-9)
    assert first.inference_j + second.inference_j == pytest.approx(engine.inference_j, rel=1e-12)
    assert second.inference_j == pytest.approx(POWER.busy_w(2) * together / 2, rel=1e-9)


def test_max_batch_is_respected_and_the_rest_queue() -> None:
    engine = ServerEngine(make_spec(max_batch=2))
    jobs = [make_job(50, out) for out in (100, 300, 200, 50)]
    trace = drive(engine, [(0.0, job) for job in jobs])
    assert len(trace.finished) == 4
    assert trace.max_batch == 2
    assert trace.max_queue >= 2
    # The third enters when the first of the first two leaves, the fourth at the next exit.
    assert jobs[2].start_s == pytest.approx(min(jobs[0].finish_s, jobs[1].finish_s))
    assert jobs[3].start_s == pytest.approx(sorted(j.finish_s for j in jobs[:3])[1])
    assert sum(j.inference_j for j in jobs) == pytest.approx(engine.inference_j, rel=1e-12)


def test_the_queue_serves_lower_priority_values_first_then_arrivals_in_order() -> None:
    engine = ServerEngine(make_spec(max_batch=1))
    running = make_job(50, 100)
    late, urgent, urgent_too = make_job(50, 10, priority=1), make_job(50, 10), make_job(50, 10)
    arrivals = [(0.0, running), (0.1, late), (0.2, urgent), (0.3, urgent_too)]
    trace = drive(engine, arrivals)
    assert len(trace.finished) == 4
    # The request that arrived first but with a higher priority value waits for both others.
    assert running.finish_s <= urgent.start_s < urgent_too.start_s < late.start_s


def test_kv_capacity_is_respected() -> None:
    # Each request reserves prompt + output = 400 tokens: two fit in 1,000, three do not.
    engine = ServerEngine(make_spec(max_batch=8, kv_capacity=1000))
    jobs = [make_job(150, 250) for _ in range(5)]
    trace = drive(engine, [(0.0, job) for job in jobs])
    assert len(trace.finished) == 5
    assert trace.max_batch == 2
    assert trace.max_reserved <= 1000
    assert trace.max_kv <= 1000 + 1e-6
    assert engine.reserved == 0
    assert engine.kv_tokens() == pytest.approx(0.0, abs=1e-6)


def test_a_request_larger_than_the_cache_runs_alone_rather_than_deadlocking() -> None:
    engine = ServerEngine(make_spec(kv_capacity=1000))
    big, small = make_job(1500, 10), make_job(10, 10)
    trace = drive(engine, [(0.0, big), (0.0, small)])
    assert len(trace.finished) == 2
    assert trace.max_batch == 1
    assert small.start_s == pytest.approx(big.finish_s)


# -- clairvoyant prediction ---------------------------------------------------------------------


def _snapshot(engine: ServerEngine) -> tuple[object, ...]:
    queued = (entry[2] for entry in engine.queue)
    jobs = [*queued, *engine.prefilling, *(entry[2] for entry in engine.running)]
    return (
        engine.phase,
        engine.phase_end_s,
        engine.version,
        engine.steps,
        engine.kv_base,
        engine.reserved,
        engine.energy_acc,
        engine.inference_j,
        engine.busy_s,
        engine.accounted_s,
        engine.members,
        len(engine.queue),
        [(entry[0], entry[1], id(entry[2])) for entry in engine.running],
        [(id(j), j.start_s, j.first_token_s, j.finish_s, j.inference_j, j.idle_j) for j in jobs],
    )


@pytest.mark.parametrize("max_batch", [1, 8])
def test_predict_matches_the_real_run_and_leaves_the_engine_alone(max_batch: int) -> None:
    perf = MEMORY_BOUND
    engine = ServerEngine(make_spec(max_batch=max_batch))
    a, b = make_job(200, 300), make_job(80, 150)
    # Bring the engine to a mid-decode state with b queued (max_batch 1) or batched (8).
    engine.add(a, 0.0)
    engine.add(b, 0.01)
    now = perf.prefill_s(200) + 0.2
    while engine.next_event_s() <= now:
        engine.wakeup(engine.next_event_s())

    probe = make_job(120, 60, arrival_s=now)
    arrive_s = now + 0.3
    before = _snapshot(engine)
    predicted = engine.predict(probe, arrive_s)
    assert _snapshot(engine) == before
    assert math.isnan(probe.finish_s)  # the caller's job is not touched either
    assert predicted is not probe

    trace = drive(engine, [(arrive_s, probe)])
    assert probe in trace.finished
    assert probe.finish_s == predicted.finish_s
    assert probe.first_token_s == predicted.first_token_s
    assert probe.inference_j == pytest.approx(predicted.inference_j, rel=1e-12)
    assert probe.idle_j == predicted.idle_j


def test_predict_on_an_idle_engine_includes_the_idle_gap() -> None:
    engine = ServerEngine(make_spec())
    probe = make_job(64, 32)
    predicted = engine.predict(probe, 4.0)
    assert predicted.idle_j == pytest.approx(POWER.idle_w * 4.0)
    assert predicted.finish_s == pytest.approx(
        4.0 + MEMORY_BOUND.prefill_s(64) + integrated_steps_s(MEMORY_BOUND, 1, 65, 31), rel=1e-9
    )
    assert engine.phase_end_s == math.inf and engine.version == 0
