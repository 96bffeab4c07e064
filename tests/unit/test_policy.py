"""policy: recognition of every historical block, refusals, patches that touch only the block."""

import os
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataone_cn_sslverify import apacheconf as ac
from dataone_cn_sslverify import policy

HERE = os.path.dirname(__file__)
VHOSTS = os.path.join(HERE, "..", "fixtures", "vhosts")
SNIPPET = os.path.join(HERE, "..", "..", "conf", "cn-sslverify.conf")
EXPECTED = {
    "plain-optional": ("original", "plain-optional"),
    "webkit-if-else": ("original", "webkit-if-else"),
    "webkit-only": ("original", "webkit-only"),
    "browser-list": ("superseded", "browser-list"),
}


def fixture(variant: str) -> str:
    with open(os.path.join(VHOSTS, f"cn-ssl.{variant}.conf"), "rb") as f:
        return ac.decode(f.read())


def assess_text(text: str, name: str = "cn-ssl.conf") -> policy.Assessment:
    found = policy.assess(ac.parse(text, name), name)
    assert len(found) == 1, found
    return found[0]


def block_text(variant: str) -> str:
    """The client-verification block of a fixture (between the Safari comment and the certificates)."""
    a = assess_text(fixture(variant))
    return fixture(variant)[a.block.start:a.block.end]


@pytest.mark.parametrize("variant", sorted(EXPECTED))
def test_fixture_variants_recognised(variant):
    a = assess_text(fixture(variant))
    assert (a.state, a.variant) == EXPECTED[variant]
    assert a.server_name == "@SERVER_NAME@"
    text = fixture(variant)
    blk = text[a.block.start:a.block.end]
    assert "SSLVerifyClient" in blk and "SSLVerifyDepth 10" in blk
    # neither the replication block nor the cookie <If> is part of the block
    assert "replication" not in blk and "Set-Cookie" not in blk and "SSLRenegBufferSize" not in blk
    assert blk.startswith("\t") and blk.endswith("\n")


def test_only_ssl_vhosts_are_assessed():
    tree = ac.parse(fixture("webkit-only"), "x")
    assert [vh.args for vh in policy.find_ssl_vhosts(tree)] == [["*:@HTTPS_PORT@"]]


@pytest.mark.parametrize("variant", ["plain-optional", "webkit-if-else", "webkit-only"])
@pytest.mark.parametrize("eol", ["\n", "\r\n"])
def test_apply_touches_only_the_block_and_reverts_byte_identical(variant, eol):
    text = fixture(variant).replace("\n", eol)
    a = assess_text(text)
    patch = policy.plan_apply(text, a, policy.DEFAULT_SNIPPET)
    new = patch.apply_to(text)
    # everything before and after the block is identical
    assert new[:a.block.start] == text[:a.block.start]
    assert new[a.block.start + len(patch.new):] == text[a.block.end:]
    assert patch.new == (
        f"\t{policy.BEGIN_MARK}{eol}\tInclude /etc/dataone/apache2/cn-sslverify.conf{eol}\t{policy.END_MARK}{eol}"
    )
    # the diff's changed lines are exactly the block's lines
    diff = policy.unified_diff("cn-ssl.conf", text, new)
    removed = [ln[1:] for ln in diff.splitlines(keepends=True) if ln.startswith("-") and not ln.startswith("---")]
    assert "".join(removed) == text[a.block.start:a.block.end]
    b = assess_text(new)
    assert (b.state, b.variant) == ("applied", "managed")
    assert policy.plan_apply(new, b) is None  # idempotent
    back = policy.plan_revert(new, b, patch.old).apply_to(new)
    assert back == text


