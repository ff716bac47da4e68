"""Dynamic batching: concurrent callers are run together and each gets exactly its own rows back."""
from __future__ import annotations

import asyncio
import concurrent.futures
import re

import httpx
import numpy as np
import pytest

from serve_models import rows_for, v2_request
from modelkeep.errors import DataError
from modelkeep.serve import ServeSettings
from modelkeep.serve.batching import Batcher


def _doubling(seen: list[int]):
    def runner(rows: np.ndarray) -> dict:
        seen.append(len(rows))
        if (rows < 0).any():
            raise DataError("negative rows")
        return {"twice": rows * 2, "names": [f"row{int(r[0])}" for r in rows]}
    return runner


async def _callers(batcher: Batcher, count: int, rows_each=lambda i: 1) -> list:
    jobs = [np.full((rows_each(i), 3), i, dtype=np.int64) for i in range(count)]
    results = await asyncio.gather(*(batcher.submit(job) for job in jobs), return_exceptions=True)
    return list(zip(jobs, results))


def test_each_caller_gets_its_own_rows_and_batches_stay_within_the_limit():
    seen: list[int] = []
    with concurrent.futures.ThreadPoolExecutor(1) as executor:
        batcher = Batcher(_doubling(seen), max_batch_size=8, max_delay=0.05, executor=executor)
        pairs = asyncio.run(_callers(batcher, 40, rows_each=lambda i: 1 + i % 3))
    for job, result in pairs:
        np.testing.assert_array_equal(result["twice"], job * 2)
        assert result["names"] == [f"row{int(job[0, 0])}"] * len(job)
    assert sum(seen) == sum(len(job) for job, _ in pairs)
    assert max(seen) <= 8 and len(seen) < 40  # batched, and never over the limit


def test_a_bad_job_fails_alone_and_its_batch_neighbours_are_answered():
    seen: list[int] = []

    async def scenario():
        with concurrent.futures.ThreadPoolExecutor(1) as executor:
            batcher = Batcher(_doubling(seen), max_batch_size=64, max_delay=0.05, executor=executor)
            jobs = [np.full((1, 3), i) for i in range(6)] + [np.full((1, 3), -1)]
            return jobs, await asyncio.gather(*(batcher.submit(j) for j in jobs), return_exceptions=True)

    jobs, results = asyncio.run(scenario())
    assert isinstance(results[-1], DataError)
    for job, result in zip(jobs[:-1], results[:-1]):
        np.testing.assert_array_equal(result["twice"], job * 2)


def test_a_job_larger_than_the_batch_runs_alone_and_no_delay_means_no_wait():
    seen: list[int] = []
    with concurrent.futures.ThreadPoolExecutor(1) as executor:
        batcher = Batcher(_doubling(seen), max_batch_size=4, max_delay=0.0, executor=executor)
        pairs = asyncio.run(_callers(batcher, 3, rows_each=lambda i: 10 if i == 1 else 1))
    assert all(not isinstance(result, Exception) for _, result in pairs)
    assert 10 in seen and max(s for s in seen if s != 10) <= 4


def test_close_finishes_queued_jobs():
    seen: list[int] = []

    async def scenario():
        with concurrent.futures.ThreadPoolExecutor(1) as executor:
            batcher = Batcher(_doubling(seen), max_batch_size=2, max_delay=0.01, executor=executor)
            tasks = [asyncio.ensure_future(batcher.submit(np.full((1, 3), i))) for i in range(7)]
            await asyncio.sleep(0)
            await batcher.close()
            return await asyncio.gather(*tasks)

    results = asyncio.run(scenario())
    assert [int(r["twice"][0, 0]) for r in results] == [2 * i for i in range(7)]


def _batched_rows(metrics: str, model: str) -> tuple[float, float]:
    """(batches run, batches of exactly one row) from the Prometheus text."""
    count = float(re.search(rf'modelkeep_batch_size_count{{model="{model}"}} (\S+)', metrics).group(1))
    ones = float(re.search(rf'modelkeep_batch_size_bucket{{le="1.0",model="{model}"}} (\S+)', metrics).group(1))
    return count, ones


@pytest.mark.parametrize("name", ["multiclass", "tokens"])
def test_32_concurrent_callers_through_the_app(model_files, name):
    from modelkeep import load
    from modelkeep.serve.app import create_app

    app = create_app(ServeSettings(sources=(str(model_files[name]),), max_batch_size=16, max_queue_delay_us=20000))
    inputs = [rows_for(name, 1 + i % 2, seed=i) for i in range(32)]

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serve") as http:
            responses = await asyncio.gather(*(http.post(f"/v2/models/{name}/infer", json=v2_request(name, rows))
                                               for rows in inputs))
            return responses, (await http.get("/metrics")).text

    responses, metrics = asyncio.run(scenario())
    model = load(model_files[name])
    for rows, response in zip(inputs, responses):
        assert response.status_code == 200, response.text
        output = {o["name"]: o for o in response.json()["outputs"]}["probabilities"]
        np.testing.assert_allclose(np.reshape(output["data"], output["shape"]), model.predict(rows).probabilities,
                                   rtol=1e-5, atol=1e-6)
    batches, single_rows = _batched_rows(metrics, name)
    assert batches < 32 and single_rows < batches  # requests were run together


