"""How ``apache2ctl`` is found and with which environment it runs: shared by `apachectl` and `monitor_fast`.

Why a module of its own: ``monitor``'s cached path (`monitor_fast`) runs the
same ``apache2ctl -t -D DUMP_INCLUDES`` as `apachectl.dump_includes` and must
not diverge from it (another ``apache2ctl``, another ``PATH``, another
locale would be another answer), yet it may not import what `apachectl`
imports (``re``, ``shutil``, ``subprocess``: about 15 ms at every run). So the
lookup and the environment live here, with nothing but ``os`` imported, and
`apachectl` uses them.
"""

import os

SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
#: The dump `monitor` runs once: the files Apache loads and the config test verdict.
DUMP_ARGS = ("-t", "-D", "DUMP_INCLUDES")
#: Seconds `apachectl.run` allows a run of apache2ctl.
TIMEOUT = 120.0


def environment(environ=None):  # type: (Optional[Mapping[str, str]]) -> Dict[str, str]
    """The environment with the system dirs appended to PATH and LC_ALL=C for parseable output."""
    env = dict(os.environ if environ is None else environ)
    path = env.get("PATH", "")
    env["PATH"] = "%s:%s" % (path, SYSTEM_PATH) if path else SYSTEM_PATH
    env["LC_ALL"] = "C"
    return env


def which(name, path):  # type: (str, str) -> Optional[str]
    """The first executable regular file called name in the ``:``-separated path (``shutil.which``'s rule)."""
    for d in path.split(os.pathsep):
        p = os.path.join(d, name)
        if os.access(p, os.F_OK | os.X_OK) and not os.path.isdir(p):
            return p
    return None


def apache2ctl(environ=None):  # type: (Optional[Mapping[str, str]]) -> Optional[str]
    """Path of the apache2ctl that runs (first on PATH, then the system dirs), or None."""
    return which("apache2ctl", environment(environ)["PATH"])


if False:  # type names for checkers only: importing typing costs a few ms at every monitor run
    from typing import Dict, Mapping, Optional  # noqa: F401