def test_replication_and_cookie_blocks_untouched():
    text = fixture("webkit-only")
    a = assess_text(text)
    new = policy.plan_apply(text, a).apply_to(text)
    for needle in ["\t<Location /metacat/servlet/replication>\n\t\tSSLVerifyClient require\n\t\tSSLVerifyDepth  10\n\t</Location>\n",
                   '\t<If "%{HTTP_USER_AGENT} !~ /(iPhone OS 12_|iPad; CPU OS 12_|Intel Mac OS X 10_14_.*Version.*Safari)/i">\n',
                   "\t<Location /cn>\n\t\tSSLRenegBufferSize 10000000\n\t</Location>\n"]:
        assert text.count(needle) == 1 and new.count(needle) == 1


def test_revert_keeps_operator_edits_elsewhere():
    text = fixture("webkit-if-else")
    patch = policy.plan_apply(text, assess_text(text))
    applied = patch.apply_to(text)
    edited = applied.replace("\tServerAdmin administrator@dataone.org\n", "\tServerAdmin ops@dataone.org\n\tKeepAlive On\n")
    edited = edited.replace("\tSSLCACertificateFile", "\t# operator note\n\tSSLCACertificateFile")
    b = assess_text(edited)
    back = policy.plan_revert(edited, b, patch.old).apply_to(edited)
    expected = text.replace("\tServerAdmin administrator@dataone.org\n", "\tServerAdmin ops@dataone.org\n\tKeepAlive On\n")
    expected = expected.replace("\tSSLCACertificateFile", "\t# operator note\n\tSSLCACertificateFile")
    assert back == expected


def test_block_at_end_of_file_without_newline():
    text = "<VirtualHost *:443>\nSSLEngine on\n  SSLVerifyClient optional\n  SSLVerifyDepth 10\n</VirtualHost>"
    a = assess_text(text)
    assert a.variant == "plain-optional" and a.block.indent == "  "
    new = policy.plan_apply(text, a).apply_to(text)
    assert new.endswith("  # dataone-cn-sslverify: end\n</VirtualHost>")
    assert policy.plan_revert(new, assess_text(new), text[a.block.start:a.block.end]).apply_to(new) == text


# -- spellings of the same variants ------------------------------------------

WEBKIT_ONLY_SPELLINGS = [
    '<Location "/cn">\n<If " ! ( %{HTTP_USER_AGENT} =~ /webkit/i )">\nSSLVerifyClient optional\n</If>\n</Location>',
    "<location /cn>\n<if \"!(%{HTTP_USER_AGENT}=~/webkit/i)\">\nsslverifyclient OPTIONAL\n</if>\n</location>",
    "<Location '/cn/'>\n  <If \"%{HTTP_USER_AGENT} !~ /WebKit/i\">\n    SSLVerifyClient optional\n  </If>\n</Location>",
    "<Location /cn>\n\t<If \"! (req('User-Agent') =~ m#webkit#i)\">\n\t\t# only API clients\n\t\tSSLVerifyClient optional\n\t</If>\n</Location>",
]


@pytest.mark.parametrize("inner", WEBKIT_ONLY_SPELLINGS)
def test_webkit_only_spellings(inner):
    text = f"<VirtualHost *:443>\nSSLEngine on\nSSLVerifyClient none\n{inner}\nSSLVerifyDepth 10\n</VirtualHost>\n"
    a = assess_text(text)
    assert (a.state, a.variant) == ("original", "webkit-only"), a.reason


@pytest.mark.parametrize("cond,expected", [
    ('"%{HTTP_USER_AGENT} =~ /AppleWebKit/"', "webkit-if-else"),
    ("'%{HTTP_USER_AGENT}=~/applewebkit/i'", "webkit-if-else"),
])
def test_webkit_if_else_spellings(cond, expected):
    text = (f"<VirtualHost *:443>\nSSLEngine on\n<If {cond}>\n SSLVerifyClient none\n</If>\n<Else>\n"
            " SSLVerifyClient optional\n</Else>\nSSLVerifyDepth 10\n</VirtualHost>\n")
    assert assess_text(text).variant == expected


