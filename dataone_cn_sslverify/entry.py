"""The command's entry point: ``monitor``'s cached verdict first, else the full command line (`cli.main`).

Why a module of its own: a ``monitor`` run every minute spends most of its
time importing (``argparse``, ``re``, ``json``, ``typing``, ``subprocess``,
the package's config parser), not working. This module imports nothing;
for a ``monitor`` command line `monitor_fast` answers from its verdict
cache when nothing the verdict depends on has changed (a lean module:
``os``, ``stat``, ``fcntl``, ``select``), and everything else -- other
commands, other options, a miss, any error -- goes to `cli.main`
unchanged. For the commands that begin with Apache's dump (``apply``,
``revert``, ``status``, ``diff``), `prefetch` starts it before `cli` is
imported. ``sbin/dataone-cn-sslverify`` and ``python3 -m
dataone_cn_sslverify`` both call `main`.
"""

import sys


def main(argv=None):  # type: (Optional[List[str]]) -> int
    args = list(sys.argv[1:] if argv is None else argv)
    if "monitor" in args:
        hit = None
        try:
            from . import monitor_fast

            hit = monitor_fast.cached(args)
        except Exception:  # the fast path only saves time: any surprise is a miss
            hit = None
        if hit is not None:
            sys.stdout.write(hit[0])
            sys.stdout.flush()
            return hit[1]
    try:
        from . import prefetch

        prefetch.start(args)  # Apache parses on another core while the imports below run
    except Exception:  # it only saves time: the command runs the dump itself
        pass
    from .cli import main as cli_main

    return cli_main(args)


if False:  # type names for checkers only
    from typing import List, Optional  # noqa: F401
