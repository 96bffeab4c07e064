"""Shared helpers of the benchmarks: paths, the tool's command line, timing, statistics, machine facts."""

import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Dict, List, Optional, Sequence

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
PYTHON = "/usr/bin/python3"
SYSPATH = "/usr/sbin:/usr/bin:/sbin:/bin"
for _p in (os.path.join(REPO, "tests"), REPO):  # the test harness, and the package it imports
    if _p not in sys.path:
        sys.path.insert(0, _p)

from harness.instance import ApacheInstance  # noqa: E402

TOOL = [PYTHON, "-m", "dataone_cn_sslverify"]


def launcher(root: str) -> str:
    """sbin/dataone-cn-sslverify as installed, its private module dir replaced by this clone."""
    with open(os.path.join(REPO, "sbin", "dataone-cn-sslverify")) as f:
        text = f.read()
    path = os.path.join(root, "dataone-cn-sslverify")
    with open(path, "w") as f:
        f.write(text.replace('"/usr/share/dataone-cn-sslverify"', repr(REPO)))
    os.chmod(path, 0o755)
    return path


def tool_env(inst: ApacheInstance) -> Dict[str, str]:
    env = inst.env()
    env["PYTHONPATH"] = REPO
    # Byte-code is cached (__pycache__ is git-ignored), as on a CN where the .deb ships compiled modules:
    # otherwise every run would pay for compiling the package.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def shown(argv: Sequence[str]) -> str:
    """A command as the report shows it (the repo path shortened)."""
    return " ".join(a.replace(REPO + "/", "") for a in argv)


def run_timed(argv: Sequence[str], env: Dict[str, str], check: bool = True, timeout: float = 300) -> Dict[str, Any]:
    t0 = time.monotonic()
    p = subprocess.run(list(argv), env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout)
    dt = time.monotonic() - t0
    if check and p.returncode != 0:
        raise RuntimeError(f"{shown(argv)}: exit {p.returncode}\n{p.stderr.decode(errors='replace')[-3000:]}")
    return {"t0": t0, "seconds": dt, "rc": p.returncode, "stdout": p.stdout.decode(errors="replace"),
            "stderr": p.stderr.decode(errors="replace")}


def summary(xs: Sequence[float]) -> Dict[str, Any]:
    xs = list(xs)
    if not xs:
        return {"n": 0, "min": None, "median": None, "max": None}
    return {"n": len(xs), "min": min(xs), "median": statistics.median(xs), "max": max(xs)}


def new_root(tag: str) -> str:
    return tempfile.mkdtemp(prefix=f"dataone-bench-{tag}-", dir=tempfile.gettempdir())


def remove_root(root: str) -> None:
    shutil.rmtree(root, ignore_errors=True)


def _first_line(argv: Sequence[str], pattern: str = "") -> str:
    try:
        out = subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             env=dict(os.environ, PATH=SYSPATH)).stdout.decode(errors="replace")
    except OSError as exc:
        return f"({exc})"
    for ln in out.splitlines():
        if pattern in ln:
            return ln.strip()
    return out.strip().splitlines()[0] if out.strip() else ""


def machine() -> Dict[str, Any]:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"^model name\s*:\s*(.*)$", f.read(), re.M)
            cpu = m.group(1).strip() if m else ""
    except OSError:
        pass
    mem_kb = 0
    try:
        with open("/proc/meminfo") as f:
            mem_kb = int(re.search(r"MemTotal:\s+(\d+)", f.read()).group(1))  # type: ignore[union-attr]
    except (OSError, AttributeError):
        pass
    osr = ""
    try:
        with open("/etc/os-release") as f:
            m = re.search(r'^PRETTY_NAME="?(.*?)"?$', f.read(), re.M)
            osr = m.group(1) if m else ""
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "os": osr,
        "kernel": platform.release(),
        "apache": _first_line(["/usr/sbin/apache2", "-v"], "Server version"),
        "openssl": _first_line(["openssl", "version"]),
        "python": _first_line([PYTHON, "-V"]),
        "loadavg_at_start": open("/proc/loadavg").read().split()[:3],
        "git": _first_line(["git", "-C", REPO, "describe", "--always", "--dirty"]),
    }


def loadavg() -> List[str]:
    with open("/proc/loadavg") as f:
        return f.read().split()[:3]


def dump(path: str, doc: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=False, default=str)
        f.write("\n")
    os.replace(tmp, path)


def fmt_ms(x: Optional[float]) -> str:
    return "-" if x is None else (f"{x * 1000:.0f}" if x >= 0.1 else f"{x * 1000:.1f}")


def fmt_mmm(s: Dict[str, Any], scale: float = 1000.0, digits: int = 0) -> str:
    """'min / median / max' in ms (default)."""
    if not s or s.get("median") is None:
        return "-"
    f = f"{{:.{digits}f}}"
    return " / ".join(f.format(s[k] * scale) for k in ("min", "median", "max"))


def run_measured(argv: Sequence[str], env: Dict[str, str], out_path: str, timeout: float = 300) -> Dict[str, Any]:
    """Run argv; wall time, CPU time (user + system of it and every descendant it waited for), exit code.

    CPU time comes from wait4(2) and is what the scale fits use: unlike wall time it hardly moves when
    other work shares the machine. Output goes to out_path (read back on failure).
    """
    with open(out_path, "wb") as out:
        t0 = time.monotonic()
        p = subprocess.Popen(list(argv), env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=out,
                             stderr=subprocess.STDOUT)
        killer = threading.Timer(timeout, p.kill)  # bounded: a hung command is killed
        killer.start()
        try:
            _, status, ru = os.wait4(p.pid, 0)
        finally:
            killer.cancel()
        wall = time.monotonic() - t0
    p.returncode = (os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status))
    rec: Dict[str, Any] = {"seconds": wall, "cpu": ru.ru_utime + ru.ru_stime, "rc": p.returncode}
    if p.returncode != 0:
        with open(out_path, "rb") as f:
            rec["output"] = f.read()[-3000:].decode(errors="replace")
    return rec
