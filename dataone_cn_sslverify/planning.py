"""Deciding a transaction's new bytes: locate the vhost, plan apply/revert, a snippet edit, a restore.

Pure decisions over bytes read once (`Transaction.basis`); nothing here
writes a vhost. A mixin of `transaction.Transaction` (it reports steps and
raises `Abort` like the other steps).
"""

import os
from typing import Optional

from . import apacheconf as ac
from . import locate, paths, policy, reverter, snippet
from .errors import ExitCode
from .outcome import Abort
from .store import Backup, read


REOPENS_REPLICATION = (
    "the original webkit-if-else block is back: its <Else> sets `SSLVerifyClient optional` for the whole "
    "vhost after the replication <Location>, so replication accepts clients without a certificate again")


class Planning:
    """The plan steps of a transaction (see `transaction.Transaction` for the attributes they set)."""

    def _plan(self) -> Optional[bytes]:
        """Decide the new bytes of the vhost file, or None when there is nothing to do."""
        self._checkpoint("plan")
        snippet = paths.policy_path()
        loc: Optional[locate.Located] = None
        try:
            if self.op == "restore":
                return self._plan_restore()
            loc = locate.locate(self.vhost, snippet, dump=self.dump)
            a = locate.choose(loc)
            self.assessment = a
            self.file = a.filename
            self.before = self.basis = loc.file_of(a).data
            text = ac.decode(self.before)
            if self.op == "apply":
                self.step("locate", True, f"{a.filename}:{a.line} {a.server_name or '-'} ({a.state_label})")
                return self._plan_apply(text, a, snippet)
            else:
                saved = self.store.load_block(a.filename)
                # Reverting an adopted inline policy brings the policy back, not an original block.
                self.revert_to_policy = bool(saved) and saved.get("variant") == "browser-list"
                if saved is None and a.state == "applied":
                    raise policy.PolicyError(f"{a.filename}:{a.line}: no saved original block in {self.store.blocks_dir}; "
                                             "use `dataone-cn-sslverify backups` and `restore ID`")
                if saved is None and a.state in ("original", "superseded"):
                    # Never applied, or already reverted (commit drops the saved block): nothing to
                    # do, exit 0 (design: "0 done or nothing to do"); a second `revert` is not
                    # an edit by hand.
                    self.step("locate", True, f"{a.filename}:{a.line} {a.server_name or '-'} ({a.state_label})")
                    self.step("plan", True, f"{a.state_label}: no managed block, nothing to revert")
                    return None
                patch = policy.plan_revert(text, a, saved["block"] if saved else "")
                if saved and saved.get("variant") == "webkit-if-else":
                    self.warnings.append(REOPENS_REPLICATION)
        except locate.NotFound as exc:
            # revert: a loaded SSL vhost whose original block we saved (so we applied it) but
            # that now holds no block at all had our managed lines deleted by hand. That is a
            # refusal with a clear message (exit 2), not "no CN SSL vhost found" (exit 4).
            gone = [x for x in (loc.assessments if loc else []) if self.op == "revert" and self.store.load_block(x.filename)]
            if gone:
                g = gone[0]
                msg = (f"{g.filename}:{g.line}: the managed Include was removed by hand (no client-verification block "
                       f"left); the saved original block is in {self.store.blocks_dir}, nothing safe to revert")
                self.step("plan", False, msg)
                raise Abort("refused", ExitCode.REFUSED, f"{msg}; nothing changed")
            self.step("locate", False, str(exc))
            raise Abort("not-found", ExitCode.NOT_FOUND, f"{exc}; nothing changed")
        except (policy.PolicyError, ac.ConfigSyntaxError, FileNotFoundError) as exc:
            self.step("plan", False, str(exc))
            raise Abort("refused", ExitCode.REFUSED, f"{exc}; nothing changed")
        self.step("locate", True, f"{a.filename}:{a.line} {a.server_name or '-'} ({a.state_label})")
        if patch is None:
            self.step("plan", True, f"{a.state_label}: nothing to do")
            return None
        self.step("plan", True, f"replace lines {patch.first_line}-{patch.last_line} ({a.state_label} -> "
                                f"{'managed Include' if self.op == 'apply' else 'original block'})")
        return ac.encode(patch.apply_to(text))

    def _plan_apply(self, text: str, a: policy.Assessment, conffile: str) -> Optional[bytes]:
        """The vhost's new bytes, and the live copy to write (`self.live_new`); None: nothing to do.

        The policy file is read and checked against its contract here, before
        anything is written; it is never written. What Apache loads is its live
        copy (`snippet`), changed only when it differs from the policy file --
        compared with the file itself, never with a record of an earlier run.
        """
        try:
            conf = check_snippet(conffile)
        except policy.PolicyError as exc:
            if a.state == "applied" and a.block is not None and a.block.snippet == conffile:
                raise policy.PolicyError(f"{exc}; and {a.filename}:{a.block.first_line} still includes {conffile} "
                                         "itself (written by an older version), so Apache's next reload reads it: fix "
                                         "it, then run apply to move the Include to the live copy") from None
            raise
        live = paths.live_path()
        patch = policy.plan_apply(text, a, live, adopt=self.adopt)
        if patch is None and a.state != "applied":
            self.step("plan", True, f"{a.state_label}: the policy is in the vhost itself, nothing to do; to make "
                                    f"{conffile} (the TLS 1.2 opt-in, your pattern) what Apache loads: "
                                    f"`{snippet.PACKAGE} apply --adopt`")
            return None
        try:
            cur: Optional[bytes] = read(live)
        except FileNotFoundError:
            cur = None
        want = snippet.render_live(conffile, conf)
        self.live_new = want if cur != want else None
        if self.config_error and (live in self.config_error or conffile in self.config_error):
            self.snippet_mode = True  # our own file breaks the configuration: this change replaces it
        if patch is None and self.live_new is None:
            self.step("plan", True, f"applied, and {live} holds {conffile} as it is: nothing to do")
            return None
        what = []
        if patch is not None:
            what.append(f"replace lines {patch.first_line}-{patch.last_line} ({a.state_label} -> managed Include)")
        if self.live_new is not None:
            what.append(f"make {conffile} live as {live}" + (" (it was edited since it was last loaded)" if cur else ""))
        self.step("plan", True, "; ".join(what))
        return ac.encode(patch.apply_to(text)) if patch is not None else self.before

    def _plan_restore(self) -> Optional[bytes]:
        """The backup's bytes, for the file it was taken from -- only if that is still a file we may write."""
        try:
            b = self.store.get_backup(self.backup_id or "")
            data = self.store.verified_bytes(b)
        except (KeyError, ValueError, OSError) as exc:
            self.step("plan", False, str(exc))
            raise Abort("refused", ExitCode.REFUSED, f"{exc}; nothing changed")
        self._check_restore_target(b)
        self.file = b.path
        try:
            self.before = self.basis = read(b.path)
        except OSError as exc:
            raise Abort("refused", ExitCode.REFUSED, f"{b.path}: {exc.strerror}; nothing changed")
        try:
            ac.parse(data, b.path)
        except ac.ConfigSyntaxError as exc:
            raise Abort("refused", ExitCode.REFUSED, f"backup {b.id} does not parse ({exc}); nothing changed")
        self.step("locate", True, f"{b.path} (backup {b.id} of {b.when})")
        if data == self.before:
            self.step("plan", True, "the file already holds these bytes: nothing to do")
            return None
        self.step("plan", True, f"restore {b.size} bytes from {b.file}")
        return data

    def _check_restore_target(self, b: Backup) -> None:
        """A backup record names a path; write it only if it is the vhost (located, or --vhost) or a managed file."""
        if self.vhost:
            allowed, how = {os.path.realpath(self.vhost)}, f"--vhost {self.vhost}"
        else:
            try:
                allowed, how = {os.path.realpath(locate.choose(locate.locate(None, paths.policy_path())).filename)}, \
                    "the CN vhost Apache loads"
            except (locate.NotFound, policy.PolicyError, ac.ConfigSyntaxError) as exc:
                allowed, how = set(), f"no CN vhost could be located ({exc})"
        allowed |= {os.path.realpath(p()) for p in reverter.MANAGED_FILES}
        if b.path not in allowed:
            msg = (f"backup {b.id} was taken from {b.path}, which is not {how}; nothing changed "
                   "(name the file with --vhost FILE if it is the vhost Apache loads)")
            self.step("plan", False, msg)
            raise Abort("refused", ExitCode.REFUSED, msg)


def check_snippet(conffile: str) -> bytes:
    """The policy file's bytes, if it exists and keeps its contract (`snippet.check`); PolicyError if not."""
    try:
        data = read(conffile)
    except OSError as exc:
        raise policy.PolicyError(f"{conffile}: policy file missing ({exc.strerror}); reinstall dataone-cn-sslverify") from None
    try:
        snippet.check(data, conffile)
    except ac.ConfigSyntaxError as exc:
        raise policy.PolicyError(str(exc)) from None
    return data
