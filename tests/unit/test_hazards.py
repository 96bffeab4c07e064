"""Unit tests for `hazards`: the configuration view and every check, on in-memory Debian-style configs.

The vhosts are the real fixture files (tests/fixtures/vhosts), laid out like
/etc/apache2 in a dict; nothing touches the disk or a server here.
"""

import fnmatch
from typing import Dict, List, Optional

import pytest

from dataone_cn_sslverify.errors import ExitCode
from dataone_cn_sslverify import apacheconf as ac
from dataone_cn_sslverify import checkrun as K
from dataone_cn_sslverify import clients as C
from dataone_cn_sslverify import hazards as H
from dataone_cn_sslverify import loaded as L
from dataone_cn_sslverify import probe as P
from dataone_cn_sslverify import scope as S
from harness import VARIANTS
from dataone_cn_sslverify import policy
from harness import render_fixture

ROOT = "/etc/apache2"
VHOST = f"{ROOT}/sites-available/cn-ssl.conf"
SNIPPET = "/etc/dataone/apache2/cn-sslverify.conf"
VALUES = dict(server_name="cn.dataone.test", https_port=443, http_port=80, cert_dir="/etc/ssl/cn",
              docroot="/var/www", apache_confdir=ROOT, log_dir="/var/log/apache2")

# Debian's ssl.conf, abridged to what matters here.
SSL_CONF = "<IfModule mod_ssl.c>\n\tSSLRandomSeed startup builtin\n\tSSLProtocol all -SSLv3\n</IfModule>\n"
# Debian 12's http2.conf has a bare `Protocols h2 h2c http/1.1`; this one guards it the way
# upstream's example does, so that <IfModule !mpm_prefork> evaluation is exercised too.
HTTP2_CONF = "<IfModule !mpm_prefork>\n    Protocols h2 h2c http/1.1\n</IfModule>\n"
POLICY = open(policy.__file__.replace("dataone_cn_sslverify/policy.py", "conf/cn-sslverify.conf")).read()


def layout(vhost: str, *, modules=("mpm_event", "ssl"), snippet: str = POLICY, extra: Optional[Dict[str, str]] = None):
    files = {
        f"{ROOT}/apache2.conf": (
            "PidFile ${APACHE_PID_FILE}\n"
            "IncludeOptional mods-enabled/*.load\nIncludeOptional mods-enabled/*.conf\n"
            "Include ports.conf\nIncludeOptional conf-enabled/*.conf\nIncludeOptional sites-enabled/*.conf\n"
        ),
        f"{ROOT}/ports.conf": "Listen 80\n<IfModule ssl_module>\n\tListen 443\n</IfModule>\n",
        f"{ROOT}/mods-enabled/ssl.conf": SSL_CONF,
        f"{ROOT}/sites-enabled/cn-ssl.conf": vhost,
        f"{ROOT}/jk_mount": "<IfModule mod_jk.c>\n\tJkMount /cn/* ajp13\n</IfModule>\n",
        SNIPPET: snippet,
    }
    for m in modules:
        files[f"{ROOT}/mods-enabled/{m}.load"] = f"LoadModule {m}_module /usr/lib/apache2/modules/mod_{m}.so\n"
    if "http2" in modules:
        files[f"{ROOT}/mods-enabled/http2.conf"] = HTTP2_CONF
    files.update(extra or {})
    return files


def view_of(files: Dict[str, str]) -> L.ConfigView:
    def read(p: str) -> Optional[bytes]:
        return files[p].encode() if p in files else None

    def glob(pattern: str) -> List[str]:
        if any(c in pattern for c in "*?["):
            return sorted(k for k in files if fnmatch.fnmatch(k, pattern))
        return [pattern] if pattern in files else []

    # sites-enabled/cn-ssl.conf is a symlink to sites-available on Debian
    return L.expand_config(f"{ROOT}/apache2.conf", ROOT, read=read, glob=glob,
                           resolve=lambda p: p.replace("sites-enabled", "sites-available"))