def test_browser_list_with_extra_words_is_superseded():
    text = ('<VirtualHost *:443>\nSSLEngine on\nSSLVerifyClient none\n<Location "/cn">\n'
            '<If "! ( %{HTTP_USER_AGENT} =~ /(windows|chrome|mozilla|safari|webkit|httr|julia|python)/i )">\n'
            "SSLVerifyClient optional\n</If>\n</Location>\nSSLVerifyDepth 10\n</VirtualHost>\n")
    a = assess_text(text)
    assert a.state == "superseded" and policy.plan_apply(text, a) is None


REFUSED = [
    ("SSLVerifyClient optional_no_ca\nSSLVerifyDepth 10\n", "SSLVerifyClient optional_no_ca"),
    ('SSLVerifyClient none\n<Location "/cn">\nSSLVerifyClient require\n<If "! (%{HTTP_USER_AGENT} =~ /webkit/i)">\n'
     "SSLVerifyClient optional\n</If>\n</Location>\n", "other than by one <If>"),
    ('SSLVerifyClient none\n<Location "/cn">\n<If "! (%{HTTP_USER_AGENT} =~ /(chrome|firefox)/i)">\n'
     "SSLVerifyClient optional\n</If>\n</Location>\n", "neither the WebKit-only"),
    ('SSLVerifyClient none\n<Location "/cn">\n<If "! (%{HTTP_USER_AGENT} =~ /(windows|chrome|mozilla|safari|webkit)/)">\n'
     "SSLVerifyClient optional\n</If>\n</Location>\n", "case-insensitive"),
    ('<If "%{REMOTE_ADDR} == \'1.2.3.4\'">\nSSLVerifyClient none\n</If>\n<Else>\nSSLVerifyClient optional\n</Else>\n',
     "not a User-Agent match"),
    ('SSLVerifyClient none\nSSLCertificateFile /x\n<Location "/cn">\n<If "! (%{HTTP_USER_AGENT} =~ /webkit/i)">\n'
     "SSLVerifyClient optional\n</If>\n</Location>\n", "split into 2 places"),
    ("SSLVerifyClient optional\nSSLVerifyDepth 10\nSSLVerifyDepth 5\n", "appears 2 times"),
    (f"{policy.BEGIN_MARK}\nInclude /etc/dataone/apache2/cn-sslverify.conf\nSSLVerifyClient optional\n{policy.END_MARK}\n",
     "edited by hand"),
    (f"{policy.BEGIN_MARK}\nInclude /etc/dataone/apache2/cn-sslverify.conf\n", "markers were edited"),
]


@pytest.mark.parametrize("body,words", REFUSED, ids=[w for _, w in REFUSED])
def test_unrecognised_blocks_are_refused_with_file_and_line(body, words):
    text = f"<VirtualHost *:443>\nServerName cn\nSSLEngine on\n{body}SSLCertificateFile /y\n</VirtualHost>\n"
    a = assess_text(text, "/etc/apache2/sites-available/cn-ssl.conf")
    assert a.state == "unrecognised"
    assert words in a.reason
    assert re.match(r"/etc/apache2/sites-available/cn-ssl\.conf:\d+(-\d+)?: ", a.reason), a.reason
    with pytest.raises(policy.PolicyError) as ei:
        policy.plan_apply(text, a)
    assert str(ei.value) == a.reason


def test_unrelated_user_agent_if_is_not_a_block():
    text = ('<VirtualHost *:443>\nSSLEngine on\n<If "%{HTTP_USER_AGENT} !~ /Safari/i">\n'
            'Header edit Set-Cookie ^(.*)$ "$1; SameSite=None"\n</If>\n</VirtualHost>\n')
    a = assess_text(text)
    assert a.state == "absent" and a.block is None
    with pytest.raises(policy.PolicyError):
        policy.plan_apply(text, a)


def test_revert_refuses_when_include_removed():
    text = fixture("webkit-only")
    patch = policy.plan_apply(text, assess_text(text))
    applied = patch.apply_to(text)
    gone = applied.replace(patch.new, "")
    with pytest.raises(policy.PolicyError, match="removed or edited by hand"):
        policy.plan_revert(gone, assess_text(gone), patch.old)
    damaged = applied.replace("Include /etc/dataone", "IncludeOptional /etc/dataone").replace(
        policy.END_MARK, "SSLVerifyClient optional\n\t" + policy.END_MARK)
    with pytest.raises(policy.PolicyError, match="edited by hand"):
        policy.plan_revert(damaged, assess_text(damaged), patch.old)


