"""`peon`, the one command of two programs: the user's (peon.cli) and the tools Peon's Jobs run in
pods (peon.jobs: `peon archive`, `peon store`). The image and a user's machine share the name, so
a Job's command line and a user's restore of a download read the same; the first word routes."""
from __future__ import annotations

import sys

JOB_TOOLS = ("archive", "store")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in JOB_TOOLS:
        from peon.jobs.main import main as jobs_main
        return jobs_main(argv)
    from peon.cli.main import main as cli_main
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