def fixture(variant: str) -> str:
    return render_fixture(variant, **VALUES).decode()


def managed() -> str:
    """The webkit-only vhost after `apply`: the block replaced by our marked Include."""
    text = fixture("webkit-only")
    a = policy.assess(ac.parse(text, VHOST), VHOST)[0]
    return policy.plan_apply(text, a, SNIPPET).apply_to(text)


def vhost_line(text: str) -> int:
    return next(i for i, ln in enumerate(text.splitlines(), 1) if ln.startswith("<VirtualHost *:443>"))


def run(vhost: str, *, live: Optional[H.Live] = None, snippet_used: Optional[str] = None, **kw) -> List[H.Hazard]:
    view = view_of(layout(vhost, **kw))
    assert not view.problems, view.problems
    pattern = None
    if snippet_used:
        try:
            pattern = policy.snippet_pattern(ac.parse(kw.get("snippet", POLICY), SNIPPET))
        except policy.PolicyError:
            pattern = None  # `apply` refuses such a snippet; `check` still reads the pattern from the config
    return H.evaluate(view, VHOST, vhost_line(vhost), pattern=pattern, snippet=snippet_used, live=live,
                      configtest_ok=True)


def ids(hz: List[H.Hazard], severity: Optional[str] = None) -> List[str]:
    return [h.id for h in hz if severity is None or h.severity == severity]


def by_id(hz: List[H.Hazard], hid: str) -> H.Hazard:
    return next(h for h in hz if h.id == hid)


TLS12_SNIPPET = POLICY.replace("#SSLProtocol -all +TLSv1.2", "SSLProtocol -all +TLSv1.2")


# ---------------------------------------------------------------- the view


class TestExpand:
    def test_includes_modules_and_conditionals(self):
        view = view_of(layout(fixture("webkit-only"), modules=("mpm_event", "ssl", "http2")))
        assert VHOST in view.files and f"{ROOT}/mods-enabled/http2.conf" in view.files
        assert "http2_module" in view.modules
        protos = [e for e in view.entries if e.key == "protocols"]
        assert len(protos) == 1 and protos[0].args == ("h2", "h2c", "http/1.1")  # <IfModule !mpm_prefork> held
        listen = [e.args[0] for e in view.entries if e.key == "listen"]
        assert listen == ["80", "443"]  # <IfModule ssl_module> held
        rep = next(e for e in view.entries if e.key == "sslverifyclient" and e.args == ("require",))
        assert [c.key for c in rep.ctx] == ["virtualhost", "location"] and rep.ctx[0].file == VHOST

    def test_false_conditionals_are_skipped(self):
        view = view_of(layout(fixture("webkit-only"), modules=("mpm_prefork", "ssl", "http2"),
                              extra={f"{ROOT}/conf-enabled/x.conf": "<IfDefine NOPE>\nProtocols h2\n</IfDefine>\n"
                                                                    "Define YES\n<IfDefine YES>\nServerTokens Prod\n</IfDefine>\n"}))
        assert not [e for e in view.entries if e.key == "protocols"]  # prefork: the guarded http2.conf stays off
        assert [e.args for e in view.entries if e.key == "servertokens"] == [("Prod",)]

    def test_include_inside_the_vhost_carries_its_context(self):
        text = managed()
        view = view_of(layout(text))
        opt = next(e for e in view.entries if e.key == "sslverifyclient" and e.args == ("optional",))
        assert opt.file == SNIPPET and [c.key for c in opt.ctx] == ["virtualhost", "location", "if"]
        assert S.has_vhost(view, VHOST, vhost_line(text))

    def test_problems_not_exceptions(self):
        files = layout(fixture("webkit-only"), extra={f"{ROOT}/conf-enabled/bad.conf": "<Location /x>\n",
                                                      f"{ROOT}/conf-enabled/inc.conf": "Include /missing.conf\n",
                                                      f"{ROOT}/conf-enabled/loop.conf": f"Include {ROOT}/conf-enabled/loop.conf\n"})
        view = view_of(files)
        assert any("never closed" in p for p in view.problems)
        assert any("Include /missing.conf: no such file" in p for p in view.problems)
        assert any("nesting deeper" in p for p in view.problems)
        assert VHOST in view.files

    def test_module_names(self):
        assert L.norm_module("mod_ssl.c") == L.norm_module("ssl_module") == "ssl"
        assert L.module_names("mpm_event_module", "/x/mod_mpm_event.so") >= {"mpm_event", "event"}


