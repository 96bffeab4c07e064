"""Entry points of the Debian maintainer scripts (``dataone-cn-sslverify maintscript ...``).

The shell scripts in ``debian/`` stay a few lines: they call::

    dataone-cn-sslverify maintscript SCRIPT ACTION [ARGS...]

with dpkg's own arguments (``postinst configure 0.2.0``, ``postinst
triggered "/usr/share/dataone-cn-os-core/debian/cn-ssl.conf"``, ``prerm
remove``). ``postrm`` is plain ``sh`` (it runs after these modules are gone)
and is not handled here.

Like ``apache2-maintscript-helper``, each function below documents its
parameters, its return value (the script's exit status) and its behaviour.
The rules, from docs/design.md "Package lifecycle" and Debian Policy:

* The administrator decides. A ``revert`` by hand is an opt-out
  (`optout`): configure (upgrade, ``--reinstall``, ``dpkg-reconfigure``) and
  the triggers leave such a host alone and say so in one line.
* Never edit a conffile of another package (Policy 10.7.3): such a vhost is
  left alone with a note; the operator may run the command by hand.
* Service actions go through ``invoke-rc.d`` (Policy 9.3.3), which asks
  ``policy-rc.d``: when it denies the reload (chroots, image builds,
  piuparts), the change is written and config-tested, and the script says
  when it takes effect. A stopped Apache is never started. Rollback and
  recovery inside a maintainer script take the same path
  (`apachectl.MAINTAINER`).
* Only our own failure fails a script: exit 1 when our change was tried and
  had to be rolled back (or could not be), decided from the outcome's exit
  code (`errors.ExitCode`). Anything else -- a configuration already broken
  by someone else, no CN vhost yet, a block we do not recognise, several
  candidate vhosts, a held lock -- is reported and the script succeeds, so
  that an upgrade or a removal of other packages is never held up by it.

Every step of a transaction prints one line on stderr (as the command does);
notes are prefixed with ``dataone-cn-sslverify:``.
"""

import os
import sys
import traceback
from typing import List, Optional, Sequence, Tuple

from . import apacheconf as ac
from . import apachectl, hoststate, locate, optout, paths, policy, proc, transaction
from .errors import ExitCode, SslVerifyError
from .store import ChangedMeanwhile, LockTimeout, Store, cas_write

PACKAGE = "dataone-cn-sslverify"
OS_CORE = "dataone-cn-os-core"
#: An explicit trigger of ours (debian/dataone-cn-sslverify.triggers), activated by
#: our own postinst when dataone-cn-os-core is configured later in the same run.
REAPPLY_TRIGGER = "dataone-cn-sslverify-reapply"
#: Outcomes that are our own failure: our change was tried and rolled back, or could not be.
OUR_FAILURE = (ExitCode.FAILED, ExitCode.UNRESTORED)
SERVICE = apachectl.MAINTAINER


def note(text: str) -> None:
    """One line on stderr, where dpkg and apt show a maintainer script's output."""
    print(f"{PACKAGE}: {text}", file=sys.stderr, flush=True)


