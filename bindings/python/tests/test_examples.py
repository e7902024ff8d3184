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


def without_prompts(line):
    """The line without the `c> ` prompts printed before it (kept before a client's own
    `c> FILE TRANSFER ...` line)."""
    while line.startswith("c> ") and (line[3:] == "" or line[3:].startswith(("c> ", "s> "))):
        line = line[3:]
    return line


class Console:
    """examples/python/client.py as a process fed line by line."""

    def __init__(self, port, *extra):
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(EXAMPLES, "client.py"), "-s", LOCAL, "-p", str(port), *extra],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)

    def type(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def expect(self, *lines):
        for want in lines:
            raw = self.proc.stdout.readline()
            while raw and without_prompts(raw.rstrip("\n")) == "":
                raw = self.proc.stdout.readline()
            assert without_prompts(raw.rstrip("\n")) == want

    def finish(self):
        out, err = self.proc.communicate(timeout=20)
        lines = [line for line in map(without_prompts, out.splitlines()) if line]
        return self.proc.returncode, "".join(line + "\n" for line in lines), err


def test_the_python_console_client_prints_the_prompt_from_a_pipe():
    with cartero.serve(0) as server:
        out = subprocess.run(
            [sys.executable, os.path.join(EXAMPLES, "client.py"), "-s", LOCAL, "-p", str(server.port)],
            input="REGISTER piped\nFOO\nQUIT\n", capture_output=True, text=True, timeout=20)
        assert out.stdout == "c> s> REGISTER OK\nc> c> "


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
            ("CONNECT ana", "s> USER ALREADY CONNECTED"),  # refused by the client itself
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


def test_the_python_console_client_prints_the_course_2025_lines(tmp_path):
    notes = tmp_path / "apuntes.txt"
    notes.write_text("tema 1\ntema 2\n")
    copy = tmp_path / "copia.txt"
    refused = tmp_path / "refused.txt"
    with cartero.serve(0, codes="raw") as server:
        bob = Console(server.port, "--course", "2025")
        ana = Console(server.port, "--course", "2025")
        for who in [bob, ana]:
            name = "bob" if who is bob else "ana"
            who.type(f"REGISTER {name}")
            who.type(f"CONNECT {name}")
            who.expect("s> REGISTER OK", "s> CONNECT OK")
        for command, expected in [
            ("SEND ghost hola", "s> SEND FAIL, USER DOES NOT EXIST"),
            ("SENDATTACH ghost hola /tmp/x", "s> SENDATTACH FAIL, USER DOES NOT EXIST"),
            (f'SENDATTACH bob "mira los apuntes" {notes}', "s> SENDATTACH OK - MESSAGE 1"),
        ]:
            ana.type(command)
            ana.expect(expected)
        bob.expect("s> MESSAGE 1 FROM ana", "   mira los apuntes", "   END", f"   FILE {notes}")
        ana.expect(f"s> SENDATTACH MESSAGE 1 {notes} OK")
        bob.type("USERS")
        bob.expect("s> CONNECTED USERS (2 users connected) OK", "bob", "ana")
        bob.type(f"GETFILE ana {notes} {copy}")
        bob.expect("c> FILE TRANSFER OK")
        assert copy.read_text() == "tema 1\ntema 2\n"
        for remote in ["/etc/passwd", "../.."]:
            bob.type(f"GETFILE ana {remote} {refused}")
            bob.expect("c> FILE TRANSFER FAILED")
        bob.type(f"GETFILE ghost {notes} {refused}")
        bob.expect("c> FILE TRANSFER FAILED, user not connected.")
        assert not refused.exists()
        ana.type("SENDATTACH bob hola notes.txt")
        ana.expect("s> SENDATTACH OK - MESSAGE 2", "s> SENDATTACH MESSAGE 2 notes.txt OK")
        ana.type("DISCONNECT ghost")
        ana.expect("s> DISCONNECT FAIL, USER DOES NOT EXIST")
        code, _, err = ana.finish()
        assert code == 0 and "'notes.txt' is not an absolute path" in err, err
        code, _, err = bob.finish()
        assert code == 0 and "does not offer that file" in err and "Traceback" not in err, err


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


def test_the_window_registers_connects_sends_and_shows_pushes(display, tmp_path):
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
            # Course 2025/26: SENDATTACH, USERS, and bob fetching the attached file.
            notes = tmp_path / "apuntes.txt"
            notes.write_text("desde la ventana")
            app.entries["file"].insert(0, str(notes))
            app.buttons["SENDATTACH"].invoke()
            assert pane(app.server_pane)[-1] == "s> SENDATTACH OK - MESSAGE 2"
            assert next(bob_inbox) == cartero.Ack(1)  # of bob's message to ana
            assert next(bob_inbox) == cartero.AttachMessage("ana", 2, "hola desde la ventana", str(notes))
            until(lambda: f"s> SENDATTACH MESSAGE 2 {notes} OK" in pane(app.server_pane), "the attach ack")
            app.buttons["USERS"].invoke()
            assert pane(app.server_pane)[-3:] == ["s> CONNECTED USERS (2 users connected) OK", "bob", "ana"]
            assert bob.get_file("ana", str(notes), tmp_path / "copia.txt", requester="bob") == 16
            app.entries["local"].insert(0, str(tmp_path / "nada.txt"))
            app.buttons["GETFILE"].invoke()  # bob attached nothing
            assert pane(app.server_pane)[-1] == "c> FILE TRANSFER FAILED"
            assert not (tmp_path / "nada.txt").exists()
            app.buttons["QUIT"].invoke()  # refused while connected
            assert "QUIT refused" in pane(app.client_pane)[-1]
            app.buttons["DISCONNECT"].invoke()
            assert pane(app.server_pane)[-1] == "s> DISCONNECT OK"
        root.destroy()


def test_rerunning_the_python_console_client_is_handled():
    with cartero.serve(0) as server:
        for expected in ["c> s> REGISTER OK\nc> ", "c> s> USERNAME IN USE\nc> "]:
            out = subprocess.run(
                [sys.executable, os.path.join(EXAMPLES, "client.py"), "-s", LOCAL, "-p", str(server.port)],
                input="REGISTER again\n", capture_output=True, text=True, timeout=20)
            assert (out.returncode, out.stdout) == (0, expected) and "Traceback" not in out.stderr, out.stderr
