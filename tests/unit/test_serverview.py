"""The browser tests' server view: request-log lines tied to their connection's AH codes by client port."""

from harness.serverview import ah_codes_by_port, request_lines

ERROR_LOG = """\
[Tue Dec 01 21:56:03.981695 2026] [ssl:debug] [pid 9498:tid 9502] ssl_engine_kernel.c(621): [client 127.0.0.1:46648] AH02255: Changed client verification type will force renegotiation, referer: http://127.0.0.1:42105/
[Tue Dec 01 21:56:03.981698 2026] [ssl:info] [pid 9498:tid 9502] [client 127.0.0.1:46648] AH02221: Requesting connection re-negotiation, referer: http://127.0.0.1:42105/
[Tue Dec 01 21:56:03.993427 2026] [ssl:error] [pid 9498:tid 9502] [client 127.0.0.1:46648] AH02261: Re-negotiation handshake failed, referer: http://127.0.0.1:42105/
[Tue Dec 01 21:56:04.051089 2026] [ssl:info] [pid 9498:tid 9503] [client 127.0.0.1:46660] AH02221: Requesting connection re-negotiation
[Tue Dec 01 21:56:04.051090 2026] [ssl:debug] [pid 9498:tid 9503] ssl_engine_io.c(1150): [client 127.0.0.1:46660] AH02001: Connection closed to child 1 with standard shutdown
[Tue Dec 01 21:56:07.336092 2026] [ssl:debug] [pid 9950:tid 9953] ssl_engine_kernel.c(1007): [client 127.0.0.1:46738] AH10129: verify client post handshake
[Tue Dec 01 21:56:07.336098 2026] [ssl:error] [pid 9950:tid 9953] [client 127.0.0.1:46738] AH10158: cannot perform post-handshake authentication
[Tue Dec 01 21:56:07.336099 2026] [ssl:error] [pid 9950:tid 9953] [client 127.0.0.1:46738] AH10158: cannot perform post-handshake authentication
"""

UA = "Mozilla/5.0 (Windows NT 6.1; WOW64; Trident/7.0; rv:11.0) like Gecko"
LOG = "\n".join([
    "46648\t-\t-\t-\tOPTIONS\t/cn/v2/accounts/x\t403\thttp://127.0.0.1:42105\t" + UA,
    "46660\tTLSv1.2\tcn.dataone.test\tNONE\tOPTIONS\t/cn/v2/accounts/x\t200\thttp://127.0.0.1:42105\t" + UA,
    "46738\tTLSv1.3\tcn.dataone.test\tNONE\tOPTIONS\t/cn/v2/accounts/x\t403\thttp://127.0.0.1:42105\t" + UA,
    "46800\tTLSv1.3\tcn.dataone.test\tNONE\tGET\t/cn/v2/accounts/x\t200\thttp://127.0.0.1:42105\t" + UA,
    "a truncated line",
])


def test_codes_by_port_in_order_without_repeats():
    codes = ah_codes_by_port(ERROR_LOG)
    assert codes[46648] == ("AH02255", "AH02221", "AH02261")
    assert codes[46738] == ("AH10129", "AH10158")


def test_lines_get_their_connection_codes_and_a_verdict():
    lines = request_lines(LOG, ERROR_LOG)
    assert [ln.port for ln in lines] == [46648, 46660, 46738, 46800]  # the truncated line is dropped
    failed, reneg, pha, plain = lines
    assert failed.protocol == "-" and failed.status == 403 and failed.asked == "renegotiation, failed (AH02261)"
    assert reneg.ah == ("AH02221",) and reneg.asked == "renegotiation"  # AH02001 is not a certificate request
    assert pha.asked == "post-handshake impossible (AH10158)"
    assert plain.ah == () and plain.asked == "" and plain.user_agent == UA and plain.sni == "cn.dataone.test"
