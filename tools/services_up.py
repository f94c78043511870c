"""Start PostgreSQL or RabbitMQ on a development machine if either is down.

Used by ``make test`` and ``.ci/run``. It only starts local servers that are installed here
and not answering; where the environment points elsewhere it does nothing.
"""

import glob
import logging
import os
import shutil
import socket
import subprocess
import sys
import time

from shared import logs

log = logging.getLogger("services_up")


def answers(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def wait_for(port: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if answers(port):
            return True
        time.sleep(0.5)
    return False


def start_postgres() -> None:
    versions = sorted(os.path.basename(p) for p in glob.glob("/etc/postgresql/*"))
    if not versions or not shutil.which("pg_ctlcluster"):
        raise SystemExit("PostgreSQL is down and not installed here; set GM_POSTGRES_URL")
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main",
                    "start"], check=False)


def start_rabbitmq() -> None:
    if not shutil.which("rabbitmq-server"):
        raise SystemExit("RabbitMQ is down and not installed here; set GM_AMQP_URL")
    subprocess.run(["rabbitmq-server", "-detached"], check=False)


def main() -> int:
    logs.configure("services-up")
    if os.environ.get("GM_POSTGRES_URL") or os.environ.get("GM_AMQP_URL"):
        log.info("servers named in the environment; not starting local ones")
        return 0
    for name, port, start in (("PostgreSQL", 5432, start_postgres),
                              ("RabbitMQ", 5672, start_rabbitmq)):
        if answers(port):
            continue
        log.warning("server down, starting it", extra={"server": name})
        start()
        if not wait_for(port, 90):
            log.error("server did not come up", extra={"server": name, "port": port})
            return 1
    if answers(5672) and shutil.which("rabbitmqctl"):
        # The AMQP port opens before the broker accepts logins; give it a moment.
        subprocess.run(["rabbitmqctl", "await_startup", "--timeout", "60"], check=False,
                       stdout=subprocess.DEVNULL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