# ---------------------------------------------------------------- queries


class TestQueries:
    @pytest.mark.parametrize("args,want", [
        (["all", "-SSLv3"], {"TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"}),
        (["-all", "+TLSv1.2"], {"TLSv1.2"}),
        (["TLSv1.2"], {"TLSv1.2"}),
        (["all", "-TLSv1.3", "-tlsv1", "-TLSv1.1"], {"TLSv1.2"}),
        (["TLSv1.2", "TLSv1.3"], {"TLSv1.3"}),  # a name without +/- replaces (mod_ssl warns)
    ])
    def test_ssl_protocol(self, args, want):
        assert S.parse_ssl_protocol(args) == want

    def test_effective_tls(self):
        def eff(vhost_extra="", server_extra="", snippet=POLICY):
            text = managed().replace("\tSSLEngine on\n", "\tSSLEngine on\n" + vhost_extra, 1)
            files = layout(text, snippet=snippet, extra={f"{ROOT}/conf-enabled/z.conf": server_extra})
            return S.effective_tls(S.scoped(view_of(files), VHOST, vhost_line(text)))

        v, where = eff()
        assert v == {"1.2", "1.3"} and "mods-enabled/ssl.conf:3: SSLProtocol all -SSLv3 (main server)" in where
        assert eff(snippet=TLS12_SNIPPET)[0] == {"1.2"}
        assert eff(server_extra="SSLProtocol -all +TLSv1.2\n")[0] == {"1.2"}
        assert eff(server_extra="SSLProtocol -all +TLSv1.2\n", vhost_extra="\tSSLProtocol all\n")[0] == {"1.2", "1.3"}
        v, where = eff(vhost_extra="\tSSLOpenSSLConfCmd MaxProtocol TLSv1.2\n")
        assert v == {"1.2"} and "MaxProtocol TLSv1.2" in where
        files = layout(fixture("webkit-only"))
        files[f"{ROOT}/mods-enabled/ssl.conf"] = ""
        assert S.effective_tls(S.scoped(view_of(files), VHOST, vhost_line(fixture("webkit-only"))))[0] == {"1.2", "1.3"}

    def test_applies(self):
        loc = L.Ctx("location", ("/cn",), "/cn", "f", 1)
        assert S.applies([loc], "/cn/v2/object", "") is True
        assert S.applies([loc], "/cn", "") is True
        assert S.applies([loc], "/cnx", "") is False
        assert S.applies([L.Ctx("locationmatch", ("^/cn/v[12]/",), "", "f", 1)], "/cn/v2/object", "") is True
        assert S.applies([L.Ctx("directory", ("/var/www",), "", "f", 1)], "/cn/", "") is None
        cond = '"! ( %{HTTP_USER_AGENT} =~ /(windows|mozilla)/i )"'
        assert S.applies([loc, L.Ctx("if", (), cond, "f", 2)], "/cn/", "curl/8") is True
        assert S.applies([loc, L.Ctx("if", (), cond, "f", 2)], "/cn/", "Mozilla/5.0") is False
        els = L.Ctx("else", (), "", "f", 3, prev=('"%{HTTP_USER_AGENT} =~ /AppleWebKit/"',))
        assert S.applies([els], "/cn/", "Safari AppleWebKit/605") is False
        assert S.applies([els], "/cn/", "Java/17") is True
        assert S.applies([L.Ctx("if", (), '"%{REMOTE_ADDR} == \'1.2.3.4\'"', "f", 1)], "/cn/", "x") is None

    def test_asked_on_follows_merge_order(self):
        """webkit-if-else: the vhost-level <If>/<Else> merges after <Location>: it overrides replication's require."""
        text = fixture("webkit-if-else")
        items = S.scoped(view_of(layout(text)), VHOST, vhost_line(text))
        assert S.asked_on(items, "/cn/v2/object", "Java/17") == (True, "per-directory")
        assert S.asked_on(items, "/metacat/servlet/replication", "Safari AppleWebKit/605")[0] is False
        text = fixture("browser-list")
        items = S.scoped(view_of(layout(text)), VHOST, vhost_line(text))
        assert S.asked_on(items, "/metacat/servlet/replication", "Safari AppleWebKit/605")[0] is True
        assert S.asked_on(items, "/cn/", C.get_client("browser-ie11-win7").user_agent)[0] is False

    @pytest.mark.parametrize("variant", VARIANTS)
    def test_required_paths_come_from_the_config(self, variant):
        text = fixture(variant)
        items = S.scoped(view_of(layout(text)), VHOST, vhost_line(text))
        assert S.required_paths(items) == (["/metacat/servlet/replication"], [])
        moved = text.replace("/metacat/servlet/replication", "/d1/mn/replicate")
        items = S.scoped(view_of(layout(moved)), VHOST, vhost_line(moved))
        assert S.required_paths(items) == (["/d1/mn/replicate"], [])

    def test_sample_path_of_a_section(self):
        assert S.sample_path(L.Ctx("location", ("/metacat/servlet/replication",), "", "f", 1)) == "/metacat/servlet/replication"
        assert S.sample_path(L.Ctx("locationmatch", ("^/metacat/servlet/replication",), "", "f", 1)) == "/metacat/servlet/replication"
        assert S.sample_path(L.Ctx("locationmatch", ("^/d1/(a|b)/x",), "", "f", 1)) is None  # "/d1/" does not match
        assert S.sample_path(L.Ctx("locationmatch", ("^/d1/(a|b)",), "", "f", 1)) is None
        assert S.sample_path(L.Ctx("locationmatch", ("replication$",), "", "f", 1)) is None  # unanchored: no path
        assert S.sample_path(L.Ctx("location", ("/repl*",), "", "f", 1)) is None

    def test_default_vhosts(self):
        out = (
            "VirtualHost configuration:\n"
            "*:443                  is a NameVirtualHost\n"
            "         default server other.example (/etc/apache2/sites-enabled/000-other.conf:1)\n"
            "         port 443 namevhost other.example (/etc/apache2/sites-enabled/000-other.conf:1)\n"
            "         port 443 namevhost cn.dataone.org (/etc/apache2/sites-enabled/cn-ssl.conf:11)\n"
            "*:80                   cn.dataone.org (/etc/apache2/sites-enabled/cn-ssl.conf:170)\n"
            "ServerRoot: \"/etc/apache2\"\n"
        )
        assert K.parse_default_vhosts(out) == {"*:443": ("/etc/apache2/sites-enabled/000-other.conf", 1),
                                               "*:80": ("/etc/apache2/sites-enabled/cn-ssl.conf", 170)}