def test_revert_of_original_is_a_no_op():
    text = fixture("webkit-only")
    a = assess_text(text)
    assert policy.plan_revert(text, a, text[a.block.start:a.block.end]) is None


def test_snippet_is_the_target():
    tree = ac.parse(open(SNIPPET, "rb").read(), SNIPPET)
    assert policy.snippet_pattern(tree) == policy.DEFAULT_PATTERN
    body = "".join(n.render() for n in tree.children if not isinstance(n, (ac.Comment, ac.Blank)))
    assert body == policy.render_target()


def test_snippet_that_is_not_the_target_is_refused():
    bad = ac.parse("SSLVerifyClient optional\nSSLVerifyDepth 10\n", "/etc/dataone/apache2/cn-sslverify.conf")
    with pytest.raises(policy.PolicyError, match=r"^/etc/dataone/apache2/cn-sslverify\.conf:1-2: .*expected the browser-list"):
        policy.snippet_pattern(bad)


def test_ua_condition_parser():
    c = policy.parse_ua_condition('" ! ( %{HTTP_USER_AGENT} =~ /(windows|chrome)/i )"')
    assert c.negated and c.regex == "(windows|chrome)" and c.case_insensitive and c.words == ("windows", "chrome")
    assert policy.parse_ua_condition("%{HTTP_USER_AGENT} =~ /a.*b/").words is None
    assert policy.parse_ua_condition("%{REQUEST_URI} =~ /x/") is None
    assert not policy.parse_ua_condition("!!(%{HTTP_USER_AGENT} =~ /x/)").negated


# -- property: any indentation / line ending / case keeps the round trip ------

@st.composite
def mangled(draw):
    variant = draw(st.sampled_from(["plain-optional", "webkit-if-else", "webkit-only"]))
    text = fixture(variant)
    indent = draw(st.sampled_from(["\t", "  ", " \t", "\t ", ""]))
    lines = text.split("\n")
    out = []
    for ln in lines:
        stripped = ln.lstrip(" \t")
        if draw(st.booleans()):
            ln = indent + stripped + draw(st.sampled_from(["", " ", "\t"]))
        if draw(st.integers(0, 4)) == 0 and re.match(r"\s*</?(SSLVerify|Location|If|Else)", stripped, re.I):
            ln = re.sub(r"(SSLVerifyClient|SSLVerifyDepth|Location|If|Else)", lambda m: m.group(0).upper(), ln, count=1)
        out.append(ln)
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    text = eol.join(out)
    if draw(st.booleans()):
        text = text.rstrip("\r\n")
    return variant, text


@settings(max_examples=150, deadline=None)
@given(mangled())
def test_apply_revert_round_trip_property(case):
    variant, text = case
    a = assess_text(text)
    assert (a.state, a.variant) == ("original", variant), a.reason
    patch = policy.plan_apply(text, a)
    new = patch.apply_to(text)
    assert new[:a.block.start] == text[:a.block.start]
    assert new[a.block.start + len(patch.new):] == text[a.block.end:]
    assert patch.new.startswith(a.block.indent + "#")
    b = assess_text(new)
    assert b.state == "applied" and policy.plan_apply(new, b) is None
    assert policy.plan_revert(new, b, patch.old).apply_to(new) == text


@settings(max_examples=100, deadline=None)
@given(mangled(), st.integers(0, 5))
def test_patch_diff_equals_the_whole_file_diff(case, context):
    """The windowed diff `diff` prints is exactly the diff of the whole files."""
    _, text = case
    patch = policy.plan_apply(text, assess_text(text))
    whole = policy.unified_diff("f", text, patch.apply_to(text), context)
    assert policy.patch_diff("f", text, patch, context) == whole
    assert whole.count("@@ -") == 1