def _report(step: transaction.Step) -> None:
    print(f"{step.name}: {'' if step.ok else 'FAILED: '}{step.detail}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------
# Facts about the system
# ----------------------------------------------------------------------------


def conffile_owner(path: str) -> Optional[str]:
    """The package (other than ours) that has path as a dpkg conffile, or None.

    Parameters: path, a file as the maintainer scripts would edit it; its real
    path (symlinks resolved) is checked as well.
    Returns: the owning package's name, or None when no other package lists
    the file among its conffiles (also when dpkg-query is not available).
    Behaviour: ``dpkg-query -S`` finds the packages that own the file, then
    ``dpkg-query -W -f '${Conffiles}'`` says whether it is a conffile of one
    of them (obsolete conffiles count: dpkg still tracks them). A file that
    another package's postinst copied into place (dataone-cn-os-core's
    ``sites-available/cn-ssl.conf``) is owned by no package and is fair game.
    """
    candidates = []
    for p in (os.path.abspath(path), os.path.realpath(path)):
        if p not in candidates:
            candidates.append(p)
    for p in candidates:
        owners = proc.run(["dpkg-query", "-S", p], env=apachectl.environment(), timeout=120)
        if owners.returncode is None:
            return None
        if owners.returncode != 0:
            continue
        for line in owners.stdout.splitlines():
            if line.startswith(("diversion by", "local diversion")):
                continue
            pkgs, sep, owned = line.partition(": ")
            if not sep or owned.strip() != p:
                continue
            for pkg in (x.strip() for x in pkgs.split(",")):
                if not pkg or pkg.split(":")[0] == PACKAGE:
                    continue
                q = proc.run(["dpkg-query", "-W", "-f", "${Conffiles}\n", pkg], env=apachectl.environment(),
                             timeout=120)
                for cl in q.stdout.splitlines():
                    fields = cl.split()
                    if fields and fields[0] == p:
                        return pkg
    return None


def package_state(package: str) -> str:
    """dpkg's state of package ("installed", "unpacked", "half-configured", ...), or "" if unknown."""
    p = proc.run(["dpkg-query", "-W", "-f", "${Status}", package], env=apachectl.environment(), timeout=120)
    words = p.stdout.split()
    return words[-1] if p.ok and len(words) == 3 else ""


def reapply_after_os_core(event: str) -> None:
    """Make dpkg run ``postinst triggered`` once dataone-cn-os-core has been configured, if it is still to be.

    Parameters: event, for the message.
    Returns: nothing; a failure to activate is a note (the operator can run
    ``dataone-cn-sslverify apply``).
    Behaviour: when both packages are installed or upgraded in one apt run,
    dpkg may configure us first. dataone-cn-os-core's postinst then writes the
    vhost afterwards, and no file trigger of ours fires for it: on a first
    install we were not yet interested when its template was unpacked, and on
    an upgrade our configure discards the trigger its unpack activated. So
    when dataone-cn-os-core is unpacked but not configured (``unpacked`` or
    ``half-configured``), activate our explicit trigger ``REAPPLY_TRIGGER``
    (``dpkg-trigger --no-await``); dpkg processes it after the packages of
    the run are configured. Only ``postinst configure`` calls this, never
    ``postinst triggered``, so the trigger cannot loop.
    """
    state = package_state(OS_CORE)
    if state not in ("unpacked", "half-configured"):
        return
    p = proc.run(["dpkg-trigger", "--no-await", REAPPLY_TRIGGER], env=apachectl.environment(), merge_stderr=True,
                 timeout=120)
    ok, said = p.ok, (p.error or p.stdout).strip()
    if ok:
        note(f"{event}: {OS_CORE} is {state}, not configured yet: the policy is applied again after it is "
             f"(trigger {REAPPLY_TRIGGER}).")
    else:
        note(f"{event}: {OS_CORE} is {state}; could not activate the trigger {REAPPLY_TRIGGER} ({said}): "
             f"run `{PACKAGE} apply` once it is configured.")


def _locate() -> Tuple[Optional[policy.Assessment], str]:
    """The CN vhost Apache loads, or (None, why not) when there is none or it is ambiguous."""
    try:
        loc = locate.locate(None, paths.policy_path())
        return locate.choose(loc), ""
    except locate.NotFound as exc:
        return None, f"no CN SSL vhost found ({exc})"
    except policy.PolicyError as exc:
        return None, str(exc)
    except (ac.ConfigSyntaxError, OSError) as exc:
        return None, f"could not read the Apache configuration: {exc}"


# ----------------------------------------------------------------------------
# postinst
# ----------------------------------------------------------------------------


def apply_policy(event: str) -> int:
    """Put the policy in place on the CN SSL vhost Apache loads, from a maintainer script.

    Parameters: event, the words of the dpkg event for the messages
    (``postinst configure``, ``postinst triggered``).
    Returns: the maintainer script's exit status: 1 only when the apply was
    tried and rolled back (or could not be rolled back), else 0.
    Behaviour:

    * the administrator opted out (``revert`` by hand): one line, exit 0;
    * no CN SSL vhost (dataone-cn-os-core not installed yet), several
      candidate vhosts, or a vhost our parser cannot read: a note, exit 0 (the
      trigger or the operator, with ``--vhost``, does it later);
    * the vhost is a conffile of another package: refused with a note, exit 0;
    * the policy snippet (our own conffile, possibly edited by the operator)
      is missing or not the target shape: nothing changed, a note, exit 0;
    * otherwise the ``apply`` transaction (backup, patch, configtest, reload
      through invoke-rc.d, live check, rollback). ``changed`` and
      ``unchanged`` are success; a refusal (the configuration was already
      broken by someone else: the file and line are named; a block we do not
      recognise; the lock is held) changed nothing: a note, exit 0; a
      rollback is our failure: exit 1, and ``dpkg --configure -a`` retries;
    * the snippet is a conffile of ours: when the vhost already includes it
      but its bytes differ from those Apache last loaded (an upgrade shipped a
      new one, or the operator edited it), the transaction makes it live
      (config test, reload, live check, rollback); when they are the same,
      nothing is reloaded.
    """
    opted = optout.read(paths.state_dir())
    if opted is not None:
        note(f"{event}: {opted.describe()}: left alone; `{PACKAGE} apply` manages it again.")
        return ExitCode.OK
    snippet = paths.policy_path()
    a, why = _locate()
    if a is None:
        note(f"{event}: {why}; nothing changed. The policy is applied when the vhost appears "
             f"(dataone-cn-os-core's trigger) or by `{PACKAGE} [--vhost FILE] apply`.")
        return ExitCode.OK
    owner = conffile_owner(a.filename)
    if owner is not None:
        note(f"{event}: {a.filename} is a conffile of the package {owner}: maintainer scripts must not edit it "
             f"(Debian Policy 10.7.3); nothing changed. To apply the policy there anyway, run by hand: "
             f"{PACKAGE} --vhost {a.filename} apply")
        return ExitCode.OK
    if a.state == "superseded":
        note(f"{event}: {a.filename}:{a.line} already carries the target policy inline (superseded); nothing to do.")
        return ExitCode.OK
    try:
        transaction.check_snippet(snippet)
    except (policy.PolicyError, ac.ConfigSyntaxError) as exc:
        note(f"{event}: the policy snippet cannot be used: {exc}. Nothing was done. {snippet} is a conffile of "
             f"this package: fix it (or restore the packaged version), then run `{PACKAGE} apply`.")
        return ExitCode.OK
    note(f"{event}: applying the client-certificate policy to {a.filename} ({a.state_label})")
    t = transaction.Transaction("apply", vhost=a.filename, do_probe=True, report=_report, service=SERVICE)
    out = t.run()
    print(f"apply: {out.result}: {out.message}", file=sys.stderr, flush=True)
    return _verdict(event, out, f"Fix the cause, then run `dpkg --configure -a` (or `{PACKAGE} apply`).")


def _verdict(event: str, out: transaction.Outcome, retry: str) -> int:
    """The script's exit status for a transaction's outcome, with the one line that explains it."""
    code = ExitCode(out.exit_code)
    if code in OUR_FAILURE:
        note(f"{event}: FAILED: {out.message}")
        if code != ExitCode.UNRESTORED:
            note(f"{event}: the previous configuration is in place. {retry}")
        return ExitCode.FAILED
    if code != ExitCode.OK:
        note(f"{event}: nothing was done: {_not_ours(out)}")
    return ExitCode.OK


def _not_ours(out: transaction.Outcome) -> str:
    """What stopped a transaction that changed nothing, naming FILE:LINE when Apache's words name one."""
    return hoststate.broken_line(out.message) if hoststate.broken_at(out.message) else out.message


def postinst_configure(old_version: Optional[str] = None) -> int:
    """``postinst configure [OLD-VERSION]``: first install, upgrade, reconfigure, retry.

    Parameters: old_version, the previously configured version ('' or None
    on a first install).
    Returns: the exit status of `apply_policy`.
    Behaviour: `apply_policy`. On an upgrade nothing is written when the vhost
    already holds our managed block (the transaction says ``unchanged``), and
    Apache is reloaded only when the snippet's bytes changed. A retry by
    ``dpkg --configure -a`` after a failure first recovers any interrupted
    run from the journal, then applies again. Then `reapply_after_os_core`:
    if dataone-cn-os-core is configured later in this run, apply again after.
    """
    event = "postinst configure" + (f" (upgrade from {old_version})" if old_version else "")
    code = apply_policy(event)
    reapply_after_os_core(event)
    return code


def postinst_triggered(triggers: Sequence[str]) -> int:
    """``postinst triggered TRIGGER...``: dataone-cn-os-core installed a new vhost template.

    Parameters: triggers, the trigger names dpkg passes (one space-separated
    argument): the template's path (our file trigger) and/or
    ``REAPPLY_TRIGGER`` (see `reapply_after_os_core`).
    Returns: the exit status of `apply_policy`.
    Behaviour: dpkg runs this after dataone-cn-os-core's postinst has copied
    the new template over ``sites-available/cn-ssl.conf`` (dropping our
    Include); `apply_policy` puts the policy back in the same apt run. A new
    vhost that carries the target inline (``superseded``) is left alone.
    """
    names = " ".join(triggers).split()
    return apply_policy("postinst triggered" + (f" ({', '.join(names)})" if names else ""))


# ----------------------------------------------------------------------------
# prerm
# ----------------------------------------------------------------------------


def prerm_remove() -> int:
    """``prerm remove``: put the original block back while the Python modules still exist.

    Returns: 0, always unless our own revert was tried and could not put the
    previous configuration back (then 1: a person must look, the message says
    what to run). A removal is never blocked by someone else's fault.
    Behaviour: every SSL vhost Apache loads that holds our managed block is
    reverted with the ``revert`` transaction (restore the saved block,
    configtest, reload through invoke-rc.d, live check, rollback on failure).
    When that refuses or fails -- the configuration is broken by another file,
    policy-rc.d denies the reload, the live check fails -- the original
    block is still written back to disk without a reload (`_put_back`), so
    that purge can never leave an Include of a deleted snippet behind; the
    script says that Apache loads it at its next reload and exits 0. A vhost
    that is a conffile of another package is never edited from here: the
    operator reverts it by hand (they applied it by hand too).
    """
    try:
        loc = locate.locate(None, paths.policy_path())
        applied = [a for a in loc.assessments if a.state == "applied"]
    except (ac.ConfigSyntaxError, OSError) as exc:
        note(f"prerm remove: could not read the Apache configuration ({exc}); nothing was reverted. If a vhost "
             f"still includes {paths.policy_path()}, put its original block back by hand before purging "
             f"({paths.state_dir()}/blocks/ holds it).")
        return ExitCode.OK
    if not applied:
        note("prerm remove: no vhost includes the policy snippet; nothing to revert.")
        return ExitCode.OK
    code = ExitCode.OK
    for a in applied:
        owner = conffile_owner(a.filename)
        if owner is not None:
            note(f"prerm remove: {a.filename} is a conffile of {owner} and is not edited from a maintainer script; "
                 f"run `{PACKAGE} --vhost {a.filename} revert` by hand before purging")
            continue
        note(f"prerm remove: reverting {a.filename}")
        out = transaction.Transaction("revert", vhost=a.filename, do_probe=True, report=_report,
                                      service=SERVICE).run()
        print(f"revert: {out.result}: {out.message}", file=sys.stderr, flush=True)
        if ExitCode(out.exit_code) == ExitCode.OK:
            continue
        if ExitCode(out.exit_code) == ExitCode.UNRESTORED:
            note(f"prerm remove: FAILED: {out.message}")
            code = ExitCode.FAILED
            continue
        # Refused (someone else's broken configuration) or rolled back: the block goes back on disk anyway.
        _put_back(a.filename, _not_ours(out) if ExitCode(out.exit_code) != ExitCode.FAILED else out.message)
    return code


def _put_back(vhost: str, why: str) -> int:
    """Write the original block back to disk, without a config test or reload; always returns 0.

    The removal's way out when the revert transaction could not finish for a
    reason that is not ours (the configuration was already broken elsewhere,
    or the reload or live check failed and was rolled back): the same plan as
    ``revert`` (`policy.plan_revert` with the saved block), a backup first,
    the bytes compared right before the atomic write. Apache keeps running
    what it loaded; it loads the original block at its next reload or start,
    and purge cannot leave an Include of a deleted snippet behind.
    """
    store = Store(paths.state_dir())
    try:
        store.lock("prerm remove", transaction.LOCK_TIMEOUT)
    except (LockTimeout, OSError) as exc:
        return _not_put_back(vhost, f"lock: {exc}")
    try:
        loc = locate.locate(vhost, paths.policy_path())
        a = locate.choose(loc)
        before = loc.file_of(a).data
        saved = store.load_block(a.filename)
        if saved is None or not isinstance(saved.get("block"), str):
            return _not_put_back(vhost, f"no saved original block in {store.blocks_dir}")
        text = ac.decode(before)
        patch = policy.plan_revert(text, a, saved["block"])
        if patch is not None:
            new = ac.encode(patch.apply_to(text))
            backup = store.backup(a.filename, before, "revert")
            try:
                cas_write(a.filename, new, before)  # only over the bytes the plan was made from
            except ChangedMeanwhile:
                return _not_put_back(vhost, f"{a.filename} changed while we worked; backup {backup.id} kept")
            print(f"write: {a.filename} ({len(new)} bytes, atomic; backup {backup.id})", file=sys.stderr, flush=True)
        store.drop_block(a.filename)
    except (locate.NotFound, policy.PolicyError, ac.ConfigSyntaxError, OSError, ValueError, SslVerifyError) as exc:
        return _not_put_back(vhost, str(exc))
    finally:
        store.unlock()
    note(f"prerm remove: the original block of {vhost} is back on disk; Apache was not reloaded ({why}): it "
         "loads the original block at its next reload or start.")
    return ExitCode.OK


def _not_put_back(vhost: str, why: str) -> int:
    note(f"prerm remove: could not put the original block of {vhost} back ({why}); the removal goes on. "
         f"Revert it by hand before purging: {paths.state_dir()}/blocks/ holds the original block.")
    return ExitCode.OK


# ----------------------------------------------------------------------------
# dispatch
# ----------------------------------------------------------------------------


def main(argv: Optional[List[str]] = None) -> int:
    """``maint SCRIPT ACTION [ARGS...]`` with dpkg's arguments; returns the exit status.

    Handled: ``postinst configure [OLD]``, ``postinst triggered NAMES``,
    ``prerm remove``. Other actions dpkg may pass (``postinst abort-*``,
    ``prerm upgrade|deconfigure|failed-upgrade``) need nothing from us and
    return 0. An unknown script or a missing action is a usage error (2).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2:
        print(f"usage: {PACKAGE} maintscript postinst|prerm ACTION [ARGS...]", file=sys.stderr)
        return 2
    try:
        return _dispatch(args[0], args[1], args[2:])
    except Exception:  # a bug: say so, and never leave a half-done change behind a failing script
        traceback.print_exc()
        note(f"{' '.join(args[:2])}: internal error (above); putting back any change it left half done")
        _recover_now()
        return ExitCode.FAILED


def _recover_now() -> None:
    """After an unexpected exception: let `transaction.recover` restore the vhost from the journal."""
    try:
        store = Store(paths.state_dir())
        if store.read_journal() is None:
            return
        store.lock("maint recover", transaction.LOCK_TIMEOUT)
        try:
            transaction.recover(store, lambda name, ok, detail: print(f"{name}: {detail}", file=sys.stderr), SERVICE)
        finally:
            store.unlock()
    except Exception as exc:  # noqa: BLE001 - last resort: report, the next run recovers from the journal
        note(f"recovery failed too ({exc}); the next run of `{PACKAGE}` recovers from the journal")


def _dispatch(script: str, action: str, rest: List[str]) -> int:
    if script == "postinst":
        if action == "configure":
            return postinst_configure(rest[0] if rest else None)
        if action == "triggered":
            return postinst_triggered(rest)
        return ExitCode.OK
    if script == "prerm":
        if action == "remove":
            return prerm_remove()
        return ExitCode.OK
    print(f"maint: unknown maintainer script {script!r} (postrm is plain sh)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
