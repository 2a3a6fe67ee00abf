"""Where the benchmarks find the project: the repository, and the test rig
(tests/rig/) they share with the tests, put on the path here, once."""

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def use_rig():
    """Put the repository and the test rig on the path; the repository's folder."""
    for path in (os.path.join(REPO, "tests"), REPO):
        if path not in sys.path:
            sys.path.insert(0, path)
    return REPO