def test_block_inside_a_conditional_section_of_the_vhost():
    """`<IfModule mod_ssl.c>` inside the vhost only decides whether the block is read: still the block."""
    block = ('\t\tSSLVerifyClient none\n\t\t<Location "/cn">\n\t\t\t<If "! ( %{HTTP_USER_AGENT} =~ /webkit/i )">\n'
             "\t\t\t\tSSLVerifyClient optional\n\t\t\t</If>\n\t\t</Location>\n\t\tSSLVerifyDepth 10\n")
    text = ("<VirtualHost *:443>\n\tSSLEngine on\n\t<IfModule mod_ssl.c>\n" + block
            + "\t</IfModule>\n\tSSLCertificateFile /x\n</VirtualHost>\n")
    a = assess_text(text)
    assert (a.state, a.variant) == ("original", "webkit-only"), a.reason
    patch = policy.plan_apply(text, a)
    assert patch.old == block and patch.new.startswith("\t\t# dataone-cn-sslverify: begin")
    new = patch.apply_to(text)
    b = assess_text(new)
    assert b.state == "applied"
    assert policy.plan_revert(new, b, patch.old).apply_to(new) == text
    # the same block both inside and outside the conditional is two places: refused
    twice = text.replace("\tSSLCertificateFile /x\n", "\tSSLVerifyClient optional\n\tSSLCertificateFile /x\n")
    assert assess_text(twice).state == "unrecognised"


@pytest.mark.parametrize("body", ["SSLVerifyClient require\nSSLVerifyDepth 5\n", "SSLVerifyDepth 3\n",
                                  "sslverifyclient REQUIRE\n"])
def test_mandatory_client_auth_is_another_policy_not_a_cn_block(body):
    """An admin vhost that requires certificates from everyone is neither a candidate nor a refusal."""
    text = f"<VirtualHost *:443>\nServerName admin\nSSLEngine on\n{body}</VirtualHost>\n"
    a = assess_text(text, "/etc/apache2/sites-available/admin.conf")
    assert a.state == "absent" and a.block is None
    assert a.reason.startswith("/etc/apache2/sites-available/admin.conf:4") and "left alone" in a.reason
    with pytest.raises(policy.PolicyError):
        policy.plan_apply(text, a)


def test_stray_mandatory_directive_beside_the_block_is_a_warning_not_a_split():
    text = fixture("webkit-only").replace("\tSSLEngine on\n", "\tSSLEngine on\n\tSSLVerifyDepth 3\n")
    a = assess_text(text)
    assert (a.state, a.variant) == ("original", "webkit-only"), a.reason
    assert any("SSLVerifyDepth 3" in w and "left alone" in w for w in a.warnings), a.warnings
    patch = policy.plan_apply(text, a)
    assert "SSLVerifyDepth 3" not in patch.old


# -- real shapes: other directives in the /cn Location, comments around the block ------

LIVE = "/etc/dataone/apache2/cn-sslverify.live.conf"


def shape(name: str) -> str:
    with open(os.path.join(VHOSTS, f"cn-ssl.{name}.conf"), "rb") as f:
        return ac.decode(f.read())


def test_target_with_reneg_buffer_in_the_location_is_superseded_and_adopt_keeps_the_buffer():
    text = shape("target-reneg")
    a = assess_text(text)
    assert (a.state, a.variant) == ("superseded", "browser-list"), a.reason
    assert policy.plan_apply(text, a, LIVE) is None  # superseded: nothing, unless adopted
    patch = policy.plan_apply(text, a, LIVE, adopt=True)
    new = patch.apply_to(text)
    assert new.count("SSLRenegBufferSize 10000000") == text.count("SSLRenegBufferSize 10000000") == 2
    assert "# uploads through the CN must survive" in new
    assert "SSLVerifyClient optional" not in patch.new and f"Include {LIVE}" in patch.new
    assert patch.new == (f"\t{policy.BEGIN_MARK}\n\tInclude {LIVE}\n"
                         '\t<Location "/cn">\n\t\t# uploads through the CN must survive the renegotiation below\n'
                         f"\t\tSSLRenegBufferSize 10000000\n\t</Location>\n\t{policy.END_MARK}\n")
    b = assess_text(new)
    assert b.state == "applied" and b.warnings == [], b.warnings
    assert policy.plan_apply(new, b, LIVE) is None
    assert policy.plan_revert(new, b, patch.old).apply_to(new) == text


