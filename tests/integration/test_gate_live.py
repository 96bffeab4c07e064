"""The live gate against a real Apache (tests/harness): the policy's promise, checked on the wire.

Each test makes the fault for real -- a pattern that exempts API clients, a
section that opens replication, verification that accepts an unknown CA, a
moved replication path -- and shows that `apply` rolls back (or `probe
--compare` fails) and says why; and that what the policy cannot help (API
clients without post-handshake auth) is reported as its known effect, so
`apply` succeeds on the historical vhosts that asked everyone in the
handshake.
"""

import json
import re
from pathlib import Path
from typing import Any, Dict, List

import pytest

from harness import ApacheInstance
from harness.changes import patch_applied
from transaction_support import assert_nothing_left_changed, tool

pytestmark = pytest.mark.integration

REPL = "/metacat/servlet/replication"
NO_PHA_FAMILIES = ["api-d1-java", "api-go", "api-java-httpclient", "api-python-ssl"]
OPEN_REPLICATION = f'<Location "{REPL}">\n\tSSLVerifyClient none\n</Location>\n'


def live_snippet(inst: ApacheInstance) -> Path:
    """The file the applied vhost includes at the managed block (what Apache loads as the policy)."""
    m = re.search(rb"dataone-cn-sslverify: begin[^\n]*\n\s*Include\s+\"?([^\s\"]+)", inst.vhost_bytes())
    assert m, inst.vhost_bytes().decode()[-2000:]
    return Path(m.group(1).decode())


def effects(doc: Dict[str, Any]) -> List[str]:
    return sorted({e["client"] for e in (doc.get("gate") or doc.get("verdict") or {}).get("effects", [])})


def saved_probe(inst: ApacheInstance, tmp_path: Path) -> str:
    r = tool(inst, "probe")
    assert r.code == 0 and r.doc["verdict"]["ok"], r
    path = tmp_path / "probe.json"
    path.write_text(r.stdout)
    return str(path)


# ---------------------------------------------------------------- what the policy cannot help is not a regression


@pytest.mark.parametrize("apache", ["plain-optional"], indirect=True)
def test_apply_succeeds_on_plain_optional_and_names_who_cannot_use_cn(apache: ApacheInstance) -> None:
    """Every client was asked in the handshake before; Java/Go/bare Python now cannot answer: effects, not failures."""
    r = tool(apache, "apply")
    assert r.code == 0 and r.doc["result"] == "changed", r
    gate = r.doc["gate"]
    assert gate["ok"] and gate["mode"] == "policy" and gate["offered"] == ["1.2", "1.3"], gate
    assert effects(r.doc) == NO_PHA_FAMILIES
    lines = [s["detail"] for s in r.steps if s["name"] == "effect"]
    assert any(ln.startswith("known effect of the policy: Java 11+ java.net.http.HttpClient cannot use /cn under "
                             "TLS 1.3: no post-handshake auth") for ln in lines), r
    assert any("Go net/http (default tls.Config) cannot use /cn under TLS 1.2: it refuses the renegotiation" in ln
               for ln in lines), r
    opt_in = [ln for ln in lines if ln.startswith("mitigation: the TLS 1.2 opt-in")]
    assert len(opt_in) == 1 and str(apache.policy_path) in opt_in[0] and "dataone-cn-sslverify apply" in opt_in[0]
    assert "effect: mitigation: the TLS 1.2 opt-in" in r.stderr  # the operator reads it
    probe_step = next(s for s in r.steps if s["name"] == "probe")
    assert "still require a certificate" in probe_step["detail"] and "untrusted certificate refused" in probe_step["detail"]
    # on the wire: replication refuses a client without a certificate, and an untrusted one, over both versions
    for tls in ("1.2", "1.3"):
        assert apache.request(REPL, user_agent="curl/7.88.1", tls=tls).status != 200
        assert apache.request(REPL, user_agent="curl/7.88.1", tls=tls, cert="untrusted").status != 200


@pytest.mark.parametrize("apache", ["webkit-if-else"], indirect=True)
def test_apply_on_webkit_if_else_closes_replication_again(apache: ApacheInstance, tmp_path: Path) -> None:
    """The if/else variant answers replication to WebKit clients without a certificate; after apply it refuses."""
    r = tool(apache, "probe")
    assert r.doc["verdict"]["mode"] == "original" and r.doc["verdict"]["ok"], r  # an original: reported, not judged
    assert any(w.startswith(f"{REPL} requires a client certificate, but answered browser-") for w in
               r.doc["verdict"]["warnings"]), r
    r = tool(apache, "apply")
    assert r.code == 0 and r.doc["gate"]["ok"], r
    assert not any(REPL in p for p in r.doc["gate"]["problems"])


# ---------------------------------------------------------------- regressions against the promise roll back


