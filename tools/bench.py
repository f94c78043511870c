"""``make bench``: the speed and memory figures, printed, never asserted in tests.

Runs each service's benchmark in turn on throwaway databases and folders.
"""

from tools import bench_sandbox, bench_sessions


def main() -> None:
    print("== sessions: re-owning a guest's rows ==")
    bench_sessions.main()
    print()
    print("== sandbox: moving a guest's tree ==")
    bench_sandbox.main()


if __name__ == "__main__":
    main()