def test_webkit_only_with_reneg_buffer_is_original_and_keeps_the_buffer():
    text = shape("target-reneg").replace("(windows|chrome|mozilla|safari|webkit)", "webkit")
    a = assess_text(text)
    assert (a.state, a.variant) == ("original", "webkit-only"), a.reason
    patch = policy.plan_apply(text, a, LIVE)
    assert "SSLRenegBufferSize 10000000" in patch.new and "webkit" not in patch.new
    new = patch.apply_to(text)
    assert policy.plan_revert(new, assess_text(new), patch.old).apply_to(new) == text


def test_comments_between_the_directives_are_kept_not_swallowed():
    text = shape("commented-ifelse")
    a = assess_text(text)
    assert (a.state, a.variant) == ("original", "plain-optional"), a.reason
    patch = policy.plan_apply(text, a, LIVE)
    new = patch.apply_to(text)
    for c in ("\t#<If ", "\t#\tSSLVerifyClient none\n", "\t#</If>\n", "\t#<Else>\n", "\t#</Else>\n"):
        assert new.count(c) == text.count(c) == 1, c
    assert new.index("#<Else>") < new.index(policy.BEGIN_MARK) < new.index("#</Else>") < new.index(policy.END_MARK)
    assert "SSLVerifyClient optional" not in new
    b = assess_text(new)
    assert b.state == "applied"
    assert policy.plan_revert(new, b, patch.old).apply_to(new) == text


def test_an_edit_of_the_kept_lines_makes_revert_refuse():
    text = shape("target-reneg")
    patch = policy.plan_apply(text, assess_text(text), LIVE, adopt=True)
    edited = patch.apply_to(text).replace(f"\t\tSSLRenegBufferSize 10000000\n\t</Location>\n\t{policy.END_MARK}",
                                          f"\t\tSSLRenegBufferSize 20000000\n\t</Location>\n\t{policy.END_MARK}")
    b = assess_text(edited)
    assert b.state == "applied"
    with pytest.raises(policy.PolicyError, match=r"cn-ssl\.conf:\d+-\d+: the managed block was edited by hand"):
        policy.plan_revert(edited, b, patch.old)


def test_a_directive_added_between_the_markers_is_refused():
    text = fixture("webkit-only")
    new = policy.plan_apply(text, assess_text(text), LIVE).apply_to(text)
    bad = new.replace(f"\t{policy.END_MARK}", f"\tSSLVerifyClient require\n\t{policy.END_MARK}")
    assert assess_text(bad).state == "unrecognised"


def test_migration_from_the_conffile_include_changes_one_line_and_revert_still_gives_the_original():
    text = fixture("webkit-only")
    a = assess_text(text)
    old_style = policy.plan_apply(text, a, policy.DEFAULT_SNIPPET)
    applied = old_style.apply_to(text)
    b = assess_text(applied)
    assert b.block.snippet == policy.DEFAULT_SNIPPET
    move = policy.plan_apply(applied, b, LIVE)
    assert (move.old, move.new) == (f"\tInclude {policy.DEFAULT_SNIPPET}\n", f"\tInclude {LIVE}\n")
    moved = move.apply_to(applied)
    assert policy.unified_diff("f", applied, moved).count("\n-\t") == 1
    c = assess_text(moved)
    assert c.block.snippet == LIVE and policy.plan_apply(moved, c, LIVE) is None
    assert policy.plan_revert(moved, c, old_style.old).apply_to(moved) == text


