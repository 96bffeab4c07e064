"""locate's fallback walk (Apache cannot list its files): one walker, `loaded.expand_config`, on real files."""

import os
from pathlib import Path

from dataone_cn_sslverify import locate


def _tree(root: Path) -> None:
    (root / "mods-enabled").mkdir(parents=True)
    (root / "sites-available").mkdir()
    (root / "sites-enabled").mkdir()
    (root / "conf.d" / "nested").mkdir(parents=True)
    (root / "apache2.conf").write_text(
        "IncludeOptional mods-enabled/*.load\n"
        "<IfModule mod_ssl.c>\n  Include conf.d/\n</IfModule>\n"
        "<IfModule mod_nothere.c>\n  Include never.conf\n</IfModule>\n"
        "IncludeOptional sites-enabled/*.conf\n"
        "IncludeOptional missing/*.conf\n")
    (root / "mods-enabled" / "ssl.load").write_text("LoadModule ssl_module /usr/lib/apache2/modules/mod_ssl.so\n")
    (root / "conf.d" / "a.conf").write_text("# a\n")
    (root / "conf.d" / "nested" / "b.conf").write_text("# b\n")
    (root / "never.conf").write_text("# not loaded: its IfModule does not hold\n")
    (root / "sites-available" / "cn-ssl.conf").write_text("<VirtualHost *:443>\n</VirtualHost>\n")
    os.symlink("../sites-available/cn-ssl.conf", str(root / "sites-enabled" / "cn-ssl.conf"))
    os.symlink("../sites-available/cn-ssl.conf", str(root / "sites-enabled" / "001-cn.conf"))
    (root / "sites-available" / "cn-ssl.conf.20240101").write_text("<VirtualHost *:443>\n</VirtualHost>\n")


def test_walk_follows_includes_as_apache_loads_them(tmp_path: Path):
    _tree(tmp_path)
    got = [os.path.relpath(p, str(tmp_path)) for p in locate.walk_includes(str(tmp_path / "apache2.conf"), str(tmp_path))]
    assert got == [
        "apache2.conf",
        "mods-enabled/ssl.load",
        "conf.d/a.conf",
        "conf.d/nested/b.conf",          # a directory include is read recursively, as Apache does
        "sites-enabled/001-cn.conf",     # one file enabled under two names: listed once, first name
    ]


def test_walk_lists_a_broken_file_and_goes_on(tmp_path: Path):
    _tree(tmp_path)
    (tmp_path / "conf.d" / "a.conf").write_text("<Location /x>\n")  # never closed
    got = locate.walk_includes(str(tmp_path / "apache2.conf"), str(tmp_path))
    assert str(tmp_path / "conf.d" / "a.conf") in got
    assert str(tmp_path / "sites-enabled" / "001-cn.conf") in got
