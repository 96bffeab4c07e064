"""snippet: the policy file's contract (file:line in every refusal), its live copy, how status describes it."""

import os
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataone_cn_sslverify import apacheconf as ac
from dataone_cn_sslverify import clients, paths, snippet

HERE = os.path.dirname(__file__)
SHIPPED = open(os.path.join(HERE, "..", "..", "conf", "cn-sslverify.conf"), "rb").read()
CONF = "/etc/dataone/apache2/cn-sslverify.conf"
TARGET = b'<If "! ( %{HTTP_USER_AGENT} =~ /(windows|chrome|mozilla|safari|webkit)/i )">'


def _line(needle: bytes) -> int:
    """1-based line of the first line of the shipped policy file holding needle."""
    return next(i for i, ln in enumerate(SHIPPED.split(b"\n"), 1) if needle in ln)


LINES = {"none": _line(b"SSLVerifyClient none"), "loc": _line(b'<Location "/cn">'), "if_": _line(b"<If "),
         "endif": _line(b"</If>") + 1, "depth": _line(b"SSLVerifyDepth 10"), "proto": _line(b"#SSLProtocol")}


def test_the_shipped_policy_keeps_the_contract_with_and_without_the_tls12_opt_in():
    assert snippet.check(SHIPPED, CONF) == "(windows|chrome|mozilla|safari|webkit)"
    on = SHIPPED.replace(b"#SSLProtocol -all +TLSv1.2", b"SSLProtocol -all +TLSv1.2")
    assert on != SHIPPED and snippet.check(on, CONF)
    assert snippet.check(on.replace(b"\n", b"\r\n"), CONF)


REFUSED = {
    "exempts-every-client": (b"webkit)/i", b"webkit|.)/i", r":{if_}: .*matches the API clients curl"),
    "exempts-python": (b"webkit)/i", b"webkit|python)/i", r":{if_}: .*matches the API clients python-requests"),
    "exempts-java": (b"webkit)/i", b"webkit|java)/i", r":{if_}: .*Java 11\+ java.net.http.HttpClient"),
    "exempts-r": (b"webkit)/i", b"webkit|httr)/i", r":{if_}: .*R httr"),
    "exempts-d1": (b"webkit)/i", b"webkit|dataone)/i", r":{if_}: .*DataONE Python client"),
    "misses-ie11": (b"(windows|chrome|mozilla|", b"(chrome|", r":{if_}: .*does not match the browsers Internet Explorer 11"),
    "case-sensitive": (b"webkit)/i )", b"webkit)/ )", r":{if_}: .*does not match the browsers"),
    "unknown-flag": (b"webkit)/i )", b"webkit)/iq )", r":{if_}: regex flags 'iq'"),
    "not-negated": (b'"! ( %{HTTP_USER_AGENT}', b'"( %{HTTP_USER_AGENT}', r":{if_}: .*not `! \("),
    "pcre-only": (b"(windows|", b"(\\p{L}windows|", r":{if_}: .*cannot be checked"),
    "negative-depth": (b"SSLVerifyDepth 10", b"SSLVerifyDepth -1", r":{depth}: SSLVerifyDepth -1"),
    "vhost-optional": (b"SSLVerifyClient none\n", b"SSLVerifyClient optional\n", r":{none}: vhost-level `SSLVerifyClient optional`"),
    "require-in-if": (b"SSLVerifyClient optional\n    </If>", b"SSLVerifyClient require\n    </If>", r":{if_}: .*exactly `SSLVerifyClient optional`"),
    "old-protocol": (b"#SSLProtocol -all +TLSv1.2", b"SSLProtocol -all +TLSv1.1", r":{proto}: SSLProtocol \+TLSv1.1"),
    "replication": (b"#SSLProtocol", b'<Location "/metacat/servlet/replication">\n SSLVerifyClient none\n</Location>\n#SSLProtocol',
                    r":{proto}: touches replication"),
    "replication-match": (b"#SSLProtocol", b'<LocationMatch "/metacat/servlet/replicat">\n SSLVerifyClient none\n</LocationMatch>\n#SSLProtocol',
                          r":{proto}: touches replication"),
    "other-location": (b"#SSLProtocol", b'<Location "/metacat">\n SSLVerifyClient none\n</Location>\n#SSLProtocol',
                       r":{proto}: <Location \"/metacat\"> is outside the policy's contract"),
    "second-cn-location": (b"#SSLProtocol", b'<Location "/cn">\n SSLVerifyClient require\n</Location>\n#SSLProtocol',
                           r":{proto}: a second <Location"),
    "other-directive": (b"#SSLProtocol", b"Header always set X-Policy on\n#SSLProtocol", r":{proto}: `Header` is outside"),
    "extra-in-location": (b"    </If>\n</Location>", b"    </If>\n    SSLVerifyClient require\n</Location>",
                          r":{endif}: SSLVerifyClient require inside <Location \"/cn\"> is outside"),
    "vhost-wide-if": (b"#SSLProtocol", b'<If "%{HTTP_USER_AGENT} =~ /curl/">\n SSLVerifyClient none\n</If>\n#SSLProtocol',
                      r":{proto}: <If .* is outside the policy's contract"),
    "no-location": (b'<Location "/cn">', b'<Location "/cnx">', r":{loc}: <Location \"/cnx\"> is outside"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_contract_refusals_name_file_and_line(case):
    old, new, expect = REFUSED[case]
    expect = expect.format(**LINES)
    assert SHIPPED.count(old) >= 1, case
    data = SHIPPED.replace(old, new, 1)
    with pytest.raises(snippet.ContractError) as ei:
        snippet.check(data, CONF)
    msg = str(ei.value)
    assert re.search(re.escape(CONF) + expect, msg), msg
    assert all(re.match(re.escape(CONF) + r":\d+(-\d+)?: ", p) for p in ei.value.problems), ei.value.problems


def test_a_file_that_does_not_parse_is_refused_with_its_line():
    with pytest.raises(ac.ConfigSyntaxError, match=re.escape(CONF) + ":%d: " % LINES["loc"]):
        snippet.check(SHIPPED.replace(b"</Location>", b""), CONF)


def test_a_pattern_written_differently_passes_when_it_keeps_the_promise():
    data = SHIPPED.replace(b"/(windows|chrome|mozilla|safari|webkit)/i", b"m#^mozilla/#i")
    assert snippet.check(data, CONF) == "^mozilla/"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["windows", "chrome", "mozilla", "safari", "webkit", "gecko", "trident", "curl",
                                 "python", "java", "httr", "go-http", "apache-httpclient", "dataone", "edg"]),
                min_size=1, max_size=7, unique=True))
