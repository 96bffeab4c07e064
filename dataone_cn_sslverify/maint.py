"""Entry points of the Debian maintainer scripts (``python3 -m dataone_cn_sslverify.maint``).

The shell scripts in ``debian/`` stay a few lines: they call::

    /usr/bin/python3 -I -B -m dataone_cn_sslverify.maint SCRIPT ACTION [ARGS...]

with dpkg's own arguments (``postinst configure 0.1.0-1``, ``postinst
triggered "/usr/share/dataone-cn-os-core/debian/cn-ssl.conf"``, ``prerm
remove``). ``postrm`` is plain ``sh`` (it runs after these modules are gone)
and is not handled here.

Like ``apache2-maintscript-helper``, each function below documents its
parameters, its return value (the script's exit status) and its behaviour.
The rules, from docs/design.md "Package lifecycle" and Debian Policy:

* Never edit a conffile of another package (Policy 10.7.3): such a vhost is
  left alone with a note; the operator may run the command by hand.
* Service actions go through Debian's policy layer: when ``policy-rc.d``
  forbids a reload of apache2 (chroots, image builds, piuparts), the change
  is written and config-tested but Apache is not reloaded; a stopped Apache is
  never started. Either way the script succeeds and says when the change
  takes effect.
* A failure that left the previous configuration in place makes the script
  fail, so that apt reports it and ``dpkg --configure -a`` retries; a
  situation only the operator can resolve (no CN vhost yet, a block we do not
  recognise, several candidate vhosts) is a note and success, so that an
  upgrade of the whole system is not held up by it.

Every step of a transaction prints one line on stderr (as the command does);
notes are prefixed with ``dataone-cn-sslverify:``.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import List, Optional, Sequence, Tuple

from . import apacheconf as ac
from . import apachectl, locate, paths, policy, proc, transaction
from .errors import ExitCode
from .store import Store

PACKAGE = "dataone-cn-sslverify"
OS_CORE = "dataone-cn-os-core"
#: An explicit trigger of ours (debian/dataone-cn-sslverify.triggers), activated by
#: our own postinst when dataone-cn-os-core is configured later in the same run.
REAPPLY_TRIGGER = "dataone-cn-sslverify-reapply"
FORCE_REMOVE_ENV = "DATAONE_CN_SSLVERIFY_FORCE_REMOVE"
EXIT_OK, EXIT_FAIL = 0, 1


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


def reload_permission() -> Tuple[bool, str]:
    """May we reload apache2 from a maintainer script now?  See `apachectl.service_action_allowed`."""
    return apachectl.service_action_allowed("reload", "apache2")


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
    Returns: the maintainer script's exit status: 0, or 1 when the policy could
    not be applied for a reason that a retry after a fix resolves (the apply
    was rolled back, Apache's configuration already fails its config test,
    another run holds the lock).
    Behaviour:

    * no CN SSL vhost (dataone-cn-os-core not installed yet), several
      candidate vhosts, or a vhost our parser cannot read: a note, exit 0 (the
      trigger or the operator, with ``--vhost``, does it later);
    * the vhost is a conffile of another package: refused with a note, exit 0;
    * the policy snippet (our own conffile, possibly edited by the operator)
      is missing or not the target shape: nothing changed, exit 1 (the
      operator fixes it and runs ``dpkg --configure -a``);
    * otherwise the ``apply`` transaction (backup, patch, configtest, graceful
      reload, live probe, rollback). The reload is skipped, with a note, when
      policy-rc.d forbids it or Apache is stopped; the probe then too.
      ``changed`` and ``unchanged`` (already applied, or ``superseded``: the
      vhost carries the policy inline) are success; ``refused`` for a block we
      do not recognise is a note and success; ``rolled-back``,
      ``unrestored`` and the transient refusals are failures;
    * the snippet is a conffile of ours: when the vhost already includes it
      but its bytes differ from those Apache last loaded (an upgrade shipped a
      new one, or the operator edited it), the transaction makes it live
      (config test, graceful reload, live check, rollback); when they are the
      same, nothing is reloaded.
    """
    snippet = paths.policy_path()
    a, why = _locate()
    if a is None:
        note(f"{event}: {why}; nothing changed. The policy is applied when the vhost appears "
             f"(dataone-cn-os-core's trigger) or by `{PACKAGE} [--vhost FILE] apply`.")
        return EXIT_OK
    owner = conffile_owner(a.filename)
    if owner is not None:
        note(f"{event}: {a.filename} is a conffile of the package {owner}: maintainer scripts must not edit it "
             f"(Debian Policy 10.7.3); nothing changed. To apply the policy there anyway, run by hand: "
             f"{PACKAGE} --vhost {a.filename} apply")
        return EXIT_OK
    if a.state == "superseded":
        note(f"{event}: {a.filename}:{a.line} already carries the target policy inline (superseded); nothing to do.")
        return EXIT_OK
    try:
        transaction.check_snippet(snippet)
    except (policy.PolicyError, ac.ConfigSyntaxError) as exc:
        note(f"{event}: FAILED: the policy snippet cannot be used: {exc}. Nothing changed. {snippet} is a "
             f"conffile of this package: fix it (or restore the packaged version), then run `dpkg --configure -a`.")
        return EXIT_FAIL
    allowed, permission = reload_permission()
    note(f"{event}: applying the client-certificate policy to {a.filename} ({a.state_label})")
    t = transaction.Transaction("apply", vhost=a.filename, reload=allowed, do_probe=True, report=_report,
                                no_reload_reason=None if allowed else permission)
    out = t.run()
    print(f"apply: {out.result}: {out.message}", file=sys.stderr, flush=True)
    if out.result == "changed" and not allowed:
        note(f"{event}: Apache was not reloaded ({permission}); the policy takes effect at its next (re)start.")
    if out.result in ("changed", "unchanged"):
        return EXIT_OK
    if out.exit_code == ExitCode.REFUSED and not _transient(out):
        note(f"{event}: refused ({out.message}). Nothing changed; the package stays installed. Fix the vhost, "
             f"then run `{PACKAGE} apply`.")
        return EXIT_OK
    note(f"{event}: FAILED: {out.message}")
    if out.exit_code != ExitCode.UNRESTORED:
        note(f"{event}: the previous configuration is in place. Fix the cause, then run `dpkg --configure -a`.")
    return EXIT_FAIL


