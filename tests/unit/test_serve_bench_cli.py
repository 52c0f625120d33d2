"""bench.serve_bench's arguments and ratio table (no servers, no timing)."""

from __future__ import annotations

import argparse

import pytest

from bench.serve_bench import Result, parse_args, ratio_rows


def test_defaults_cover_one_eight_and_sixty_four_connections_and_a_million_rows():
    args = parse_args([])
    assert args.concurrency == [1, 8, 64] and args.batch_rows == 1_000_000 and not args.no_batch


def test_quick_shortens_everything_and_concurrency_takes_a_list():
    args = parse_args(["--quick", "--concurrency", "2,16"])
    assert (args.seconds, args.rounds, args.concurrency) == (1.0, 1, [2, 16])
    assert args.batch_rows == 100_000 and args.repeat == 200
    with pytest.raises(SystemExit):
        parse_args(["--concurrency", "0"])
    with pytest.raises(argparse.ArgumentTypeError):
        from bench.serve_bench import _counts

        _counts("")


def test_ratio_table_prints_throughput_and_p99_of_the_service_over_bare_fastapi():
    service = Result("loopline service", "single", 1, 2.0, latencies=[0.010] * 300)
    bare = Result("bare FastAPI", "single", 1, 2.0, latencies=[0.020] * 150)
    header, line = ratio_rows({("single", 8): [service, bare]})
    assert "throughput" in header and "p99" in header
    assert line.split()[:2] == ["single", "8"]
    assert "2.00x" in line and "0.50x" in line and line.endswith("met, met")
