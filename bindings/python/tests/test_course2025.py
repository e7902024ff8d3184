"""Course 2025/26 (SPEC 8) from Python, against the real Rust server on 127.0.0.1: USERS,
SENDATTACH and its listener events, GETFILE between two clients, and its bad input."""

import os
import socket
import threading

import pytest

import cartero

LOCAL = "127.0.0.1"


@pytest.fixture
def server():
    with cartero.serve(0, codes="raw") as s:
        yield s


def test_users_sendattach_and_get_file(server, tmp_path):
    ana = cartero.Client(LOCAL, server.port)
    bob = cartero.Client(LOCAL, server.port)
    ana.register("ana", "ana")
    bob.register("bob", "bob")
    notes = tmp_path / "apuntes.bin"
    content = bytes(range(256)) * 2000
    notes.write_bytes(content)
    with ana.connect("ana", listen_host=LOCAL) as ana_inbox, bob.connect("bob", listen_host=LOCAL) as bob_inbox:
        assert bob.users("bob") == [("ana", LOCAL, ana_inbox.port), ("bob", LOCAL, bob_inbox.port)]
        assert ana.send("ana", "bob", "first") == 1
        assert ana.send_attach("ana", "bob", "mira", str(notes)) == 2
        assert next(bob_inbox) == cartero.Message("ana", 1, "first")
        assert next(bob_inbox) == cartero.AttachMessage("ana", 2, "mira", str(notes))
        assert next(ana_inbox) == cartero.Ack(1)
        assert next(ana_inbox) == cartero.AttachAck(2, str(notes))

        copy = tmp_path / "copia.bin"
        assert bob.get_file("ana", str(notes), copy) == len(content)
        assert copy.read_bytes() == content

        # Bad input: each a clear exception, and no file left behind.
        refused = tmp_path / "refused"
        for remote in ["/etc/passwd", "../..", str(tmp_path / "never.txt")]:
            with pytest.raises(cartero.FileTransferFailed, match="does not offer that file"):
                bob.get_file("ana", remote, refused)
        with pytest.raises(cartero.NotConnected):
            bob.get_file("ghost", str(notes), refused)
        with pytest.raises(cartero.FileTransferFailed):
            ana.get_file("bob", str(notes), refused)  # bob attached nothing
        with pytest.raises(cartero.UserNotFound):
            ana.send_attach("ana", "ghost", "x", str(notes))
        with pytest.raises(cartero.ServerError):
            ana.send_attach("ana", "bob", "x", "")
        with pytest.raises(cartero.InvalidField):
            ana.send_attach("ana", "bob", "x", "/" + "x" * 255)
        with pytest.raises(ValueError):
            bob.get_file("ana", str(notes), refused, form="carrier-pigeon")
        notes.unlink()
        with pytest.raises(cartero.FileTransferFailed):
            bob.get_file("ana", str(notes), refused)
        assert sorted(os.listdir(tmp_path)) == ["copia.bin"]
        ana.disconnect("ana")
        bob.disconnect("bob")
        with pytest.raises(cartero.NotConnected):
            bob.users("bob")


def test_get_file_from_a_listener_that_closes_mid_transfer(server, tmp_path):
    # A listener of another implementation, announcing 100 bytes and sending 10.
    listener = socket.socket()
    listener.bind((LOCAL, 0))
    listener.listen()
    port = listener.getsockname()[1]

    def serve_once():
        conn, _ = listener.accept()
        with conn:
            got = b""
            while got.count(b"\0") < 3:
                chunk = conn.recv(512)
                if not chunk:
                    break
                got += chunk
            conn.sendall(b"OK\x00100\x00only ten b")

    thread = threading.Thread(target=serve_once)
    thread.start()
    client = cartero.Client(LOCAL, server.port)
    client.register("bob", "bob")
    # The fake user is reached through the server's USERS: connect it at the fake's port.
    raw = socket.create_connection((LOCAL, server.port))
    raw.sendall(b"REGISTER\x00eve\x00")
    raw.shutdown(socket.SHUT_WR)
    assert raw.recv(16) == b"\x00"
    raw.close()
    raw = socket.create_connection((LOCAL, server.port))
    raw.sendall(b"CONNECT\x00eve\x00%d\x00" % port)
    raw.shutdown(socket.SHUT_WR)
    assert raw.recv(16) == b"\x00"
    raw.close()
    assert client.users("eve") == [("eve", LOCAL, port)]
    dest = tmp_path / "f"
    with pytest.raises(cartero.FileTransferFailed, match="cut short: 10 of 100"):
        client.get_file("eve", "/f", dest, requester="bob")
    thread.join(10)
    listener.close()
    assert os.listdir(tmp_path) == []
