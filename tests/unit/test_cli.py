"""The command line as people type it: options before or after the command, one exit-code mapping.

The README forms are read from README.md itself, so a form the README shows
and the parser rejects fails here (their runs against a real Apache are in
tests/integration/test_readme.py).
"""

import json
import socket
from pathlib import Path
from typing import List

import pytest

from dataone_cn_sslverify import apacheconf, cli, clients, errors, locate, policy
from harness.readme import readme_forms

README_FORMS = readme_forms()
GLOBAL_OPTIONS = ("--vhost", "--json", "--verbose")


@pytest.fixture(autouse=True)
def _private_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """main() recovers from the state dir first: point it at an empty one."""
    monkeypatch.setenv("DATAONE_CN_SSLVERIFY_STATE_DIR", str(tmp_path / "state"))


def test_the_readme_shows_commands():
    commands = {argv[0] for _, argv in README_FORMS if argv}
    assert {"status", "diff", "apply", "revert", "probe", "check", "backups", "restore"} <= commands


@pytest.mark.parametrize("where,argv", README_FORMS, ids=["%s:%s" % (w, " ".join(a)) for w, a in README_FORMS])
def test_every_readme_form_parses(where: str, argv: List[str]):
    try:
        args = cli.build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail("%s: `dataone-cn-sslverify %s` is rejected (exit %s)" % (where, " ".join(argv), exc.code))
    assert args.command in cli.COMMANDS


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_each_command_help_lists_the_global_options(command: str, capsys: pytest.CaptureFixture):
    assert cli.main([command, "--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: dataone-cn-sslverify %s" % command)
    for opt in GLOBAL_OPTIONS:
        assert opt in text, "%s --help does not list %s" % (command, opt)


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_global_options_after_the_command(command: str):
    extra = ["ID"] if command == "restore" else []
    after = cli.build_parser().parse_args([command] + extra + ["--json", "--vhost", "F", "-v"])
    before = cli.build_parser().parse_args(["--json", "--vhost", "F", "-v", command] + extra)
    neither = cli.build_parser().parse_args([command] + extra)
    assert (after.json, after.vhost, after.verbose) == (True, "F", True)
    assert (before.json, before.vhost, before.verbose) == (True, "F", True), "a value before the command was reset"
    assert (neither.json, neither.vhost, neither.verbose) == (False, None, False)


def test_after_the_command_wins_over_before():
    assert cli.build_parser().parse_args(["--vhost", "A", "apply", "--vhost", "B"]).vhost == "B"


def test_command_options_stay_with_their_command():
    assert cli.main(["status", "--no-reload"]) == 2
    assert cli.main(["--no-reload", "apply"]) == 2


def test_usage_error_exits_2_and_help_0(capsys: pytest.CaptureFixture):
    assert cli.main(["frobnicate"]) == errors.ExitCode.REFUSED
    assert cli.main(["--help"]) == 0
    assert "6 the server could not be reached" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("exc,code", [
    (policy.PolicyError("x"), errors.ExitCode.REFUSED),
    (apacheconf.ConfigSyntaxError("f.conf", 3, "bad"), errors.ExitCode.REFUSED),
    (locate.NotFound("none"), errors.ExitCode.NOT_FOUND),
    (errors.Unreachable("down"), errors.ExitCode.UNREACHABLE),
    (errors.Unrestored("do this"), errors.ExitCode.UNRESTORED),
    (errors.SslVerifyError("x", errors.ExitCode.HAZARD), errors.ExitCode.HAZARD),
    (FileNotFoundError(2, "gone"), errors.ExitCode.REFUSED),
    (KeyError("no backup"), errors.ExitCode.REFUSED),
    (RuntimeError("bug"), None),
    (ZeroDivisionError(), None),
])
def test_one_mapping_from_exceptions_to_exit_codes(exc: Exception, code):
    assert cli.exit_code_of(exc) == code


def _raise(exc: Exception):
    def command(args, out):
        raise exc
    return command


def test_a_typed_error_exits_with_its_code_and_one_json_document(monkeypatch, capsys):
    monkeypatch.setitem(cli.COMMANDS, "backups", _raise(errors.Unreachable("cannot reach 127.0.0.1:1")))
    assert cli.main(["backups", "--json"]) == 6
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"result": "unreachable", "error": "cannot reach 127.0.0.1:1"}
    assert "unreachable: cannot reach 127.0.0.1:1" in captured.err


