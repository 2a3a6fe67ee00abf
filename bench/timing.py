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


def paired_medians(argv_a, argv_b, runs, env):
    """Median wall times of two commands whose runs alternate, so that a
    machine growing busier or quieter weighs on both alike."""
    times = ([], [])
    for argv in (argv_a, argv_b):
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True)
    for _ in range(runs):
        for argv, taken in zip((argv_a, argv_b), times):
            start = time.perf_counter()
            subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True)
            taken.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])