def test_rows_of_different_shapes_batch_only_with_their_equals():
    seen: list[tuple] = []

    def runner(rows):
        seen.append(rows.shape)
        return {"sum": rows.sum(axis=1)}

    async def scenario():
        with concurrent.futures.ThreadPoolExecutor(1) as executor:
            batcher = Batcher(runner, max_batch_size=64, max_delay=0.05, executor=executor)
            jobs = [np.ones((1, 3 + i % 2)) * i for i in range(10)]
            return jobs, await asyncio.gather(*(batcher.submit(job) for job in jobs))

    jobs, results = asyncio.run(scenario())
    for job, result in zip(jobs, results):
        np.testing.assert_array_equal(result["sum"], job.sum(axis=1))
    assert sorted(seen) == [(5, 3), (5, 4)]


# The queue delay, with Triton's meaning (max_queue_delay_microseconds): how long the oldest queued request
# waits for others, counted from when it was queued.

def _timed(delay: float, *, preferred=(), max_batch_size=32, runner_seconds: float = 0.0):
    """A batcher whose runner records (start, end, rows) of each batch."""
    import time

    batches: list[tuple[float, float, int]] = []

    def runner(rows):
        start = time.monotonic()
        if runner_seconds:
            time.sleep(runner_seconds)
        batches.append((start, time.monotonic(), len(rows)))
        return {"twice": rows * 2}

    executor = concurrent.futures.ThreadPoolExecutor(1)
    return Batcher(runner, max_batch_size=max_batch_size, max_delay=delay, executor=executor,
                   preferred_batch_sizes=preferred), batches, executor


@pytest.mark.parametrize("delay", [0.0, 0.2])
def test_a_lone_request_waits_the_delay_and_no_more(delay):
    import time

    batcher, batches, executor = _timed(delay)

    async def lone():
        started = time.monotonic()
        result = await batcher.submit(np.ones((1, 3)))
        return time.monotonic() - started, result

    with executor:
        elapsed, result = asyncio.run(lone())
    np.testing.assert_array_equal(result["twice"], np.full((1, 3), 2.0))
    assert delay <= elapsed < delay + 0.08, elapsed  # 0: at once; D: D, not D plus anything that matters


def test_requests_within_the_delay_run_as_one_batch_each_getting_its_rows():
    import time

    batcher, batches, executor = _timed(0.3)

    async def staggered():
        started = time.monotonic()
        tasks = []
        for i in range(3):  # queued 50 ms apart, all inside the first one's 300 ms
            tasks.append(asyncio.ensure_future(batcher.submit(np.full((1 + i, 3), i))))
            await asyncio.sleep(0.05)
        results = await asyncio.gather(*tasks)
        return time.monotonic() - started, results

    with executor:
        elapsed, results = asyncio.run(staggered())
    assert [rows for _, _, rows in batches] == [6]
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result["twice"], np.full((1 + i, 3), 2 * i))
    assert 0.3 <= elapsed < 0.4, elapsed  # the first request's deadline, not the last one's


def test_the_delay_counts_from_queueing_so_a_request_queued_behind_a_batch_runs_when_it_ends():
    batcher, batches, executor = _timed(0.2, runner_seconds=0.3)

    async def behind():
        first = asyncio.ensure_future(batcher.submit(np.ones((1, 3))))
        await asyncio.sleep(0.25)  # the first batch is running (0.2 to 0.5 s); this one's deadline is 0.45 s
        second = await batcher.submit(np.ones((1, 3)))
        await first
        return second

    with executor:
        asyncio.run(behind())
    (_, first_end, _), (second_start, _, _) = batches
    assert second_start - first_end < 0.1  # not another full delay after the first batch


def test_preferred_batch_sizes_stop_the_wait_and_cut_the_batch():
    import time

    batcher, batches, executor = _timed(5.0, preferred=(4,), max_batch_size=32)

    async def four_then_six():
        started = time.monotonic()
        await asyncio.gather(*(batcher.submit(np.full((1, 3), i)) for i in range(4)))
        took = time.monotonic() - started
        return took

    with executor:
        took = asyncio.run(four_then_six())
    assert took < 1.0 and [rows for _, _, rows in batches] == [4]  # the largest preferred size ends the wait

    batcher, batches, executor = _timed(0.1, preferred=(4,), max_batch_size=32)
    with executor:
        results = asyncio.run(_callers(batcher, 6))
    assert [rows for _, _, rows in batches] == [4, 2]  # cut to the preferred size; the rest after its delay
    for job, result in results:
        np.testing.assert_array_equal(result["twice"], job * 2)


@pytest.mark.parametrize(("options", "message"), [
    (["--max-queue-delay-us", "-1"], "max_queue_delay_us must be a whole number of microseconds"),
    (["--preferred-batch-size", "64"], "a preferred batch size must be a whole number from 1 to max_batch_size (32)"),
])
def test_the_command_refuses_bad_batching_options_in_one_line(model_files, capsys, options, message):
    from modelkeep.cli.main import main

    assert main(["serve", str(model_files["binary"]), "--port", "1", *options]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
