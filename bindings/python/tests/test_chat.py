"""cartero.chat from Python, against `cartero chat serve` started on 127.0.0.1."""

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import cartero
from cartero import chat

LOCAL = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[3]
BIN = os.environ.get("CARTERO_BIN", str(ROOT / "target" / "debug" / "cartero"))


@pytest.fixture
def port():
    """`cartero chat serve` on a free port, stopped with SIGINT after the test."""
    # History in memory, no per-address limits (every test client comes from 127.0.0.1).
    proc = subprocess.Popen([BIN, "chat", "serve", "-p", "0", "--bind", LOCAL,
                             "--memory", "--max-per-ip", "0", "--rate", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    assert line.startswith(f"s> init server {LOCAL}:"), line
    # Keep draining the log so the server never blocks on it.
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    yield int(line.rsplit(":", 1)[1])
    proc.send_signal(2)
    assert proc.wait(timeout=10) == 0


def events(client, n, timeout=5.0):
    got = []
    while len(got) < n:
        event = client.recv(timeout)
        assert event is not None, f"only {got}"
        got.append(event)
    return got


def until_list(client, users):
    """Skips user lists until `users` (an unsent list is replaced by a newer one)."""
    while True:
        event = client.recv(5.0)
        assert isinstance(event, chat.UserList), event
        if event.users == users:
            return


def test_join_message_broadcast_and_leave(port):
    with chat.Client(LOCAL, port, "ana") as ana, chat.Client(LOCAL, port, "bob") as bob:
        assert ana.name == "ana"
        until_list(ana, ["ana", "bob"])
        assert events(bob, 1) == [chat.UserList(["ana", "bob"])]
        bob.send("ana", "hola | ana")
        assert ana.recv(5.0) == chat.Message("bob", "hola | ana")
        bob.send("nadie", "x")
        assert bob.recv(5.0) == chat.ServerError(404, "Usuario no encontrado")
        ana.broadcast("a todos")
        assert ana.recv(5.0) == chat.Broadcast("ana", "a todos")
        assert bob.recv(5.0) == chat.Broadcast("ana", "a todos")
        bob.disconnect()
        assert list(bob.events(timeout=5.0)) == []  # the server closed it
        with pytest.raises(chat.Closed):
            bob.recv(1.0)
        assert ana.recv(5.0) == chat.UserList(["ana"])
        assert ana.recv(0.2) is None
        assert list(ana.events(timeout=0.2)) == []


def test_rooms_and_history(port):
    with chat.Client(LOCAL, port, "ana") as ana, chat.Client(LOCAL, port, "bob") as bob:
        until_list(ana, ["ana", "bob"])
        until_list(bob, ["ana", "bob"])
        ana.join("#sala")
        assert ana.recv(5.0) == chat.Joined("#sala", ["ana"])
        bob.join("#sala")
        assert ana.recv(5.0) == chat.Joined("#sala", ["ana", "bob"])
        assert bob.recv(5.0) == chat.Joined("#sala", ["ana", "bob"])
        bob.room("#sala", "hola | sala")
        assert ana.recv(5.0) == chat.RoomMessage("#sala", "bob", "hola | sala")
        assert bob.recv(5.0) == chat.RoomMessage("#sala", "bob", "hola | sala")
        ana.room("#otra", "x")
        assert ana.recv(5.0) == chat.ServerError(403, "No eres miembro de la sala")
        ana.rooms()
        assert ana.recv(5.0) == chat.RoomList(["#sala"])
        before = int(time.time() * 1000)
        ana.history("#sala", 1_000_000_000)
        entry = ana.recv(5.0)
        assert isinstance(entry, chat.HistoryEntry), entry
        assert (entry.target, entry.sender, entry.content) == ("#sala", "bob", "hola | sala")
        assert before - 60_000 <= entry.millis <= before
        assert ana.recv(5.0) == chat.HistoryEnd("#sala")
        ana.history("*", 0)
        assert ana.recv(5.0) == chat.HistoryEnd("*")
        with pytest.raises(chat.InvalidInput):
            ana.history("*", -1)
        bob.part("#sala")
        assert bob.recv(5.0) == chat.Parted("#sala", "bob")
        assert ana.recv(5.0) == chat.Parted("#sala", "bob")


def test_typed_exceptions(port):
    with chat.Client(LOCAL, port, "ana"):
        with pytest.raises(chat.NameRefused) as taken:
            chat.Client(LOCAL, port, "ana")
        assert taken.value.code == 409 and taken.value.text == "Nombre en uso"
        assert isinstance(taken.value, cartero.Error)
    with pytest.raises(chat.InvalidInput):
        chat.Client(LOCAL, port, "a b")
    with chat.Client(LOCAL, port, "eva") as eva:
        with pytest.raises(chat.InvalidInput):
            eva.broadcast("x" * 2000)
        with pytest.raises(ValueError):
            eva.broadcast("dos\nlíneas")
    with socket.socket() as s:
        s.bind((LOCAL, 0))
        free = s.getsockname()[1]
    with pytest.raises(chat.ConnectionFailed) as failed:
        chat.Client(LOCAL, free, "ana", timeout=1.0)
    assert isinstance(failed.value, ConnectionError)


def test_waiting_releases_the_gil(port):
    with chat.Client(LOCAL, port, "ana") as ana, chat.Client(LOCAL, port, "bob") as bob:
        until_list(ana, ["ana", "bob"])
        events(bob, 1)
        got = []
        waiter = threading.Thread(target=lambda: got.append(bob.recv(10.0)))
        waiter.start()
        # Python keeps running while bob waits: this thread counts and then sends.
        count = sum(1 for _ in range(100_000))
        ana.send("bob", f"contado {count}")
        waiter.join(10)
        assert got == [chat.Message("ana", "contado 100000")]


def test_example_console_over_a_pipe(port):
    example = ROOT / "examples" / "python" / "chat_client.py"
    with chat.Client(LOCAL, port, "bob") as bob:
        events(bob, 1)
        proc = subprocess.run([sys.executable, str(example), "-s", LOCAL, "-p", str(port), "-n", "ana"],
                              input="hola a todos\n@bob privado\n/users\n/logout\n",
                              capture_output=True, text=True, timeout=20)
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.splitlines()
        assert lines[0] == "Conectado exitosamente"
        assert "Usuarios conectados: bob, ana" in lines
        assert "Broadcast de ana: hola a todos" in lines
        assert lines[-1] == "Desconectado del servidor"
        assert chat.Broadcast("ana", "hola a todos") in events(bob, 3)
