"""The fault run in ``make test``: at least 200 migrations through kills and restarts.

Sized to finish in a few minutes on a small machine; ``make soak N=1000`` runs it bigger.
"""

import pytest

from tests.e2e import faults
from tests.e2e.conftest import SUMMARIES

pytestmark = pytest.mark.e2e

MIGRATIONS = 220


@pytest.fixture(scope="module")
def report() -> faults.Report:
    outcome = faults.run(MIGRATIONS, drain_timeout=180)
    SUMMARIES.append(f"{MIGRATIONS} migrations\n{outcome.table()}")
    return outcome


def test_every_migration_completes_once_through_kills_restarts_and_duplicates(report):
    assert report.ok, report.table()
    assert report.completed == MIGRATIONS and report.lost == 0, report.table()
    assert report.duplicated_effects == 0, report.table()


def test_every_kind_of_fault_was_injected_while_migrations_were_in_flight(report):
    kinds = report.faults
    assert kinds["RabbitMQ restart"] == 1 and kinds["PostgreSQL restart"] == 1, report.table()
    assert sum(n for kind, n in kinds.items() if kind.startswith("SIGKILL")) >= 6
    assert kinds["UserLoggedIn delivered twice"] >= 3
    assert report.in_flight_at_broker_restart >= 200, report.table()
    assert report.faults_while_in_flight >= 2, report.table()


def test_observers_see_one_completion_per_migration_and_no_dead_letters_remain(report):
    assert report.observed_completed == MIGRATIONS, report.table()
    assert report.dead_letters and not any(report.dead_letters.values()), report.table()
