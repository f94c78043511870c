import pytest

from tests.e2e.system import System

# Tables the fault run leaves for the end of the test session's output.
SUMMARIES: list[str] = []


def pytest_terminal_summary(terminalreporter) -> None:
    for summary in SUMMARIES:
        terminalreporter.write_sep("-", "fault run")
        terminalreporter.write_line(summary)


@pytest.fixture(scope="module")
def system(settings, databases, broker, tmp_path_factory):
    """Every process of the product, on this test run's databases and broker namespace."""
    running = System(settings, tmp_path_factory.mktemp("logs"))
    try:
        running.start_all()
    except Exception:
        running.stop_all()
        raise
    yield running
    running.stop_all()