def test_an_unexpected_error_with_no_change_under_way_says_nothing_changed(monkeypatch, capsys):
    monkeypatch.setitem(cli.COMMANDS, "backups", _raise(ZeroDivisionError("boom")))
    assert cli.main(["backups"]) == errors.ExitCode.REFUSED
    err = capsys.readouterr().err
    assert "internal error: ZeroDivisionError: boom" in err and "nothing was changed" in err


def test_an_unexpected_error_during_a_change_exits_unrestored(monkeypatch, capsys, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "journal.json").write_text("{}")
    monkeypatch.setitem(cli.COMMANDS, "apply", _raise(ZeroDivisionError("boom")))
    assert cli.main(["apply"]) == errors.ExitCode.UNRESTORED
    assert "a change was under way" in capsys.readouterr().err


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_probe_that_cannot_reach_the_server_exits_6(capsys):
    name = clients.matrix_profiles()[0].name
    code = cli.main(["probe", "--connect", "127.0.0.1:%d" % _closed_port(), "--servername", "cn.example",
                     "--profile", name, "--timeout", "2"])
    assert code == errors.ExitCode.UNREACHABLE, capsys.readouterr()


def test_probe_unknown_profile_is_refused_naming_it(capsys):
    code = cli.main(["probe", "--json", "--connect", "127.0.0.1:1", "--profile", "no-such-row"])
    assert code == errors.ExitCode.REFUSED
    assert json.loads(capsys.readouterr().out)["error"] == "--profile no-such-row: no such profile"


def test_missing_vhost_file_is_refused(tmp_path, capsys):
    assert cli.main(["diff", "--vhost", str(tmp_path / "nope.conf")]) == errors.ExitCode.REFUSED
    assert "nope.conf" in capsys.readouterr().err


REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("code", list(errors.ExitCode))
def test_every_exit_code_is_documented_in_readme_man_page_and_help(code: errors.ExitCode):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    page = (REPO / "man" / "dataone-cn-sslverify.8").read_text(encoding="utf-8")
    assert "\n| %d | " % code in readme, "README exit-code table lacks %d" % code
    assert "\n.B %d\n" % code in page, "man page EXIT STATUS lacks %d" % code
    assert " %d " % code in cli.build_parser().epilog


def test_the_package_docstring_lists_every_module():
    import dataone_cn_sslverify as pkg
    modules = sorted(p.stem for p in Path(pkg.__file__).parent.glob("*.py") if not p.stem.startswith("_"))
    listed = {line.split()[0] for line in pkg.__doc__.splitlines() if line.startswith("    ") and line.split()}
    missing = [m for m in modules if m not in listed]
    stale = sorted(listed - set(modules))
    assert not missing, "dataone_cn_sslverify/__init__.py does not list %s" % missing
    assert not stale, "dataone_cn_sslverify/__init__.py lists modules that do not exist: %s" % stale


def test_every_man_page_example_parses():
    page = (REPO / "man" / "dataone-cn-sslverify.8").read_text(encoding="utf-8").replace("\\-", "-")
    examples = page[page.index(".SH EXAMPLES"):page.index(".SH SEE ALSO")]
    lines = [ln.split()[1:] for ln in examples.splitlines() if ln.startswith("dataone-cn-sslverify ")]
    assert len(lines) >= 5
    for argv in lines:
        assert cli.build_parser().parse_args(argv).command == argv[0]
