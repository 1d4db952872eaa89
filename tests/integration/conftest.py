"""Shared fixtures for the integration suites: the binary, and the harness on sys.path."""
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "harness"))
sys.path.insert(0, HERE)

import runner  # noqa: E402
from pgcluster import PgCluster  # noqa: E402,F401  (re-exported for the suites)


@pytest.fixture(scope="session")
def pgfanout():
    """The pgfanout binary's path; the suite fails (not skips) when it is missing."""
    path = runner.pgfanout_bin()
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"pgfanout binary not found or not executable at {path}"
                    " (build it, or set PGFANOUT_BIN)")
    return path


def start_cluster(**kw):
    """Starts a PgCluster; the caller stops it."""
    return PgCluster(**kw).start()
