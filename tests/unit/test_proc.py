"""proc.run: one timeout, one decoding, no exception for a program's own failure (real programs)."""

import os

from dataone_cn_sslverify import proc


def test_output_and_exit_status():
    r = proc.run(["sh", "-c", "printf 'out'; printf 'err' >&2; exit 3"], timeout=10)
    assert (r.returncode, r.stdout, r.stderr, r.ok, r.error) == (3, "out", "err", False, "")


def test_merged_output_keeps_the_order_written():
    r = proc.run(["sh", "-c", "echo one; echo two >&2; echo three"], timeout=10, merge_stderr=True)
    assert r.ok and r.stdout == "one\ntwo\nthree\n"


def test_bytes_that_are_not_utf8_are_replaced_or_kept_as_latin1():
    script = r"printf 'caf\351 \303\251'"
    assert proc.run(["sh", "-c", script], timeout=10).stdout == "caf\ufffd \u00e9"
    assert proc.run(["sh", "-c", script], timeout=10, encoding="latin-1").stdout == "caf\u00e9 \u00c3\u00a9"


def test_timeout_kills_and_says_so():
    r = proc.run(["sleep", "30"], timeout=0.2)
    assert r.returncode is None and r.timed_out and not r.ok
    assert r.error == "sleep 30: timed out after 0.2s"


def test_missing_program_is_a_result_not_an_exception(tmp_path):
    r = proc.run([str(tmp_path / "no-such-program")], timeout=10)
    assert r.returncode is None and not r.timed_out
    assert "could not run" in r.error and "no-such-program" in r.error


def test_not_executable_is_a_result_not_an_exception(tmp_path):
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\nexit 0\n")
    os.chmod(str(script), 0o644)
    r = proc.run([str(script)], timeout=10)
    assert r.returncode is None and "could not run" in r.error


def test_input_and_environment():
    r = proc.run(["sh", "-c", 'cat; printf "$X"'], timeout=10, input=b"in,", env={"X": "env", "PATH": "/usr/bin:/bin"})
    assert r.stdout == "in,env"


def test_stdin_is_empty_by_default():
    assert proc.run(["cat"], timeout=10).stdout == ""


def test_capture_false_discards_output():
    r = proc.run(["sh", "-c", "echo noise; echo more >&2"], timeout=10, capture=False)
    assert r.ok and r.stdout == "" and r.stderr == ""