def test_replication_opened_by_an_included_file_rolls_back(apache: ApacheInstance) -> None:
    """An <If> in a file the vhost includes overrides replication's `require` (If merges last): the gate refuses."""
    apache.jk_mount.write_text(apache.jk_mount.read_text()
                               + f'<If "%{{REQUEST_URI}} =~ m#^{REPL}#">\n\tSSLVerifyClient none\n</If>\n')
    assert apache.graceful().ok
    original = apache.vhost_bytes()
    r = tool(apache, "apply")
    assert r.code == 1 and r.doc["result"] == "rolled-back", r
    problems = r.doc["gate"]["problems"]
    for tls in ("1.2", "1.3"):
        assert any(p.startswith(f"{REPL} requires a client certificate, but answered api-curl/{tls}/nocert")
                   for p in problems), problems
        assert any(p.startswith(f"{REPL} requires a client certificate, but answered api-curl/{tls}/untrusted")
                   for p in problems), problems
    assert "live check failed" in r.doc["message"] and REPL in r.doc["message"]
    assert_nothing_left_changed(apache, original, r, code=1, safari_asked=False)


def test_too_wide_pattern_fails_and_the_shipped_one_applies_after(apache: ApacheInstance) -> None:
    """A pattern that matches API clients too never goes live; putting the shipped snippet back then applies."""
    shipped = apache.policy_path.read_text()
    assert "safari|webkit)" in shipped
    apache.policy_path.write_text(shipped.replace("safari|webkit)", "safari|webkit|.)"))
    original = apache.vhost_bytes()
    r = tool(apache, "apply")
    # refused by the snippet contract before anything is written, or rolled back by the live gate: never live
    assert r.code in (1, 2) and r.doc["result"] in ("refused", "rolled-back"), r
    if r.code == 1:
        assert any(p.startswith("api-curl/1.2/cert (User-Agent 'curl/7.88.1') was not asked")
                   for p in r.doc["gate"]["problems"]), r
    assert apache.vhost_bytes() == original
    apache.policy_path.write_text(shipped)
    r = tool(apache, "apply")
    assert r.code == 0 and r.doc["result"] == "changed" and r.doc["gate"]["ok"], r  # no ratchet


@pytest.mark.parametrize("change,problem", [
    (lambda s: s.replace("safari|webkit)", "safari|webkit|.)"), "was not asked for a client certificate on /cn/"),
    (lambda s: s + OPEN_REPLICATION, f"{REPL} requires a client certificate, but answered"),
    (lambda s: s.replace("SSLVerifyClient optional", "SSLVerifyClient optional_no_ca"),
     "presented a certificate from an untrusted CA on /cn/ and was answered"),
], ids=["api-exempted", "replication-opened", "untrusted-accepted"])
def test_probe_compare_fails_on_the_wire(apache: ApacheInstance, tmp_path: Path, change, problem) -> None:
    """Whatever the snippet contract refuses statically, the gate catches on the wire (probe --compare exits 5)."""
    patch_applied(apache)
    assert apache.graceful().ok
    saved = saved_probe(apache, tmp_path)
    snippet = live_snippet(apache)
    text = snippet.read_text()
    snippet.write_text(change(text))
    try:
        assert apache.graceful().ok
        r = tool(apache, "probe", "--compare", saved)
        assert r.code == 5 and not r.doc["verdict"]["ok"], r
        assert any(problem in p for p in r.doc["verdict"]["problems"]), r.doc["verdict"]["problems"]
        assert r.doc["changes"], r
        human = tool(apache, "probe", "--compare", saved, as_json=False)
        assert human.code == 5 and "problem: " in human.stderr and "(policy): FAILS" in human.stderr
    finally:
        snippet.write_text(text)
        assert apache.graceful().ok
    assert tool(apache, "probe", "--compare", saved).code == 0


@pytest.mark.parametrize("apache", ["browser-list"], indirect=True)
def test_required_paths_come_from_the_loaded_config(apache: ApacheInstance) -> None:
    """Replication under another path (a <LocationMatch>) is found and probed: nothing is hard-coded."""
    moved = apache.vhost_bytes().replace(f"<Location {REPL}>".encode(), b'<LocationMatch "^/d1/mn/replicate">')
    moved = re.sub(rb"(<LocationMatch \"\^/d1/mn/replicate\">.*?)</Location>", rb"\1</LocationMatch>", moved,
                   count=1, flags=re.S)
    apache.write_vhost(moved)
    assert apache.graceful().ok, apache.configtest().output
    r = tool(apache, "probe")
    assert r.code == 0 and r.doc["verdict"]["ok"], r
    paths = {p["path"] for p in r.doc["profiles"]}
    assert paths == {"/cn/", "/d1/mn/replicate"}, paths
    assert "/d1/mn/replicate still require a certificate" in r.doc["verdict"]["summary"]


def test_probe_json_is_what_the_fleet_role_reads(apache: ApacheInstance) -> None:
    """The Ansible role asserts verdict.ok and verdict.mode from `probe --json` (no gate of its own)."""
    r = tool(apache, "probe")
    assert r.code == 0 and r.doc["verdict"]["mode"] == "original" and r.doc["verdict"]["ok"], r
    role = Path(__file__).resolve().parents[2] / "deploy/ansible/roles/cn_sslverify/tasks/gate.yml"
    text = role.read_text()
    assert "verdict.ok" in text and "verdict.mode" in text
    assert "cert_requested" not in text  # the role does not re-derive the gate from the rows
    json.dumps(r.doc)
