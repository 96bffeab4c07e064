"""dataone-cn-sslverify: never ask browsers for a client certificate on a DataONE CN's /cn.

The design is in docs/design.md, the measured facts it rests on in
docs/facts.md, the operator guide in README.md. One concept per module; the
core is pure (bytes in, bytes out) and effects sit at thin edges.

Pure core:
    apacheconf   lossless Apache config parser: ``render(parse(x)) == x``
    policy       recognise the client-verification block in a vhost
    uamatch      a User-Agent ``<If>`` condition, parsed and matched as Apache would
    patching     what apply and revert write into a vhost (one splice each)
    textdiff     unified diffs of file texts (``diff``)
    snippet      the policy file's contract, its live copy, the status line and the TLS 1.2 opt-in text
    loaded       the configuration as Apache loads it (Includes expanded, IfModule/IfDefine evaluated)
    clients      the client catalogue: the families and matrix rows the probe plays
    tlsobserve   the request sent and the TLS messages seen: was a certificate requested, and how
    results      what one probe saw (``ProbeResult``); the probe's table, legend and JSON
    gate         the live gate: the policy's promise judged over probe results (docs/gate.md)
    scope        what of the loaded configuration applies to the CN vhost, path and client
    errors       ``ExitCode`` and ``SslVerifyError``, the base every reported error derives from
    display      what a person reads: shell-quoted commands, escaped config text, bytes shown as UTF-8
    outcome      a transaction's steps and result (``Step``, ``Outcome``, ``Abort``)
    monitor      observations -> one OK/WARN/CRIT/UNKNOWN verdict; the Check_MK and Nagios formats
    records      ``dataclass``, ``field``, ``replace``, ``asdict``: the dataclasses subset, for Python 3.6

Edges:
    proc         every subprocess: one timeout, one decoding
    paths        where things live, and the environment overrides
    apachecmd    which apache2ctl runs and with which environment (shared by apachectl and monitor_fast)
    apachectl    Apache as a process: config test, what it loads, running?, reload (by hand, or invoke-rc.d)
    locate       find the CN SSL vhost among the files Apache loads
    store        the state dir (validated), backups, saved blocks, journal, lock, compare-and-swap writes
    reverter     the one undo path: checkpoints (the journal) and their undo, for rollback and crash recovery
    interrupts   SIGINT/SIGTERM/SIGHUP recorded during a change, acted on at step boundaries
    optout       the administrator's opt-out ("disabled by the administrator"), kept in the state dir
    probe        live TLS probe of the vhost (Python ``ssl`` or ``openssl s_client``)
    monitor_observe  what ``monitor`` judges: the vhost, the state dir (shared lock, read only), the seams
    monitor_config   what the loaded configuration says for ``monitor`` (hazards, replication Locations)
    monitor_cache    the monitor's cache files in the state dir: written safely, read back without trust
    monitor_fast     ``monitor``'s verdict cache: keyed on every file the verdict read; answered with few imports
    monitor_live     ``monitor --live``: a few live behaviours, cached
    sslcompat    TLS version pins and post-handshake auth on every Python from 3.6
    livecheck    the gate's probes against the live vhost, and its verdict

Commands:
    entry        the command's entry point: monitor's cached verdict (monitor_fast), else cli
    prefetch     Apache's dump started before the imports; used only if still the dump that would run
    transaction  apply / revert / restore as explicit steps with one rollback path, crash recovery
    planning     the plan steps of a transaction: locate, plan apply/revert, a snippet edit, a restore
    hazards      ``check``'s rules: what in the loaded configuration breaks which clients (pure)
    checkrun     ``check``'s edge: locate, configtest, a few handshakes, the report
    cli          the ``dataone-cn-sslverify`` command: output, recovery first, one exit-code mapping
    cliargs      its arguments: the parser (global options before or after the command)
    statusview   the ``status`` command: vhosts, Apache, the policy's live copy, opt-out, drift, backups
    hoststate    what ``status`` adds: opt-out, drift, a configuration broken by someone else
    maint        the entry points the Debian maintainer scripts call
"""

__version__ = "0.2.0"