# ---------------------------------------------------------------- the checks


class TestTls13:
    def test_original_webkit_only(self):
        hz = run(fixture("webkit-only"))
        h = by_id(hz, "tls13-no-pha")
        assert h.severity == H.HAZARD
        for fam in ("Java 11+ java.net.http.HttpClient", "Go net/http (default tls.Config)",
                    "DataONE Java client (d1_libclient_java, Apache HttpClient 4)", "Mozilla Firefox on Linux"):
            assert fam in h.clients
        assert "python-requests" not in h.clients and "curl / libcurl" not in h.clients  # they offer PHA
        assert "/metacat/servlet/replication (SSLVerifyClient require" in h.breaks
        assert "`SSLProtocol -all +TLSv1.2` inside this vhost" in h.fix

    def test_applied_names_api_clients_only(self):
        h = by_id(run(managed(), snippet_used=SNIPPET), "tls13-no-pha")
        assert not any(c.startswith(("Mozilla", "Google", "Safari", "Microsoft")) for c in h.clients)
        assert "AH10158" in h.breaks and f"uncomment `SSLProtocol -all +TLSv1.2` in {SNIPPET}" in h.fix

    def test_mitigation_in_the_snippet(self):
        hz = run(managed(), snippet=TLS12_SNIPPET, snippet_used=SNIPPET)
        assert "tls13-no-pha" not in ids(hz)
        note = by_id(hz, "tls13-disabled")
        assert note.severity == H.NOTE and "cn-sslverify.conf" in note.where and "SSLProtocol -all +TLSv1.2" in note.where

    def test_live_measurement_wins(self):
        refused = H.Live("x", tls13=P.Handshake(False, error="protocol version"), tls12=P.Handshake(True, "1.2"))
        hz = run(managed(), snippet_used=SNIPPET, live=refused)
        assert "tls13-no-pha" not in ids(hz) and "tls13-disabled" in ids(hz)
        accepted = H.Live("x", tls13=P.Handshake(True, "1.3"), tls12=P.Handshake(True, "1.2"), default_vhost=False)
        h = by_id(run(managed(), snippet=TLS12_SNIPPET, snippet_used=SNIPPET, live=accepted), "tls13-no-pha")
        assert "measured: a TLS 1.3 handshake with x succeeded" in h.evidence
        hz = run(managed(), snippet=TLS12_SNIPPET, snippet_used=SNIPPET,
                 live=H.Live("x", tls13=refused.tls13, tls12=refused.tls12, default_vhost=False))
        assert "421 Misdirected Request" in by_id(hz, "tls13-disabled").breaks

    def test_plain_optional_asks_in_the_handshake_but_replication_needs_pha(self):
        h = by_id(run(fixture("plain-optional")), "tls13-no-pha")
        assert "/metacat/servlet/replication" in h.breaks and "/cn (" not in h.breaks


