"""The worker supervisor: a command that keeps failing right after it starts (an engine that
cannot load) ends the supervisor with its exit code instead of restarting forever."""

from __future__ import annotations

import sys

from app.processes import supervise


def test_a_command_that_cannot_start_ends_the_supervisor_with_its_code() -> None:
    command = ([sys.executable, "-c", "import sys; sys.exit(3)"], {})
    assert supervise([command], max_delay=0.2, max_failed_starts=3, min_uptime=30) == 3


def test_a_command_that_ends_well_is_not_restarted() -> None:
    command = ([sys.executable, "-c", "pass"], {})
    assert supervise([command], max_delay=0.2) == 0
