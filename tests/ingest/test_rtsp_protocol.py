"""The pure RTSP message parts of ``monitor.ingest.rtsp``: bytes in, values out (responses,
requests, authorization, OPTIONS/DESCRIBE/SETUP answers, read batching)."""

from __future__ import annotations

import pytest

from monitor.ingest.rtsp import (
    BUFFER_BYTES,
    IDLE_WAIT_MAX_S,
    MAX_HEADER_BYTES,
    RECV_BATCH_BYTES,
    RECV_BATCH_WAIT_S,
    RtspError,
    RtspResponse,
    RtspUnauthorizedError,
    RtspUnsupportedError,
    authorization,
    check_response,
    choose_challenge,
    content_length,
    described_track,
    digest_response,
    encode_request,
    interleaved_channel,
    is_message_start,
    keepalive_method,
    parse_head,
    parse_message,
    parse_session,
    read_batching,
    skip_interleaved,
    take_response,
)

OK = b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nPublic: OPTIONS, DESCRIBE\r\n\r\n"


def interleaved(channel: int, payload: bytes) -> bytes:
    return bytes([0x24, channel, len(payload) >> 8, len(payload) & 0xFF]) + payload


def response(status: int = 200, reason: str = "OK", **headers: str) -> RtspResponse:
    return RtspResponse(status, reason,
                        {name.replace("_", "-").lower(): [value]
                         for name, value in headers.items()}, b"")


# --- Responses. ---


def test_a_response_with_headers_is_parsed_and_consumed() -> None:
    parsed, position = take_response(OK + b"rest", 0, len(OK) + 4)
    assert parsed == RtspResponse(200, "OK", {"cseq": ["1"],
                                              "public": ["OPTIONS, DESCRIBE"]}, b"")
    assert position == len(OK)
    assert parsed.header("Public") == "OPTIONS, DESCRIBE"
    assert parsed.header("Session") is None


def test_repeated_headers_keep_every_value_in_order() -> None:
    _, _, headers = parse_head(b"RTSP/1.0 401 Unauthorized\r\nWWW-Authenticate: Digest a=1\r\n"
                               b"www-authenticate: Basic realm=x")
    assert headers["www-authenticate"] == ["Digest a=1", "Basic realm=x"]


def test_the_body_is_taken_by_content_length() -> None:
    data = b"RTSP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nv=0\r\nNEXT"
    parsed, position = take_response(data, 0, len(data))
    assert parsed is not None
    assert parsed.body == b"v=0\r\n"
    assert data[position:] == b"NEXT"


def test_a_partial_body_waits_and_moves_nothing() -> None:
    data = b"RTSP/1.0 200 OK\r\nContent-Length: 10\r\n\r\nv=0"
    assert take_response(data, 0, len(data)) == (None, 0)