def test_contract_equals_the_catalogue_promise(words):
    """Accepted exactly when every catalogue browser matches and no catalogue API client does."""
    rx = re.compile("(" + "|".join(re.escape(w) for w in words) + ")", re.I)
    promise = all(bool(rx.search(c.user_agent)) == (c.kind == clients.BROWSER) for c in clients.CLIENTS)
    data = SHIPPED.replace(b"(windows|chrome|mozilla|safari|webkit)", ("(" + "|".join(words) + ")").encode())
    try:
        snippet.check(data, CONF)
        ok = True
    except snippet.ContractError:
        ok = False
    assert ok == promise, words


# -- live copy and status --------------------------------------------------------------


def test_live_copy_round_trip_and_description(monkeypatch):
    live = snippet.render_live(CONF, SHIPPED)
    assert live.endswith(SHIPPED) and live.startswith(b"# Written by dataone-cn-sslverify from " + CONF.encode())
    assert snippet.live_source(CONF, live) == SHIPPED
    assert snippet.live_source(CONF, SHIPPED) is None
    crlf = SHIPPED.replace(b"\n", b"\r\n")
    assert snippet.live_source(CONF, snippet.render_live(CONF, crlf)) == crlf
    assert snippet.describe(CONF, SHIPPED, live).startswith("live")
    edited = SHIPPED.replace(b"webkit)/i", b"webkit|edg)/i")
    assert snippet.describe(CONF, edited, live) == "edited, not live yet: run apply"
    assert snippet.describe(CONF, edited, live, rejected="live check failed: x") == "edited, rejected: live check failed: x"
    bad = SHIPPED.replace(b"webkit)/i", b"webkit|curl)/i")
    assert snippet.describe(CONF, bad, live).startswith("edited, rejected: " + CONF + ":%d: " % LINES["if_"])
    assert "edited by hand" in snippet.describe(CONF, SHIPPED, SHIPPED)
    assert "edited by hand" in snippet.describe(CONF, SHIPPED, live + b"# note\n")
    assert snippet.live_source(CONF, live.replace(b"webkit)/i", b"webkit|edg)/i")) is None
    assert snippet.describe(CONF, SHIPPED, None) == "not live yet: run apply"
    for var in ("DATAONE_CN_SSLVERIFY_POLICY", "DATAONE_CN_SSLVERIFY_LIVE"):
        monkeypatch.delenv(var, raising=False)
    assert paths.live_path() == "/etc/dataone/apache2/cn-sslverify.live.conf" == snippet.DEFAULT_LIVE


@pytest.mark.parametrize("state,expect", [
    ("superseded", "apply --adopt`"), ("applied", "apply --adopt`"),
    ("original:webkit-only", "apply --adopt`"), ("unrecognised", "apache2ctl graceful"),
])
def test_tls12_fix_is_a_command_for_the_state(state, expect):
    text = snippet.tls12_fix(state, CONF, "/etc/apache2/sites-available/cn-ssl.conf")
    assert expect in text and ("SSLProtocol -all +TLSv1.2" in text)
