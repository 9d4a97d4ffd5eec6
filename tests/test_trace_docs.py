"""The tracer's module docstring draws the call chain with a runnable example: keep it running."""
import doctest

import core.trace.tracer as tracer


def test_tracer_docstring_example_runs():
    result = doctest.testmod(tracer)
    assert result.attempted > 0 and result.failed == 0
