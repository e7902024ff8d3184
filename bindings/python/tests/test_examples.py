"""The Python examples: the console client's exact lines, and the window under Xvfb."""

import os
import shutil
import subprocess
import sys
import time

import pytest

import cartero

LOCAL = "127.0.0.1"
EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "..", "examples", "python")


class Console:
    """examples/python/client.py as a process fed line by line."""

    def __init__(self, port):
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(EXAMPLES, "client.py"), "-s", LOCAL, "-p", str(port)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)

    def type(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def expect(self, *lines):
        for want in lines:
            got = self.proc.stdout.readline().rstrip("\n")
            assert got == want

    def finish(self):
        out, err = self.proc.communicate(timeout=20)
        return self.proc.returncode, out, err


def test_the_python_console_client_prints_the_spec_lines():
    with cartero.serve(0) as server:
        bob = Console(server.port)
        bob.type("REGISTER bob")
        bob.type("CONNECT bob")
        bob.expect("s> REGISTER OK", "s> CONNECT OK")
        ana = Console(server.port)
        for command, expected in [
            ("REGISTER ana 01/02/2000 Ana Lopez", "s> REGISTER OK"),
            ("register ana", "s> USERNAME IN USE"),
            ("UNREGISTER ghost", "s> USER DOES NOT EXIST"),
            ("CONNECT ghost", "s> CONNECT FAIL, USER DOES NOT EXIST"),
            ("CONNECT bob", "s> USER ALREADY CONNECTED"),
            ("DISCONNECT ana", "s> DISCONNECT FAIL / USER NOT CONNECTED"),
            ("CONNECTEDUSERS", "s> CONNECTED USERS FAIL / USER IS NOT CONNECTED"),
            ("CONNECT ana", "s> CONNECT OK"),
            ("SEND ghost hola", "s> SEND FAIL / USER DOES NOT EXIST"),
            ("SEND bob hola   bob", "s> SEND OK - MESSAGE 1"),
        ]:
            ana.type(command)
            ana.expect(expected)
        bob.expect("s> MESSAGE 1 FROM ana", "   hola   bob", "   END")
        ana.expect("s> SEND MESSAGE 1 OK")
        ana.type("CONNECTEDUSERS")
        ana.expect("s> CONNECTED USERS (2 users connected) OK - bob, ana")
        ana.type("QUIT")
        ana.type("DISCONNECT ana")
        ana.expect("s> DISCONNECT OK")
        ana.type("QUIT")
        code, rest, err = ana.finish()
        assert (code, rest) == (0, "")
        assert "QUIT refused: ana is connected" in err
        code, rest, err = bob.finish()
        assert (code, rest) == (0, "s> DISCONNECT OK\n"), err


def test_the_python_console_client_against_a_server_that_is_down():
    import socket
    with socket.socket() as s:
        s.bind((LOCAL, 0))
        port = s.getsockname()[1]
    client = Console(port)
    for command, expected in [("REGISTER ana", "s> REGISTER FAIL"), ("CONNECT ana", "s> CONNECT FAIL"),
                              ("SEND bob hi", "s> SEND FAIL")]:
        client.type(command)
        client.expect(expected)
    code, _, err = client.finish()
    assert code == 0
    assert "cannot reach the server" in err and "Traceback" not in err


@pytest.fixture
def display():
    """A private Xvfb display for the window."""
    xvfb = shutil.which("Xvfb")
    assert xvfb, "Xvfb is needed for the window test (the test command installs it: apt-get install xvfb)"
    number = 90 + os.getpid() % 100
    proc = subprocess.Popen([xvfb, f":{number}", "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    previous = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = f":{number}"
    deadline = time.monotonic() + 10
    while not os.path.exists(f"/tmp/.X11-unix/X{number}") and time.monotonic() < deadline:
        time.sleep(0.05)
    yield
    proc.terminate()
    proc.wait(timeout=10)
    if previous is None:
        os.environ.pop("DISPLAY", None)
    else:
        os.environ["DISPLAY"] = previous


def test_the_window_registers_connects_sends_and_shows_pushes(display):
    sys.path.insert(0, EXAMPLES)
    import tkinter as tk

    import gui_client

    with cartero.serve(0) as server:
        root = tk.Tk()
        app = gui_client.App(root, LOCAL, server.port)

        def pane(widget):
            root.update()
            return widget.get("1.0", "end").rstrip("\n").splitlines()

        def until(pred, what):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if pred():
                    return
                root.update()
                time.sleep(0.02)
            raise AssertionError(f"never saw {what}: {pane(app.server_pane)}")

        for key, value in [("full_name", "Ana Lopez"), ("alias", "ana"), ("birth_date", "01/02/2000"),
                           ("dest", "bob"), ("message", "hola desde la ventana")]:
            app.entries[key].insert(0, value)
        bob = cartero.Client(LOCAL, server.port)
        bob.register("Bob", "bob", "01/01/2000")
        with bob.connect("bob", listen_host=LOCAL) as bob_inbox:
            app.buttons["REGISTER"].invoke()
            app.buttons["CONNECT"].invoke()
            app.buttons["SEND"].invoke()
            app.buttons["CONNECTED USERS"].invoke()
            assert pane(app.server_pane)[:4] == ["s> REGISTER OK", "s> CONNECT OK", "s> SEND OK - MESSAGE 1",
                                                 "s> CONNECTED USERS (2 users connected) OK - bob, ana"]
            assert pane(app.client_pane)[:3] == ["c> REGISTER ana", "c> CONNECT ana", "c> SEND bob hola desde la ventana"]
            assert next(bob_inbox) == cartero.Message("ana", 1, "hola desde la ventana")
            until(lambda: "s> SEND MESSAGE 1 OK" in pane(app.server_pane), "the acknowledgement")
            assert bob.send("bob", "ana", "y desde bob") == 1
            until(lambda: "s> MESSAGE 1 FROM bob" in pane(app.server_pane), "bob's message")
            app.buttons["QUIT"].invoke()  # refused while connected
            assert "QUIT refused" in pane(app.client_pane)[-1]
            app.buttons["DISCONNECT"].invoke()
            assert pane(app.server_pane)[-1] == "s> DISCONNECT OK"
        root.destroy()
