"""Timing helper shared by the benchmarks."""

import statistics
import subprocess
import time


def median_seconds(argv, runs, env):
    """Median wall time of ``runs`` runs of a command, after one warm-up run."""
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)
