"""The configuration as Apache loads it: every directive, in load order, with its sections.

`expand_config` reads ``apache2.conf`` the way Apache does at start-up:
``Include``/``IncludeOptional`` expanded in place (globs sorted, a directory
read recursively, ``${VAR}`` from ``env``), ``<IfModule>`` evaluated against
the modules ``LoadModule`` has loaded so far (plus the built-in ones),
``<IfDefine>`` against ``defines`` and ``Define``/``UnDefine``. So the policy
snippet a vhost includes appears inside that vhost, and a module's ``.conf``
counts only when the module is loaded. Each directive (`Entry`) keeps the
chain of sections around it (`Ctx`); `hazards` asks its questions of that
(what applies to the CN vhost, on which path, for which client).

Why it exists: ``check`` judges what is in force for the CN vhost, including
what it inherits from the main server (``SSLProtocol``, ``Protocols``) and
what ``mods-enabled/*.conf`` adds. `locate` needs only the list of loaded
files and takes it from Apache (``-D DUMP_INCLUDES``); that list does not
say which directive sits in which section, and Apache gives nothing more
without extra modules (mod_info) on the CN.

Why it is hand-written: the package depends on nothing but Python's standard
library and Apache, and needs file and line of every directive as `locate`
and `policy` report them; so it is built on `apacheconf`, the lossless parser.
It is a model, not Apache: ``<IfVersion>``, ``<IfFile>``, ``<IfDirective>``,
``<IfSection>`` are taken as true, a file included twice is read twice, and
unreadable or unparsable files are listed in ``problems``, not raised. It is
also the walk `locate` falls back on when Apache cannot list its files
(`locate.walk_includes`).

Pure given ``read``/``glob``/``resolve``; the defaults read the filesystem.
"""

import glob as _globmod
import os
import re
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from . import apacheconf as ac
from .records import dataclass, field


@dataclass(frozen=True)
class Ctx:
    """An enclosing section of a directive (conditionals that held are not kept).

    For ``<Else>``/``<ElseIf>``, ``prev`` holds the conditions of the
    preceding ``<If>``/``<ElseIf>`` siblings (they did not hold).
    """

    key: str
    args: Tuple[str, ...]
    argstr: str
    file: str
    line: int
    prev: Tuple[str, ...] = ()


@dataclass(frozen=True)
class Entry:
    """One directive with the chain of sections around it (outermost first)."""

    key: str
    name: str
    args: Tuple[str, ...]
    file: str
    line: int
    ctx: Tuple[Ctx, ...] = ()

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class ConfigView:
    entries: List[Entry] = field(default_factory=list)
    files: List[str] = field(default_factory=list)
    modules: List[str] = field(default_factory=list)
    problems: List[str] = field(default_factory=list)


# Modules compiled into Debian's apache2 binary (`apache2 -l`).
BUILTIN_MODULES = ("core", "so", "watchdog", "http_core", "log_config", "logio", "version", "unixd")
_CONDITIONALS = ("ifmodule", "ifdefine", "ifversion", "iffile", "ifdirective", "ifsection")
_INCLUDES = ("include", "includeoptional")
_MAX_DEPTH = 32


def module_names(identifier: str, path: str = "") -> Set[str]:
    """The names ``<IfModule>`` may use for a module, normalised (see `norm_module`)."""
    names = {norm_module(identifier)}
    if path:
        names.add(norm_module(os.path.basename(path).rsplit(".", 1)[0]))
    for n in list(names):
        if n.startswith("mpm_"):
            names.add(n[4:])  # the MPMs' source files are prefork.c, worker.c, event.c
    return names


def norm_module(name: str) -> str:
    """``mod_ssl.c`` / ``ssl_module`` / ``mod_ssl`` -> ``ssl``."""
    n = name.strip().lower()
    if n.endswith(".c"):
        n = n[:-2]
    if n.endswith("_module"):
        n = n[: -len("_module")]
    if n.startswith("mod_"):
        n = n[4:]
    return n


def _expand_vars(value: str, env: Dict[str, str]) -> str:
    return re.sub(r"\$\{([A-Za-z0-9_]+)\}", lambda m: env.get(m.group(1), m.group(0)), value)


