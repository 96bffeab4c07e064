"""How ``apache2ctl`` is found, with which environment it runs, and how it is started without ``subprocess``.

Why a module of its own: ``monitor``'s cached path (`monitor_fast`) runs the
same ``apache2ctl -t -D DUMP_INCLUDES`` as `apachectl.dump_includes` and must
not diverge from it (another ``apache2ctl``, another ``PATH``, another
locale would be another answer), yet it may not import what `apachectl`
imports (``re``, ``shutil``, ``subprocess``: about 15 ms at every run). So the
lookup, the environment and the start of a run (`spawn`, also for the dump
`prefetch` starts before the imports) live here, with nothing but ``os``
imported, and `apachectl` uses them.
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


#: Popen objects of `spawn` below 3.8, kept so that their finaliser never reaps a child its caller waits for.
_popen = []  # type: List[object]


def spawn(argv, env, out):  # type: (List[str], Dict[str, str], int) -> int
    """Start argv as `proc.run` runs a program: stdin /dev/null, stdout and stderr on ``out``; its pid.

    SIGPIPE and SIGXFSZ go back to their defaults in the child, as
    ``subprocess`` does (``restore_signals``): Python ignores them, and an
    ignored signal stays ignored across exec. ``os.posix_spawn`` where there
    is one (3.8+; no ``subprocess`` import), else ``subprocess``. The caller
    waits for the pid (``os.waitpid``). Raises OSError.
    """
    if not hasattr(os, "posix_spawn"):  # Python < 3.8
        import subprocess

        p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        _popen.append(p)
        return p.pid
    try:
        import _signal
        sigdef = (_signal.SIGPIPE, _signal.SIGXFSZ)  # `signal` itself builds enums: milliseconds
    except (ImportError, AttributeError):
        sigdef = ()
    null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        dup2 = os.POSIX_SPAWN_DUP2  # novermin
        actions = [(dup2, null, 0), (dup2, out, 1), (dup2, out, 2)]
        return os.posix_spawn(argv[0], argv, env, setsigdef=sigdef, file_actions=actions)  # novermin
    finally:
        os.close(null)


if False:  # type names for checkers only: importing typing costs a few ms at every monitor run
    from typing import Dict, List, Mapping, Optional  # noqa: F401