def test_a_partial_head_waits() -> None:
    assert take_response(b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n", 0, 25) == (None, 0)


def test_a_reason_may_be_missing_or_hold_spaces() -> None:
    assert parse_head(b"RTSP/1.0 200")[:2] == (200, "")
    assert parse_head(b"RTSP/1.0 454 Session Not Found")[:2] == (454, "Session Not Found")


@pytest.mark.parametrize(("text", "expected"), [
    (None, 0), ("12", 12), ("x", 0), ("-3", 0),
])
def test_content_length(text: str | None, expected: int) -> None:
    headers = {} if text is None else {"content-length": [text]}
    assert content_length(headers) == expected


def test_a_request_of_the_camera_has_status_0() -> None:
    data = b"ANNOUNCE rtsp://cam/x RTSP/1.0\r\nCSeq: 7\r\nContent-Length: 2\r\n\r\nhi"
    parsed, position = take_response(data, 0, len(data))
    assert parsed == RtspResponse(0, "ANNOUNCE rtsp://cam/x RTSP/1.0",
                                  {"cseq": ["7"], "content-length": ["2"]}, b"hi")
    assert position == len(data)


def test_an_answer_that_is_not_rtsp_is_an_error() -> None:
    data = b"HTTP/1.1 200 OK\r\n\r\n"
    with pytest.raises(RtspError, match=r"^the camera's answer is not RTSP: 'HTTP/1.1 200 OK'$"):
        take_response(data, 0, len(data))
    with pytest.raises(RtspError, match="not RTSP"):
        parse_head(b"RTSP/1.0 OK")


def test_no_header_end_in_too_much_data_is_an_error() -> None:
    data = b"RTSP/1.0 200 OK\r\n" + b"X" * MAX_HEADER_BYTES
    with pytest.raises(RtspError, match=r"^the camera's answer is not RTSP \(no header end\)$"):
        take_response(data, 0, len(data))


def test_a_body_too_large_is_an_error() -> None:
    data = f"RTSP/1.0 200 OK\r\nContent-Length: {MAX_HEADER_BYTES + 1}\r\n\r\n".encode()
    with pytest.raises(RtspError, match=r"^the camera's answer body is too large$"):
        take_response(data, 0, len(data))


def test_interleaved_packets_in_front_are_skipped() -> None:
    data = interleaved(0, b"\x80" * 20) + interleaved(1, b"rtcp") + OK
    assert skip_interleaved(data, 0, len(data)) == 24 + 8
    parsed, position = take_response(data, 0, len(data))
    assert parsed is not None
    assert parsed.status == 200
    assert position == len(data)


def test_a_partial_interleaved_packet_stops_the_skip_and_waits() -> None:
    # A blank line inside the payload must not be read as the end of an RTSP head.
    data = interleaved(0, b"ab") + interleaved(0, b"\r\n\r\n" + b"x" * 20)[:12]
    assert skip_interleaved(data, 0, len(data)) == 6
    assert parse_message(data, 6, len(data)) == (None, 6)
    assert take_response(data, 0, len(data)) == (None, 6)


def test_parsing_starts_where_it_is_told() -> None:
    data = b"junk" + OK
    parsed, position = take_response(data, 4, len(data))
    assert parsed is not None
    assert position == len(data)


@pytest.mark.parametrize(("data", "expected"), [
    (b"RTSP", True), (b"ANNO", True), (b"GET_", True), (b"OPTI", True), (b"SET_", True),
    (b"REDI", True), (b"TEAR", True), (b"PLAY", False), (b"\x00RTS", False), (b"rtsp", False),
])
def test_message_starts(data: bytes, expected: bool) -> None:
    assert is_message_start(data) is expected


# --- Requests. ---


def test_a_request_on_the_wire() -> None:
    assert encode_request("OPTIONS", "rtsp://cam/live", cseq=1, session=None, headers={}) == (
        b"OPTIONS rtsp://cam/live RTSP/1.0\r\nCSeq: 1\r\nUser-Agent: monitor\r\n\r\n")


def test_a_request_with_session_and_headers_in_order() -> None:
    wire = encode_request("PLAY", "rtsp://cam/live/", cseq=5, session="abc",
                          headers={"Range": "npt=0.000-", "Authorization": "Basic eA=="})
    assert wire == (b"PLAY rtsp://cam/live/ RTSP/1.0\r\nCSeq: 5\r\nUser-Agent: monitor\r\n"
                    b"Session: abc\r\nRange: npt=0.000-\r\nAuthorization: Basic eA==\r\n\r\n")


# --- Authorization. ---


def test_digest_is_chosen_before_basic() -> None:
    assert choose_challenge(['Basic realm="cam"', 'Digest realm="cam", nonce="n1"']) == (
        "digest", {"realm": "cam", "nonce": "n1"})
    assert choose_challenge(['Basic realm="cam"']) == ("basic", {"realm": "cam"})


def test_an_unknown_challenge_is_unsupported() -> None:
    with pytest.raises(RtspUnsupportedError,
                       match=r"^the camera asks for an unknown authentication$"):
        choose_challenge(['Bearer realm="cam"'])
    with pytest.raises(RtspUnsupportedError):
        choose_challenge([])


def test_basic_authorization() -> None:
    value = authorization(("basic", {"realm": "cam"}), username="admin", password="s3cret",
                          method="DESCRIBE", uri="rtsp://cam/x", nonce_count=0, cnonce="")
    assert value == "Basic YWRtaW46czNjcmV0"  # base64("admin:s3cret")
    assert authorization(("basic", {}), username="admin", password=None, method="OPTIONS",
                         uri="rtsp://cam/x", nonce_count=0, cnonce="") == "Basic YWRtaW46"


def test_digest_authorization_is_the_digest_response() -> None:
    challenge = {"realm": "cam", "nonce": "abc", "qop": "auth"}
    value = authorization(("digest", challenge), username="admin", password=None,
                          method="DESCRIBE", uri="rtsp://cam/x", nonce_count=2, cnonce="c0ffee")
    assert value == digest_response(username="admin", password="", method="DESCRIBE",
                                    uri="rtsp://cam/x", challenge=challenge, nonce_count=2,
                                    cnonce="c0ffee")
    assert "nc=00000002" in value
    assert 'cnonce="c0ffee"' in value


# --- Answers. ---


def test_200_passes() -> None:
    check_response("OPTIONS", response(200))


@pytest.mark.parametrize(("method", "status", "reason", "error", "message"), [
    ("DESCRIBE", 401, "Unauthorized", RtspUnauthorizedError,
     ("unauthorized: the camera refused the credentials (401); check the camera's username "
      "and password")),
    ("DESCRIBE", 302, "Found", RtspUnsupportedError, "DESCRIBE redirected (302)"),
    ("SETUP", 461, "Unsupported Transport", RtspUnsupportedError,
     "SETUP over TCP refused (461 Unsupported Transport)"),
    ("PLAY", 461, "Unsupported Transport", RtspUnsupportedError,
     "SETUP over TCP refused (461 Unsupported Transport)"),
    ("SETUP", 400, "Bad Request", RtspUnsupportedError, "SETUP over TCP refused (400 Bad Request)"),
    ("PLAY", 400, "Bad Request", RtspError, "PLAY failed: 400 Bad Request"),
    ("DESCRIBE", 404, "Not Found", RtspError, "DESCRIBE failed: 404 Not Found"),
])
def test_other_answers_raise(method: str, status: int, reason: str, error: type[Exception],
                             message: str) -> None:
    with pytest.raises(error) as raised:
        check_response(method, response(status, reason))
    assert type(raised.value) is error
    assert str(raised.value) == message


@pytest.mark.parametrize(("public", "expected"), [
    (None, "OPTIONS"), ("OPTIONS, DESCRIBE, SETUP, PLAY", "OPTIONS"),
    ("OPTIONS, get_parameter, PLAY", "GET_PARAMETER"),
])
def test_keepalive_method(public: str | None, expected: str) -> None:
    assert keepalive_method(public) == expected


SDP = ("v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:trackID=1\r\n")


@pytest.mark.parametrize(("headers", "base"), [
    ({"content-base": ["rtsp://cam/base/"], "content-location": ["rtsp://cam/loc/"]},
     "rtsp://cam/base/"),
    ({"content-location": ["rtsp://cam/loc/"]}, "rtsp://cam/loc/"),
    ({}, "rtsp://cam/live"),
])
def test_described_track_and_its_base(headers: dict[str, list[str]], base: str) -> None:
    described = RtspResponse(200, "OK", headers, SDP.encode())
    found_base, track = described_track(described, "rtsp://cam/live")
    assert found_base == base
    assert track.control_url == (base if base.endswith("/") else base + "/") + "trackID=1"
    assert track.payload_type == 96


@pytest.mark.parametrize(("value", "expected"), [
    ("12345678", ("12345678", None)),
    ("12345678;timeout=30", ("12345678", 30.0)),
    (" abc ; timeout = 45", ("abc", 45.0)),
    ("abc;timeout=0", ("abc", None)),
])
def test_parse_session(value: str, expected: tuple[str, float | None]) -> None:
    assert parse_session(value) == expected


@pytest.mark.parametrize("value", [None, ""])
def test_a_setup_answer_without_session_is_an_error(value: str | None) -> None:
    with pytest.raises(RtspError, match=r"^the camera's SETUP answer carries no session$"):
        parse_session(value)


@pytest.mark.parametrize(("transport", "channel"), [
    ("RTP/AVP/TCP;unicast;interleaved=0-1", 0),
    ("RTP/AVP/tcp;unicast;interleaved=4-5;ssrc=1234", 4),
    ("RTP/AVP/TCP;unicast", None),
])
def test_interleaved_channel(transport: str, channel: int | None) -> None:
    assert interleaved_channel(transport) == channel


@pytest.mark.parametrize(("transport", "shown"), [
    ("RTP/AVP;unicast;client_port=5000-5001", "RTP/AVP;unicast;client_port=5000-5001"),
    (None, ""),
])
def test_a_transport_other_than_tcp_is_unsupported(transport: str | None, shown: str) -> None:
    with pytest.raises(RtspUnsupportedError) as raised:
        interleaved_channel(transport)
    assert str(raised.value) == f"the camera refused TCP interleaving ({shown})"


# --- Read batching. ---


def test_prompt_batches_while_a_frame_is_wanted() -> None:
    assert read_batching(100.0, idle_until=0.0, next_keepalive=130.0) == (
        RECV_BATCH_WAIT_S, RECV_BATCH_BYTES)


def test_lazy_reads_while_no_frame_is_wanted_never_past_a_keepalive() -> None:
    assert read_batching(100.0, idle_until=105.0, next_keepalive=130.0) == (
        IDLE_WAIT_MAX_S, BUFFER_BYTES // 2)
    wait_s, size = read_batching(100.0, idle_until=100.5, next_keepalive=130.0)
    assert wait_s == pytest.approx(0.5)
    assert size == BUFFER_BYTES // 2
    wait_s, _ = read_batching(100.0, idle_until=105.0, next_keepalive=100.3)
    assert wait_s == pytest.approx(0.3)
    assert read_batching(100.0, idle_until=100.1, next_keepalive=130.0) == (
        RECV_BATCH_WAIT_S, RECV_BATCH_BYTES)