def default_read(path: str) -> Optional[bytes]:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _default_glob(pattern: str) -> List[str]:
    """Files an Include pattern names: sorted glob; a directory gives all files below it."""
    hits = sorted(_globmod.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
    out: List[str] = []
    for h in hits:
        if os.path.isdir(h):
            for dirpath, dirnames, filenames in os.walk(h):
                dirnames.sort()
                out.extend(os.path.join(dirpath, fn) for fn in sorted(filenames))
        elif os.path.exists(h):
            out.append(h)
    return out


def expand_config(
    root_conf: str,
    server_root: str,
    *,
    read: Callable[[str], Optional[bytes]] = default_read,
    glob: Callable[[str], List[str]] = _default_glob,
    resolve: Callable[[str], str] = os.path.realpath,
    env: Optional[Dict[str, str]] = None,
    defines: Iterable[str] = (),
    builtin: Iterable[str] = BUILTIN_MODULES,
) -> ConfigView:
    """Every directive Apache would read from ``root_conf``, in order, Includes expanded.

    ``<IfModule>`` is evaluated against the modules loaded so far
    (``LoadModule`` in order, plus ``builtin``), ``<IfDefine>`` against
    ``defines`` and ``Define``; ``<IfVersion>``, ``<IfFile>``,
    ``<IfDirective>``, ``<IfSection>`` are taken as true. File names are
    ``resolve``d (symlinks to their targets), as `locate` reports them.
    Unreadable or unparsable files are listed in ``problems``, not raised.
    """
    view = ConfigView()
    loaded: Set[str] = set()
    for b in builtin:
        loaded |= module_names(b)
    defined: Set[str] = set(defines)
    env = dict(env or {})

    def holds(sec: ac.Section) -> bool:
        arg = (sec.args[0] if sec.args else "").strip()
        neg = arg.startswith("!")
        name = arg[1:] if neg else arg
        if sec.key == "ifmodule":
            val = norm_module(name) in loaded
        elif sec.key == "ifdefine":
            val = name in defined
        else:
            return True
        return val != neg

    def include(pattern: str, optional: bool, ctx: Tuple[Ctx, ...], depth: int, where: str) -> None:
        pat = _expand_vars(pattern, env)
        if not os.path.isabs(pat):
            pat = os.path.join(server_root, pat)
        files = glob(pat)
        if not files and not optional and not any(c in pat for c in "*?["):
            view.problems.append(f"{where}: Include {pattern}: no such file")
        for f in files:
            visit(f, ctx, depth + 1)

    def walk(nodes: Sequence[ac.Node], fname: str, ctx: Tuple[Ctx, ...], depth: int) -> None:
        prev_conds: List[str] = []
        for node in nodes:
            if isinstance(node, ac.Directive):
                if node.key in _INCLUDES and node.args:
                    include(node.args[0], node.key == "includeoptional", ctx, depth, f"{fname}:{node.line.lineno}")
                    continue
                if node.key == "loadmodule" and len(node.args) >= 1:
                    loaded.update(module_names(node.args[0], node.args[1] if len(node.args) > 1 else ""))
                    view.modules.append(node.args[0])
                elif node.key == "define" and node.args:
                    defined.add(node.args[0])
                elif node.key == "undefine" and node.args:
                    defined.discard(node.args[0])
                view.entries.append(Entry(node.key, node.name, tuple(node.args), fname, node.line.lineno, ctx))
            elif isinstance(node, ac.Section):
                if node.key in _CONDITIONALS:
                    if holds(node):
                        walk(node.children, fname, ctx, depth)
                    continue
                prev: Tuple[str, ...] = ()
                if node.key == "if":
                    prev_conds = [node.argstr]
                elif node.key in ("elseif", "else"):
                    prev = tuple(prev_conds)
                    if node.key == "elseif":
                        prev_conds = prev_conds + [node.argstr]
                else:
                    prev_conds = []
                c = Ctx(node.key, tuple(node.args), node.argstr, fname, node.open.lineno, prev)
                walk(node.children, fname, ctx + (c,), depth)

    def visit(path: str, ctx: Tuple[Ctx, ...], depth: int) -> None:
        if depth > _MAX_DEPTH:
            view.problems.append(f"{path}: Include nesting deeper than {_MAX_DEPTH}")
            return
        data = read(path)
        if data is None:
            view.problems.append(f"{path}: cannot read")
            return
        fname = resolve(path)
        view.files.append(fname)
        try:
            tree = ac.parse(data, fname)
        except ac.ConfigSyntaxError as exc:
            view.problems.append(str(exc))
            return
        walk(tree.children, fname, ctx, depth)

    visit(root_conf, (), 0)
    return view


__all__ = [
    "Ctx", "Entry", "ConfigView", "BUILTIN_MODULES", "expand_config", "module_names", "norm_module", "default_read",
]
