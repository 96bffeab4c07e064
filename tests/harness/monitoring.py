"""The documented output formats of `monitor`, parsed independently of the package's formatter.

Check_MK local check (Check_MK docs, "Local checks"): one line
``<status> <service_name> <metrics> <status_detail>``, fields separated by
single spaces; status 0-3; the service name contains no spaces; metrics are
``-`` or ``name=value[;warn[;crit[;min[;max]]]]`` joined by ``|``; the rest
of the line is the text.

Nagios / monitoring-plugins (Monitoring Plugins Development Guidelines):
exit 0/1/2/3 = OK/WARNING/CRITICAL/UNKNOWN; first line ``STATUS - text``,
then optionally `` | `` and space-separated performance data
``'label'=value[UOM];[warn];[crit];[min];[max]``; the text carries no ``|``.
"""

import re
from typing import Dict, List, Tuple


def parse_checkmk(line: str) -> Tuple[int, str, Dict[str, List[str]], str]:
    assert line.endswith("\n") and line.count("\n") == 1, repr(line)
    status, service, metrics, text = line.rstrip("\n").split(" ", 3)
    assert status in ("0", "1", "2", "3"), line
    assert service and not re.search(r"\s", service), service
    parsed: Dict[str, List[str]] = {}
    if metrics != "-":
        for m in metrics.split("|"):
            name, _, rest = m.partition("=")
            assert re.fullmatch(r"[A-Za-z0-9_]+", name), m
            fields = rest.split(";")
            assert 1 <= len(fields) <= 5 and re.fullmatch(r"-?\d+(\.\d+)?", fields[0]), m
            assert all(f == "" or re.fullmatch(r"-?\d+(\.\d+)?", f) for f in fields[1:]), m
            parsed[name] = fields
    return int(status), service, parsed, text


def parse_nagios(output: str, exit_code: int) -> Tuple[str, str, Dict[str, List[str]]]:
    first = output.splitlines()[0]
    text, _, perf = first.partition(" | ")
    status, sep, detail = text.partition(" - ")
    assert sep and status == ("OK", "WARNING", "CRITICAL", "UNKNOWN")[exit_code], output
    assert "|" not in detail
    parsed: Dict[str, List[str]] = {}
    for item in perf.split(" ") if perf else ():
        label, _, rest = item.partition("=")
        assert re.fullmatch(r"'[^'=]+'|[^' =]+", label), item
        fields = rest.split(";")
        assert re.fullmatch(r"-?\d+(\.\d+)?[a-zA-Z%]*", fields[0]) and len(fields) <= 5, item
        parsed[label.strip("'")] = fields
    return status, detail, parsed
