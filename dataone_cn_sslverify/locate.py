"""Find the CN SSL vhost: the files Apache itself loads, never a backup or a disabled site.

First choice is Apache's own answer (``apache2ctl -t -D DUMP_INCLUDES``): it
lists exactly the files the server loads, in order, after every
``IfModule``/``IfDefine``, glob and ``sites-enabled`` symlink, so a
``cn-ssl.conf.20240101`` copy, a disabled site or our own backups (outside
``/etc/apache2`` anyway) can never be picked. When the current configuration
does not parse, Apache answers nothing; then we follow ``Include`` directives
from ``apache2.conf`` ourselves, the way `loaded` models Apache, so that
``status`` can still say what is there. ``--vhost FILE`` overrides both.

A vhost reached through a symlink (``sites-enabled/cn-ssl.conf``) is reported
and edited at its real path (``sites-available/cn-ssl.conf``).
"""

import os
from typing import Dict, List, Optional, Set, Tuple

from . import apacheconf as ac
from . import apachectl, errors, loaded, paths, policy
from .records import dataclass, field


class NotFound(errors.NotFoundError, LookupError):
    """No CN SSL vhost (exit 4)."""


@dataclass
class VhostFile:
    """One loaded file holding SSL vhosts, with what each of them holds."""

    path: str  # as Apache names it (may be a symlink)
    real_path: str
    data: bytes
    assessments: List[policy.Assessment] = field(default_factory=list)


@dataclass
class Located:
    files: List[VhostFile]
    source: str  # "apache" | "walk" | "--vhost"
    config_ok: Optional[bool]
    config_error: str = ""

    @property
    def assessments(self) -> List[policy.Assessment]:
        return [a for f in self.files for a in f.assessments]

    def candidates(self) -> List[policy.Assessment]:
        """SSL vhosts that carry a client-verification block (any state but absent)."""
        return [a for a in self.assessments if a.state != "absent"]

    def file_of(self, a: policy.Assessment) -> VhostFile:
        for f in self.files:
            if a in f.assessments:
                return f
        raise KeyError(a.filename)


def walk_includes(root_conf: str, server_root: str) -> List[str]:
    """Files reached from root_conf as Apache would load them, each once, named as included.

    The walk is `loaded.expand_config` (Includes expanded in load order,
    ``IfModule``/``IfDefine`` evaluated, unreadable or broken files listed
    and not followed); here only its list of files matters.
    """
    view = loaded.expand_config(root_conf, server_root, resolve=lambda path: path, env=dict(os.environ))
    return _each_file_once(view.files)


def _each_file_once(paths: List[str]) -> List[str]:
    """Keep the first name of each real file.

    A site enabled under two names (``sites-enabled/cn-ssl.conf`` and
    ``001-cn.conf`` linking to the same target) is one file with one block
    to patch; Apache lists it twice.
    """
    unique: List[str] = []
    seen: Set[str] = set()
    for p in paths:
        real = os.path.realpath(p)
        if real not in seen:
            seen.add(real)
            unique.append(p)
    return unique


def loaded_files(res: Optional[apachectl.Result] = None) -> Located:
    """Files Apache loads: its own list when the config parses, else our walk.

    ``res``: an ``apache2ctl -t -D DUMP_INCLUDES`` run the caller already made
    (``monitor`` makes exactly one and also reads its verdict).
    """
    res = res if res is not None else apachectl.dump_includes()
    files = apachectl.parse_dump_includes(res.output) if res.ok else []
    if res.ok and files:
        return Located([VhostFile(p, os.path.realpath(p), b"") for p in _each_file_once(files)], "apache", True)
    cd = apachectl.confdir()
    walked = walk_includes(os.path.join(cd, "apache2.conf"), cd)
    return Located([VhostFile(p, os.path.realpath(p), b"") for p in walked], "walk", False, res.first_error)


def _assess_file(vf: VhostFile, snippet: str) -> Optional[VhostFile]:
    """Read and assess one file; None when it holds no SSL vhost. Raises ConfigSyntaxError."""
    if os.path.realpath(vf.path) in (os.path.realpath(snippet), os.path.realpath(paths.live_path())):
        return None
    with open(vf.real_path, "rb") as f:
        data = f.read()
    if b"virtualhost" not in data.lower():
        return None
    tree = ac.parse(data, vf.real_path)
    vf.data = data
    vf.assessments = policy.assess(tree, vf.real_path)
    return vf if vf.assessments else None


def locate(vhost: Optional[str] = None, snippet: str = policy.DEFAULT_SNIPPET,
           dump: Optional[apachectl.Result] = None) -> Located:
    """All SSL vhosts Apache loads (or the one --vhost names), assessed.

    Raises ConfigSyntaxError when a vhost file is structurally broken and
    FileNotFoundError for a missing --vhost file.
    """
    if vhost:
        if not os.path.isfile(vhost):
            raise FileNotFoundError(f"{vhost}: no such file")
        loc = Located([VhostFile(vhost, os.path.realpath(vhost), b"")], "--vhost", None)
    else:
        loc = loaded_files(dump)
    kept = []
    for vf in loc.files:
        got = _assess_file(vf, snippet)
        if got is not None:
            kept.append(got)
    loc.files = kept
    return loc


def choose(loc: Located) -> policy.Assessment:
    """The one CN vhost to act on. NotFound (exit 4) or PolicyError (exit 2, ambiguous)."""
    cands = loc.candidates()
    if not cands:
        where = ", ".join(f"{a.filename}:{a.line}" for a in loc.assessments) or "none"
        raise NotFound(f"no CN SSL vhost with a client-verification block found (SSL vhosts seen: {where})")
    if len(cands) > 1:
        listed = ", ".join(f"{a.filename}:{a.line} ({a.server_name or '-'})" for a in cands)
        if len({a.filename for a in cands}) == 1:  # --vhost picks a file, not a vhost within it
            raise policy.PolicyError(
                f"several SSL vhosts in one file carry a client-verification block: {listed}; "
                "--vhost cannot choose between vhosts of the same file: move all but one to files of their own"
            )
        raise policy.PolicyError(
            "several SSL vhosts carry a client-verification block: " + listed + "; name one with --vhost FILE"
        )
    return cands[0]


def probe_target(a: policy.Assessment, listening: Optional[Dict[int, List[str]]] = None) -> Tuple[str, int, str]:
    """(host, port, SNI) to reach the vhost from this host: its own address and ServerName.

    ``listening``: `apachectl.listening_sockets`, when the caller read it already.
    """
    host, port = "127.0.0.1", 443
    for addr in a.addresses:
        h, _, p = addr.rpartition(":") if not addr.endswith("]") else (addr, "", "")
        if not h:
            h, p = addr, ""
        if p.isdigit():
            port = int(p)
        if h not in ("*", "_default_", ""):
            host = h.strip("[]")
        break
    if host == "127.0.0.1":  # a wildcard vhost: go where Apache really listens on that port
        found = (listening if listening is not None else apachectl.listening_sockets()).get(port, [])
        if found and "127.0.0.1" not in found:
            host = found[0]
    sni = (a.server_name or host).split(":")[0]
    return host, port, sni