def test_legacy_managed_block_of_a_block_with_comments_still_reverts():
    """Older versions wrote only the Include (the comments went): revert still puts the original back."""
    text = shape("commented-ifelse")
    a = assess_text(text)
    legacy = policy.render_managed(a.block.indent, "\n", "\n", policy.DEFAULT_SNIPPET)
    applied = text[:a.block.start] + legacy + text[a.block.end:]
    b = assess_text(applied)
    assert policy.plan_revert(applied, b, text[a.block.start:a.block.end]).apply_to(applied) == text


# -- property: every shape x spelling x line ending keeps apply -> revert byte-identical ----

SHAPES = {
    "plain-optional": ("SSLVerifyClient optional", "SSLVerifyDepth 10"),
    "commented": ("#<If \"%{HTTP_USER_AGENT} =~ /AppleWebKit/\">", "#<Else>", "SSLVerifyClient optional", "#</Else>",
                  "SSLVerifyDepth 10"),
    "webkit-if-else": ('<If "%{HTTP_USER_AGENT} =~ /AppleWebKit/">', "SSLVerifyClient none", "</If>", "<Else>",
                       "# API clients", "SSLVerifyClient optional", "</Else>", "SSLVerifyDepth 10"),
    "webkit-only": ("SSLVerifyClient none", '<Location "/cn">', "SSLRenegBufferSize 10000000",
                    '<If " ! ( %{HTTP_USER_AGENT} =~ /webkit/i )">', "SSLVerifyClient optional", "</If>", "</Location>",
                    "SSLVerifyDepth 10"),
    "browser-list": ("SSLVerifyClient none", "<Location /cn>", '<If "! (%{HTTP_USER_AGENT} =~ /(windows|chrome|mozilla|safari|webkit)/i)">',
                     "SSLVerifyClient optional", "</If>", "Header set X-Api yes", "</Location>", "SSLVerifyDepth 10"),
}


@st.composite
def shaped(draw):
    name = draw(st.sampled_from(sorted(SHAPES)))
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    indent = draw(st.sampled_from(["\t", "  ", " \t", ""]))
    lines = []
    for ln in SHAPES[name]:
        if draw(st.booleans()):
            ln = re.sub(r"^(</?)?(SSLVerifyClient|SSLVerifyDepth|Location|If|Else|SSLRenegBufferSize)",
                        lambda m: (m.group(1) or "") + draw(st.sampled_from([m.group(2).upper(), m.group(2).lower()])),
                        ln, count=1)
        if draw(st.booleans()):
            ln = ln.replace('<Location "/cn">', "<Location '/cn'>").replace("<Location /cn>", '<Location "/cn/">')
        lines.append(indent + ln + draw(st.sampled_from(["", " ", "\t"])))
    block = eol.join(lines) + eol
    wrap = draw(st.booleans())
    if wrap:
        block = f"{indent}<IfModule mod_ssl.c>{eol}{block}{indent}</IfModule>{eol}"
    text = f"<VirtualHost *:443>{eol}\tSSLEngine on{eol}\t# Safari{eol}{block}\tSSLCertificateFile /x{eol}</VirtualHost>"
    if draw(st.booleans()):
        text += eol
    return name, text


@settings(max_examples=200, deadline=None)
@given(shaped())
def test_every_shape_applies_and_reverts_byte_identical(case):
    name, text = case
    a = assess_text(text)
    assert a.state in ("original", "superseded"), a.reason
    patch = policy.plan_apply(text, a, LIVE, adopt=True)
    new = patch.apply_to(text)
    assert new[:a.block.start] == text[:a.block.start] and new[a.block.start + len(patch.new):] == text[a.block.end:]
    for kept in ("#</Else>", "SSLRenegBufferSize", "Header set X-Api yes"):  # a comment inside <Else> goes with it
        assert new.lower().count(kept.lower()) == text.lower().count(kept.lower()), kept
    assert not re.search(r"sslverifyclient", new, re.I)
    b = assess_text(new)
    assert b.state == "applied" and policy.plan_apply(new, b, LIVE) is None, b.reason
    assert policy.plan_revert(new, b, patch.old).apply_to(new) == text
