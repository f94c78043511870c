import pytest

from tests.e2e.system import System


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