class TestHttp2:
    def test_http2_module_enabled(self):
        h = by_id(run(managed(), modules=("mpm_event", "ssl", "http2")), "http2")
        assert h.severity == H.HAZARD and h.where.endswith("mods-enabled/http2.conf:2")
        assert "HTTP_1_1_REQUIRED" in h.breaks and "Protocols http/1.1" in h.fix

    def test_vhost_protocols_override(self):
        text = managed().replace("\tSSLEngine on\n", "\tSSLEngine on\n\tProtocols http/1.1\n", 1)
        assert "http2" not in ids(run(text, modules=("mpm_event", "ssl", "http2")))

    def test_h2_without_the_module_is_inert_unless_measured(self):
        text = managed().replace("\tSSLEngine on\n", "\tSSLEngine on\n\tProtocols h2 http/1.1\n", 1)
        assert "http2" not in ids(run(text))
        live = H.Live("x", alpn=P.Handshake(True, "1.3", alpn="h2"))
        assert "http2" in ids(run(managed(), live=live))

    def test_prefork_keeps_a_guarded_http2_conf_off(self):
        assert "http2" not in ids(run(managed(), modules=("mpm_prefork", "ssl", "http2")))


class TestRenegBuffer:
    def test_fixture_has_it(self):
        assert "reneg-buffer" not in ids(run(managed()))

    @pytest.mark.parametrize("replace,needle", [
        ("", "no SSLRenegBufferSize on /cn: mod_ssl's default 131072"),
        ("\t\tSSLRenegBufferSize 131072\n", "SSLRenegBufferSize 131072"),
    ])
    def test_missing_or_small(self, replace, needle):
        text = managed().replace("\t\tSSLRenegBufferSize 10000000\n", replace)
        h = by_id(run(text), "reneg-buffer")
        assert needle in h.breaks and "413" in h.breaks and "SSLRenegBufferSize 10000000" in h.fix

    def test_vhost_level_counts(self):
        text = managed().replace("\t\tSSLRenegBufferSize 10000000\n", "").replace(
            "\tSSLEngine on\n", "\tSSLEngine on\n\tSSLRenegBufferSize 20000000\n", 1)
        assert "reneg-buffer" not in ids(run(text))

    def test_not_needed_without_a_request_on_cn(self):
        text = fixture("plain-optional").replace("\t\tSSLRenegBufferSize 10000000\n", "")
        assert "reneg-buffer" not in ids(run(text))


