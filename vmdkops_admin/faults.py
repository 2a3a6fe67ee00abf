"""Fault injection for the crash tests: with ``VMDKOPS_CRASH_AT=<step>`` in its
environment, a process is killed (SIGKILL) when it reaches that step, so a
test can show that a restart (which reconciles) leaves nothing half-done."""

import os
import signal


def crashpoint(step):
    if step is not None and os.environ.get("VMDKOPS_CRASH_AT") == step:
        os.kill(os.getpid(), signal.SIGKILL)
