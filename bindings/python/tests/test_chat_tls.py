"""cartero.chat over TLS from Python, against `cartero chat serve --tls-self-signed` started
on 127.0.0.1 (its certificate written with --tls-cert-out and given as ``ca``)."""

import os
import subprocess
import threading
from pathlib import Path

import pytest

from cartero import chat

LOCAL = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[3]
BIN = os.environ.get("CARTERO_BIN", str(ROOT / "target" / "debug" / "cartero"))


def events(client, n, timeout=5.0):
    """The next `n` events that are not user lists."""
    got = []
    while len(got) < n:
        event = client.recv(timeout)
        assert event is not None, f"only {got}"
        if not isinstance(event, chat.UserList):
            got.append(event)
    return got


def until_list(client, users):
    """Skips user lists until `users` (an unsent list is replaced by a newer one)."""
    while True:
        event = client.recv(5.0)
        assert isinstance(event, chat.UserList), event
        if event.users == users:
            return


@pytest.fixture
def tls_server(tmp_path):
    """A server with a plain and a TLS port: (plain port, TLS port, certificate path)."""
    cert = tmp_path / "cert.pem"
    proc = subprocess.Popen([BIN, "chat", "serve", "-p", "0", "--tls-port", "0", "--bind", LOCAL,
                             "--tls-self-signed", "--tls-cert-out", str(cert),
                             "--memory", "--max-per-ip", "0", "--rate", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    plain = proc.stdout.readline()
    assert plain.startswith(f"s> init server {LOCAL}:"), plain
    tls = proc.stdout.readline()
    assert tls.startswith(f"s> init tls {LOCAL}:"), tls
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    yield int(plain.rsplit(":", 1)[1]), int(tls.split()[3].rsplit(":", 1)[1]), cert
    proc.send_signal(2)
    assert proc.wait(timeout=10) == 0


def test_tls_and_plain_users_talk(tls_server):
    plain, tls, cert = tls_server
    with chat.Client(LOCAL, tls, "ana", ca=cert) as ana, chat.Client(LOCAL, plain, "bob") as bob:
        until_list(ana, ["ana", "bob"])
        until_list(bob, ["ana", "bob"])
        bob.send("ana", "hola por TLS")
        assert events(ana, 1) == [chat.Message("bob", "hola por TLS")]
        ana.broadcast("hola a todos")
        assert events(bob, 1) == [chat.Broadcast("ana", "hola a todos")]


def test_tls_true_with_ca_as_a_string(tls_server):
    _, tls, cert = tls_server
    with chat.Client("localhost", tls, "ana", tls=True, ca=str(cert)) as ana:
        until_list(ana, ["ana"])


def test_an_untrusted_certificate_raises_certificate_error(tls_server):
    _, tls, _ = tls_server
    # Without ``ca``, only the public authorities are trusted: a self-signed certificate is not.
    with pytest.raises(chat.CertificateError) as refused:
        chat.Client(LOCAL, tls, "ana", tls=True)
    assert refused.value.reason == "unknown_issuer"
    assert "is refused" in str(refused.value)
    assert isinstance(refused.value, chat.ConnectionFailed)


def test_plain_port_and_bad_ca_fail_cleanly(tls_server, tmp_path):
    plain, tls, cert = tls_server
    with pytest.raises(chat.ConnectionFailed) as failed:
        chat.Client(LOCAL, plain, "ana", ca=cert)
    assert "TLS handshake" in str(failed.value)
    empty = tmp_path / "empty.pem"
    empty.write_text("no certificate here\n")
    with pytest.raises(chat.InvalidInput):
        chat.Client(LOCAL, tls, "ana", ca=empty)
    # The plain client on the TLS port is told so.
    with pytest.raises(chat.NameRefused) as refused:
        chat.Client(LOCAL, tls, "ana")
    assert refused.value.code == 400 and refused.value.text == "Se esperaba TLS"