def _transient(out: transaction.Outcome) -> bool:
    """Is this refusal one that a retry resolves (configuration already broken, lock held)?"""
    return any(not s.ok and s.name in ("lock", "configtest") for s in out.steps)


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

    Returns: 0 when the vhost no longer includes our snippet (reverted now,
    never applied, no vhost, or the removal is forced); 1 when a vhost still
    includes it after a failed revert.
    Behaviour: every SSL vhost Apache loads that holds our managed block is
    reverted with the ``revert`` transaction (restore the saved block,
    configtest, graceful reload unless policy-rc.d forbids it or Apache is
    stopped, live check, rollback on failure).

    Why a failed revert stops the removal: on ``remove`` dpkg keeps our
    conffile, so the Include would still resolve and Apache would keep
    working; but the command that can undo it would be gone, and ``purge``
    deletes the conffile and would leave the Include dangling: Apache then
    fails at its next reload or start. So the script fails, dpkg keeps the
    package installed (``postinst abort-remove`` changes nothing), and the
    message says what to fix. It is never stuck for good: once the cause is
    fixed (or the vhost is reverted or edited by hand) the removal succeeds,
    and ``DATAONE_CN_SSLVERIFY_FORCE_REMOVE=1`` forces it (the policy then
    stays active until purge, and purge keeps the state dir while an enabled
    configuration still includes the snippet). A vhost that is a conffile of
    another package is never edited from here: the operator reverts it by
    hand (they applied it by hand too).
    """
    force = os.environ.get(FORCE_REMOVE_ENV, "") not in ("", "0")
    try:
        loc = locate.locate(None, paths.policy_path())
        applied = [a for a in loc.assessments if a.state == "applied"]
    except (ac.ConfigSyntaxError, OSError) as exc:
        return _remove_blocked(f"could not read the Apache configuration to revert the policy: {exc}", force)
    if not applied:
        note("prerm remove: no vhost includes the policy snippet; nothing to revert.")
        return EXIT_OK
    allowed, permission = reload_permission()
    problems: List[str] = []
    for a in applied:
        owner = conffile_owner(a.filename)
        if owner is not None:
            problems.append(f"{a.filename} is a conffile of {owner} and is not edited from a maintainer script; "
                            f"run `{PACKAGE} --vhost {a.filename} revert` by hand")
            continue
        note(f"prerm remove: reverting {a.filename}")
        t = transaction.Transaction("revert", vhost=a.filename, reload=allowed, do_probe=True, report=_report,
                                    no_reload_reason=None if allowed else permission)
        out = t.run()
        print(f"revert: {out.result}: {out.message}", file=sys.stderr, flush=True)
        if out.exit_code != ExitCode.OK:
            problems.append(f"{a.filename}: {out.message}")
        elif out.result == "changed" and not allowed:
            note(f"prerm remove: Apache was not reloaded ({permission}); the original block takes effect "
                 "at its next (re)start.")
    if problems:
        return _remove_blocked("; ".join(problems), force)
    return EXIT_OK


def _remove_blocked(reason: str, force: bool) -> int:
    if force:
        note(f"prerm remove: {reason}")
        note(f"prerm remove: {FORCE_REMOVE_ENV} is set: removing anyway. The vhost still includes "
             f"{paths.policy_path()}, which stays until purge; revert it by hand before purging.")
        return EXIT_OK
    note(f"prerm remove: FAILED: {reason}")
    note("prerm remove: the package stays installed, so that the vhost's Include keeps a file to point to and "
         f"`{PACKAGE} revert` (or `backups`/`restore ID`) stays available. Fix the cause and remove again, "
         f"or set {FORCE_REMOVE_ENV}=1 to remove anyway.")
    return EXIT_FAIL


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
        print("usage: python3 -m dataone_cn_sslverify.maint postinst|prerm ACTION [ARGS...]", file=sys.stderr)
        return 2
    try:
        return _dispatch(args[0], args[1], args[2:])
    except Exception:  # a bug: say so, and never leave a half-done change behind a failing script
        traceback.print_exc()
        note(f"{' '.join(args[:2])}: internal error (above); putting back any change it left half done")
        _recover_now()
        return EXIT_FAIL


def _recover_now() -> None:
    """After an unexpected exception: let `transaction.recover` restore the vhost from the journal."""
    try:
        store = Store(paths.state_dir())
        if store.read_journal() is None:
            return
        store.lock("maint recover", transaction.LOCK_TIMEOUT)
        try:
            transaction.recover(store, lambda name, ok, detail: print(f"{name}: {detail}", file=sys.stderr))
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
        return EXIT_OK
    if script == "prerm":
        if action == "remove":
            return prerm_remove()
        return EXIT_OK
    print(f"maint: unknown maintainer script {script!r} (postrm is plain sh)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
