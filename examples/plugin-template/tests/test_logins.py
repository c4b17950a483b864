"""find_logins on bytes: every mechanism, and the secret never comes out."""

from __future__ import annotations

import base64

from pcapwire_cleartext.logins import Login, find_logins


def b64(raw: bytes) -> bytes:
    return base64.b64encode(raw)


def test_ftp_user_pass() -> None:
    data = b"USER alice\r\nPASS s3cret!\r\nSYST\r\n"
    assert find_logins(data, 21) == [Login("ftp", "user-pass", "alice", 7, 0)]
    assert find_logins(b"USER bob\r\nQUIT\r\n", 21) == []  # no password sent


def test_imap_login_atoms_and_quoted_strings() -> None:
    data = b'a1 CAPABILITY\r\na2 LOGIN "j\\"o" "pw pw"\r\nb LOGIN joe xyz\r\n'
    assert find_logins(data, 143) == [Login("imap", "imap-login", 'j"o', 5, 15),
                                      Login("imap", "imap-login", "joe", 3, 40)]


def test_auth_plain_inline_and_on_the_next_line() -> None:
    cred = b64(b"\0carol@example.org\0hunter2")
    data = b"EHLO x\r\nAUTH PLAIN " + cred + b"\r\n"
    assert find_logins(data, 587) == [Login("smtp", "auth-plain", "carol@example.org", 7, 8)]
    data = b"AUTH PLAIN\r\n" + cred + b"\r\nSTAT\r\n"
    assert find_logins(data, 110) == [Login("pop3", "auth-plain", "carol@example.org", 7, 0)]
    assert find_logins(b"a AUTHENTICATE PLAIN\r\n" + cred + b"\r\n", 143)[0].protocol == "imap"


def test_auth_login_and_http_basic() -> None:
    data = b"AUTH LOGIN\r\n" + b64(b"dave") + b"\r\n" + b64(b"pa55") + b"\r\n"
    assert find_logins(data, 25) == [Login("smtp", "auth-login", "dave", 4, 0)]
    data = b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Basic " + b64(b"erin:pw") + b"\r\n\r\n"
    assert find_logins(data, 8080) == [Login("http", "http-basic", "erin", 2, 25)]


def test_garbage_is_not_a_login() -> None:
    data = (b"AUTH PLAIN !!notbase64!!\r\nAUTH LOGIN\r\n???\r\n"
            b"Authorization: Basic bm9jb2xvbg==\r\n")  # "nocolon"
    assert find_logins(data, 25) == []


def test_the_secret_never_comes_out() -> None:
    data = b"USER u\r\nPASS topsecret\r\n"
    assert "topsecret" not in repr(find_logins(data, 21))
