"""prefetch: which command lines start the dump early, and when a prefetched dump is still the one to use.

The validity rule is tested on real files with their real times (no clock is
faked): a dump started after a file's last change is still true; one started
before it is not, nor is one that lists a missing file. The real Apache side
(the dump itself, a file touched meanwhile) is in
tests/integration/test_prefetch_apache.py.
"""

import os
from pathlib import Path

import pytest

from dataone_cn_sslverify import prefetch


@pytest.mark.parametrize("args, command", [
    (["apply"], "apply"), (["--json", "revert", "--no-probe"], "revert"), (["status"], "status"),
    (["diff", "--verbose"], "diff"), (["apply", "--adopt"], "apply"),
    (["monitor"], None), (["check"], None), (["restore", "ID"], None), ([], None),
    (["--vhost", "/etc/apache2/sites-available/x.conf", "apply"], None), (["apply", "--vhost=/x.conf"], None),
    (["apply", "--help"], None), (["--version"], None),
])
def test_command_of(args, command):
    assert prefetch.command_of(args) == command


def test_listed_files_reads_apaches_list_only():
    out = (b"Included configuration files:\n  (*) /etc/apache2/apache2.conf\n    (146) /etc/apache2/ports.conf\n"
           b"      (12) /etc/apache2/conf-enabled/localized-error-pages.conf\n"
           b"AH00558: apache2: Could not reliably determine the server's fully qualified domain name\n"
           b"Syntax OK\n  (x) not a line\n")
    assert prefetch.listed_files(out) == ["/etc/apache2/apache2.conf", "/etc/apache2/ports.conf",
                                          "/etc/apache2/conf-enabled/localized-error-pages.conf"]


def _dump_of(*files: Path) -> bytes:
    return ("Included configuration files:\n" + "".join("  (%d) %s\n" % (i, f) for i, f in enumerate(files))).encode()


def test_unchanged_since_follows_the_real_file_times(tmp_path: Path):
    a, b = tmp_path / "apache2.conf", tmp_path / "sites" / "cn.conf"
    b.parent.mkdir()
    a.write_text("x\n")
    b.write_text("y\n")
    newest = max(max(os.stat(p).st_mtime, os.stat(p).st_ctime) for p in (a, b, a.parent, b.parent))
    dump = _dump_of(a, b)
    # Started after every change (by more than the margin): still the dump that would run now.
    assert prefetch.unchanged_since(dump, newest + prefetch.MARGIN + 0.5)
    # Started before the newest change, or within the margin after it: run it again.
    assert not prefetch.unchanged_since(dump, newest)
    assert not prefetch.unchanged_since(dump, newest + prefetch.MARGIN / 2)
    # A file added next to a listed one changes its directory: seen.
    (b.parent / "new.conf").write_text("z\n")
    newer = os.stat(b.parent).st_mtime
    assert not prefetch.unchanged_since(dump, newer + prefetch.MARGIN / 2)
    # A listed file that is gone, or a dump that lists nothing (a failure), is never used.
    assert not prefetch.unchanged_since(_dump_of(a, tmp_path / "gone.conf"), newest + 60)
    assert not prefetch.unchanged_since(b"AH00526: Syntax error on line 1 of /x.conf:\n", newest + 60)


def test_take_without_start_is_a_miss():
    assert prefetch.take(["apache2ctl", "-t", "-D", "DUMP_INCLUDES"], dict(os.environ)) is None
