"""display: commands survive a shell exactly, config text cannot drive the terminal."""

import shlex
import subprocess

from hypothesis import given, settings, strategies as st

from dataone_cn_sslverify import display


# Words as the tool meets them: text decoded from file names and config bytes with
# surrogateescape, so undecodable bytes appear as U+DC80..U+DCFF; other lone surrogates
# cannot come from bytes and cannot be passed to a process at all.
_WORD_CHARS = st.one_of(
    st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
    st.integers(0x80, 0xFF).map(lambda b: chr(0xDC00 + b)),
)


@given(st.lists(st.text(alphabet=_WORD_CHARS, min_size=0, max_size=20), min_size=1, max_size=4))
@settings(max_examples=60, deadline=None)
def test_command_is_read_back_by_bash_as_the_same_words(argv):
    line = display.command(argv)
    out = subprocess.run(["bash", "-c", "set -- " + line + '; for a in "$@"; do printf "%s\\0" "$a"; done'],
                         stdout=subprocess.PIPE, check=True).stdout
    assert out.split(b"\0")[:-1] == [a.encode("utf-8", "surrogateescape") for a in argv]
    assert "\x1b" not in line and "\n" not in line


def test_shell_metacharacters_in_a_file_name_stay_one_word():
    line = display.command(["cp", "-p", "/b/ID", "/etc/apache2/sites-available/cn ssl;touch X.conf"])
    assert shlex.split(line) == ["cp", "-p", "/b/ID", "/etc/apache2/sites-available/cn ssl;touch X.conf"]


def test_escape_controls_and_show_utf8():
    assert display.escape("a\x1b]0;x\x07b") == "a\\e]0;x\\x07b"
    assert display.escape("caf\xe2\x80\x99e") == "caf\u2019e"  # UTF-8 read byte for byte
    assert display.escape("\x92") == "\\x92"
    assert display.escape("\u202eevil") == "\\u202eevil"
    assert display.escape("a\nb", keep_newlines=True) == "a\nb" and display.escape("a\nb") == "a\\nb"


def test_show_bytes_points_at_the_character():
    data = "ServerName caf\u2019e\n".encode()
    text, caret = display.show_bytes(data, data.index(b"\xe2")).split("\n")
    assert text == "ServerName caf\u2019e" and caret.index("^") == text.index("\u2019")
    assert display.char_at(data, data.index(b"\xe2")).startswith("'\u2019' (U+2019, bytes e2 80 99)")
    assert display.char_at(b"\x92", 0) == "byte 0x92 (not UTF-8)"


def test_undecodable_file_name_bytes_are_pasted_back_exactly():
    name = b"/etc/apache2/sites-available/cn\x92\x1b.conf".decode("utf-8", "surrogateescape")
    line = display.command(["cat", name])
    out = subprocess.run(["bash", "-c", "set -- " + line + '; printf "%s" "$2"'], stdout=subprocess.PIPE,
                         check=True).stdout
    assert out == b"/etc/apache2/sites-available/cn\x92\x1b.conf"
    assert display.escape(name) == "/etc/apache2/sites-available/cn\\x92\\e.conf"