class TestBrowserPattern:
    def test_webkit_only_misses_ie_firefox_and_presto(self):
        h = by_id(run(fixture("webkit-only")), "browser-pattern")
        assert h.clients == ("Internet Explorer 10 (Windows 7)", "Internet Explorer 11 (Windows 7)",
                             "Internet Explorer 11 (Windows 10)", "Firefox (Windows)", "Firefox (macOS)",
                             "Firefox (Linux)", "Firefox (Android)", "Opera Presto (legacy)")
        assert "apply" in h.fix

    def test_target_exempts_every_family(self):
        assert "browser-pattern" not in ids(run(managed(), snippet_used=SNIPPET))
        assert "browser-pattern" not in ids(run(fixture("browser-list")))

    def test_plain_optional_asks_every_browser_in_the_handshake(self):
        h = by_id(run(fixture("plain-optional")), "browser-pattern")
        assert len(h.clients) == len(C.BROWSER_USER_AGENTS) and "(handshake)" in h.breaks

    def test_snippet_edited_to_drop_a_word(self):
        snippet = POLICY.replace("(windows|chrome|mozilla|safari|webkit)", "(windows|chrome|safari|webkit)")
        h = by_id(run(managed(), snippet=snippet, snippet_used=SNIPPET), "browser-pattern")
        assert h.clients == ("Firefox (macOS)", "Firefox (Linux)", "Firefox (Android)") and SNIPPET in h.fix
        assert "/(windows|chrome|safari|webkit)/" in h.breaks  # read from the configuration

    def test_api_clients_exempted_is_a_note(self):
        snippet = POLICY.replace("(windows|chrome|mozilla|safari|webkit)", "(windows|chrome|mozilla|safari|webkit|python)")
        hz = run(managed(), snippet=snippet, snippet_used=SNIPPET)
        note = by_id(hz, "api-exempted")
        assert note.severity == H.NOTE
        assert note.clients == ("python-requests", "DataONE Python client (d1_client / d1_libclient_python)",
                                "Python with its own ssl.SSLContext() (post-handshake auth off)")


class TestOverall:
    def test_clean_with_the_mitigation(self):
        hz = run(managed(), snippet=TLS12_SNIPPET, snippet_used=SNIPPET)
        assert ids(hz, H.HAZARD) == [] and H.exit_code(hz) == 0
        assert ids(hz, H.NOTE) == ["tls13-disabled", "tls12-no-renegotiation"]
        assert by_id(hz, "tls12-no-renegotiation").clients == ("Go net/http (default tls.Config)",)

    def test_configtest(self):
        assert H.check_configtest(True) == [] and H.check_configtest(None) == []
        h = H.check_configtest(False, "AH00526: Syntax error on line 3")[0]
        assert h.severity == H.HAZARD and h.where.startswith("AH00526") and H.exit_code([h]) == ExitCode.HAZARD == 5

    def test_report(self):
        hz = run(fixture("webkit-only"))
        rep = K.Report({"file": VHOST, "line": 11, "server_name": "cn", "state": "original:webkit-only"}, hz, None, ["n"])
        text = K.format_report(rep)
        assert text.splitlines()[0] == f"vhost: {VHOST}:11 cn (original:webkit-only)"
        assert "HAZARD [tls13-no-pha]" in text and "NOTE [tls12-no-renegotiation]" in text
        assert text.endswith("check: 2 hazards, exit 5\n") and "note: n" in text
        doc = rep.to_json()
        assert doc["clean"] is False and doc["exit_code"] == 5 and doc["hazards"][0]["id"] == "tls13-no-pha"
        clean = K.Report({"file": VHOST, "line": 11, "server_name": None, "state": "applied"}, [], None, [])
        assert "check: no hazard found" in K.format_report(clean) and clean.to_json()["clean"]
