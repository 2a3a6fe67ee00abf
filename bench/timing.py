"""Timing helper shared by the benchmarks."""

import statistics
import subprocess
import time


def _seconds(argv, env):
    """Wall time of one run of a command."""
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def median_seconds(argv, runs, env):
    """Median wall time of ``runs`` runs of a command, after one warm-up run."""
    _seconds(argv, env)
    return statistics.median(_seconds(argv, env) for _ in range(runs))


def paired_medians(argv_a, argv_b, runs, env):
    """Median wall times of two commands whose runs alternate (after a
    warm-up run of each), so that a machine growing busier or quieter weighs
    on both alike."""
    _seconds(argv_a, env)
    _seconds(argv_b, env)
    pairs = [(_seconds(argv_a, env), _seconds(argv_b, env)) for _ in range(runs)]
    return statistics.median(a for a, _ in pairs), statistics.median(b for _, b in pairs)
