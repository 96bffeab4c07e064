"""apacheconf: lossless round trip, structure, errors with file:line."""

import glob
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataone_cn_sslverify import apacheconf as ac

FIXTURES = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "fixtures", "vhosts", "*.conf")))


def test_fixtures_exist():
    assert len(FIXTURES) >= 4


@pytest.mark.parametrize("path", FIXTURES, ids=os.path.basename)
@pytest.mark.parametrize("transform", ["as-is", "crlf", "no-final-newline", "latin1-comment"])
def test_fixture_round_trip(path, transform):
    data = open(path, "rb").read()
    if transform == "crlf":
        data = data.replace(b"\n", b"\r\n")
    elif transform == "no-final-newline":
        data = data.rstrip(b"\n")
    elif transform == "latin1-comment":
        data = b"# r\xe9sum\xe9 \xff\xfe\x80\n" + data
    tree = ac.parse(data, path)
    assert ac.render_bytes(tree) == data
    vhosts = list(ac.iter_sections(tree, "virtualhost"))
    assert len(vhosts) == 2


def test_structure_and_spans():
    data = b"<IfModule mod_ssl.c>\n\t<VirtualHost *:443>\n  sslengine On\n</VirtualHost>\n</IfModule>\n"
    tree = ac.parse(data, "t.conf")
    [ifm] = tree.sections("ifmodule")
    [vh] = ifm.sections("VIRTUALHOST")
    [d] = vh.directives("SSLEngine")
    assert (d.name, d.key, d.args) == ("sslengine", "sslengine", ["On"])
    assert vh.span.first_line == 2 and vh.span.last_line == 4
    assert data[d.span.start:d.span.end] == b"  sslengine On\n"
    assert vh.open.indent == "\t"


def test_continuation_lines_join_directives_and_comments():
    data = b"Header set X \\\n   \"a b\"\n# comment \\\nSSLVerifyClient optional\nA b\\\\\nB c\nC d \\ \nD e\n"
    tree = ac.parse(data, "t.conf")
    kinds = [(type(n).__name__, getattr(n, "name", None)) for n in tree.children]
    # the backslash-continued comment swallows the next line, exactly as Apache reads it
    assert kinds == [("Directive", "Header"), ("Comment", None), ("Directive", "A"), ("Directive", "B"),
                     ("Directive", "C"), ("Directive", "D")]
    assert tree.children[0].args == ["set", "X", "a b"]
    assert tree.children[1].span.first_line == 3 and tree.children[1].span.last_line == 4
    assert ac.render_bytes(tree) == data


def test_crlf_continuation():
    data = b"Header set X \\\r\n  y\r\n"
    tree = ac.parse(data)
    assert [n.args for n in tree.children] == [["set", "X", "y"]]


def test_tokenize_args_quotes():
    assert ac.tokenize_args('"/cn"') == ["/cn"]
    assert ac.tokenize_args("'a b' c \"d \\\" e\"") == ["a b", "c", 'd " e']
    assert ac.tokenize_args("  ") == []


@pytest.mark.parametrize("data,line,words", [
    (b"<Location /cn>\nA b\n", 1, "never closed"),
    (b"A b\n</Location>\n", 2, "without matching"),
    (b"<If \"x\">\n</Location>\n", 2, "closes <If> opened at line 1"),
    (b"\n<Location /x\n</Location>\n", 2, "lacks '>'"),
    (b"<VirtualHost *:443>\n<Location /a>\n</VirtualHost>\n", 3, "closes <Location>"),
])
def test_structural_errors_name_file_and_line(data, line, words):
    with pytest.raises(ac.ConfigSyntaxError) as ei:
        ac.parse(data, "/etc/apache2/sites-available/x.conf")
    assert str(ei.value).startswith(f"/etc/apache2/sites-available/x.conf:{line}: ")
    assert words in str(ei.value)
    assert ei.value.line == line


def test_splice_out_of_range():
    with pytest.raises(ValueError):
        ac.splice("abc", 2, 1, "x")
    assert ac.splice("abc", 1, 2, "XY") == "aXYc"


def test_dominant_ending():
    assert ac.dominant_ending("a\r\nb\r\nc\n") == "\r\n"
    assert ac.dominant_ending("a\nb\r\n") == "\n"


# -- property tests ---------------------------------------------------------

ALPHABET = st.sampled_from(list("<>/\\#\"' \t\r\nabcIfLocation") + ["\xff", "\x85", "\x0b", "\x0c", "\x1c"])


@settings(max_examples=400, deadline=None)
@given(st.lists(ALPHABET, max_size=200).map("".join))
def test_any_text_round_trips_or_fails_with_a_line(text):
    data = text.encode("latin-1")
    try:
        tree = ac.parse(data, "f.conf")
    except ac.ConfigSyntaxError as exc:
        assert 1 <= exc.line <= data.count(b"\n") + 1
        assert str(exc).startswith(f"f.conf:{exc.line}: ")
        return
    assert ac.render_bytes(tree) == data


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_without_angle_brackets_round_trip(data):
    data = data.replace(b"<", b"(").replace(b">", b")")
    assert ac.render_bytes(ac.parse(data)) == data


WS = st.sampled_from(["", " ", "\t", " \t", "\t ", "    "])
EOL = st.sampled_from(["\n", "\r\n"])
NAME = st.sampled_from(["SSLVerifyClient", "sslverifydepth", "Header", "Include", "AcceptPathInfo"])
ARG = st.sampled_from(["optional", "10", '"/cn"', "'a b'", "set X \"y\"", "On"])
SECTION = st.sampled_from(["Location", "If", "IfModule", "LocationMatch", "Else", "VirtualHost"])


@st.composite
def config(draw, depth=0):
    """A structurally valid config with mixed whitespace, endings, comments, blank lines."""
    parts = []
    counts = {"sections": 0, "directives": 0}
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["directive", "comment", "blank", "section"] if depth < 3 else ["directive", "comment", "blank"]))
        ind, eol = draw(WS), draw(EOL)
        if kind == "directive":
            parts.append(f"{ind}{draw(NAME)} {draw(ARG)}{draw(WS)}{eol}")
            counts["directives"] += 1
        elif kind == "comment":
            parts.append(f"{ind}# {draw(ARG)} \xe9{eol}")
        elif kind == "blank":
            parts.append(f"{ind}{eol}")
        else:
            name = draw(SECTION)
            body, sub = draw(config(depth=depth + 1))
            arg = "" if name == "Else" else " " + draw(ARG)
            parts.append(f"{ind}<{name}{arg}>{eol}{body}{draw(WS)}</{name.lower() if draw(st.booleans()) else name}>{draw(EOL)}")
            counts["sections"] += 1 + sub["sections"]
            counts["directives"] += sub["directives"]
    return "".join(parts), counts


@settings(max_examples=300, deadline=None)
@given(config(), st.booleans())
def test_valid_configs_round_trip_and_keep_structure(generated, strip_final_newline):
    text, counts = generated
    if strip_final_newline:
        text = text.rstrip("\r\n")
    data = text.encode("latin-1")
    tree = ac.parse(data, "gen.conf")
    assert ac.render_bytes(tree) == data
    nodes = list(tree.walk())
    assert sum(isinstance(n, ac.Section) for n in nodes) == counts["sections"]
    assert sum(isinstance(n, ac.Directive) for n in nodes) == counts["directives"]
    for n in nodes:  # every span indexes the node's own text
        assert text[n.span.start:n.span.end] == n.render()
