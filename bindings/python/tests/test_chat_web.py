"""The chat's browser client (`cartero chat serve --web`) in real headless Chromium.

Two browser users and one TCP user exchange a broadcast, private messages and room messages,
see each other in the user list, see history on joining a room and a server error; then the
server restarts and the pages reconnect by themselves. A screenshot is saved as
target/artifacts/chat-web.png. Chromium and its driver come from Debian (`chromium`,
`chromium-driver`, installed by scripts/test.sh); nothing is downloaded at test time, and a
dead local proxy keeps the browser off every network but 127.0.0.1.
"""

import os
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest

LOCAL = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[3]
BIN = os.environ.get("CARTERO_BIN", str(ROOT / "target" / "debug" / "cartero"))
CHROMEDRIVER = "/usr/bin/chromedriver"
SHOT = ROOT / "target" / "artifacts" / "chat-web.png"
WAIT = 15
# Selenium Manager must never look for drivers or browsers on the network.
os.environ["SE_OFFLINE"] = "true"


def _missing():
    """Why the browser test cannot run here, or None."""
    if shutil.which("chromium") is None or not os.path.exists(CHROMEDRIVER):
        return "chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed in this Python (pip install selenium)"
    return None


@pytest.fixture(scope="module", autouse=True)
def browser_tools():
    why = _missing()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"in CI the browser test must run: {why}")
        pytest.skip(why)


class Server:
    """`cartero chat serve --web` on loopback; the same ports again after a restart."""

    def __init__(self, port=0, web=0):
        self.proc = subprocess.Popen(
            [BIN, "chat", "serve", "-p", str(port), "--bind", LOCAL, "--web", str(web), "--memory", "--max-per-ip", "0", "--rate", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith(f"s> init server {LOCAL}:"), line
        self.port = int(line.rsplit(":", 1)[1])
        line = self.proc.stdout.readline()
        assert line.startswith(f"s> init web http://{LOCAL}:"), line
        self.url = line.split(" ")[-1].strip()
        self.web = int(self.url.rstrip("/").rsplit(":", 1)[1])
        # Keep draining the log so the server never blocks on it.
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def stop(self):
        self.proc.send_signal(2)
        assert self.proc.wait(timeout=10) == 0


class Tcp:
    """A user on a framed TCP connection, reading line by line."""

    def __init__(self, port, name):
        self.sock = socket.create_connection((LOCAL, port), timeout=WAIT)
        self.buf = b""
        self.send(f"CONNECT|{name}")
        assert self.line() == "CONNECT_ACK|OK"

    def send(self, line):
        self.sock.sendall(line.encode() + b"\n")

    def line(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(4096)
            assert chunk, "the server closed the connection"
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def until(self, wanted):
        """Reads up to the line `wanted`; returns the lines before it."""
        seen = []
        while True:
            line = self.line()
            if line == wanted:
                return seen
            seen.append(line)

    def close(self):
        self.sock.close()


def browser(profile):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,700",
                f"--user-data-dir={profile}", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-default-apps",
                "--disable-domain-reliability", "--no-pings", "--dns-prefetch-disable",
                # Loopback bypasses the proxy; anything else meets a closed local port.
                "--proxy-server=http://127.0.0.1:9"]:
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def wait(driver, check, what):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT).until(lambda d: check(d), message=what)


def text_of(driver, selector):
    """textContent (also of hidden conversations)."""
    return driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;", selector)


def users(driver):
    return driver.execute_script(
        "return [...document.querySelectorAll('#users li')].map((li) => li.dataset.name);")


def login(driver, url, name):
    from selenium.webdriver.common.by import By

    driver.get(url)
    driver.find_element(By.ID, "name").send_keys(name)
    driver.find_element(By.ID, "enter").click()
    wait(driver, lambda d: text_of(d, "#status") == f"Conectado como {name}", f"{name} joins")


def say(driver, text):
    from selenium.webdriver.common.by import By

    box = driver.find_element(By.ID, "text")
    box.send_keys(text)
    driver.find_element(By.ID, "send").click()


def click_user(driver, name):
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, f'#users li[data-name="{name}"] button').click()


def in_log(driver, conv, text):
    return wait(driver, lambda d: text in (text_of(d, f'.log[data-conv="{conv}"]') or ""),
                f"{text!r} in {conv}")


def test_two_browsers_and_a_tcp_user_chat(tmp_path):
    from selenium.webdriver.common.by import By

    server = Server()
    drivers = []
    carlos = None
    try:
        ana = browser(tmp_path / "ana")
        drivers.append(ana)
        bea = browser(tmp_path / "bea")
        drivers.append(bea)
        login(ana, server.url, "ana")
        login(bea, server.url, "bea")
        carlos = Tcp(server.port, "carlos")
        for driver in (ana, bea):
            wait(driver, lambda d: users(d) == ["ana", "bea", "carlos"], "everyone in the user list")
        assert carlos.until("USER_LIST|ana,bea,carlos") == []

        # A broadcast from the browser reaches the other browser and the TCP user.
        say(ana, "hola a todos")
        in_log(bea, "*", "hola a todos")
        assert carlos.line() == "BROADCAST|ana|hola a todos"
        carlos.send("BROADCAST|hola desde la terminal")
        assert carlos.line() == "BROADCAST|carlos|hola desde la terminal"
        in_log(ana, "*", "hola desde la terminal")
        in_log(bea, "*", "hola desde la terminal")

        # Private messages: click a name.
        click_user(bea, "ana")
        say(bea, "hola ana, soy bea")
        in_log(ana, "@bea", "hola ana, soy bea")
        in_log(bea, "@ana", "hola ana, soy bea")
        click_user(ana, "carlos")
        say(ana, "hola carlos")
        assert carlos.until("MESSAGE|ana|hola carlos") == []
        carlos.send("MESSAGE|bea|psst")
        in_log(bea, "@carlos", "psst")

        # A room: history on joining, then messages to its members.
        ana.find_element(By.ID, "room-name").send_keys("#sala")
        ana.find_element(By.ID, "join").click()
        wait(ana, lambda d: text_of(d, "#members") == "Miembros: ana", "ana in #sala")
        say(ana, "primero en la sala")
        in_log(ana, "#sala", "primero en la sala")
        # bea finds the room in the list of rooms and joins it with a click.
        bea.find_element(By.ID, "list-rooms").click()
        wait(bea, lambda d: d.find_elements(By.CSS_SELECTOR, '#rooms li[data-room="#sala"] button'), "#sala listed")
        bea.find_element(By.CSS_SELECTOR, '#rooms li[data-room="#sala"] button').click()
        in_log(bea, "#sala", "primero en la sala")  # history on join
        carlos.send("JOIN|sala")
        assert carlos.line() == "ERROR|400|Nombre de sala no válido"
        carlos.send("JOIN|#sala")
        assert carlos.until("JOINED|#sala|ana,bea,carlos") == []
        say(bea, "hola sala")
        in_log(ana, "#sala", "hola sala")
        assert carlos.until("ROOM|#sala|bea|hola sala") == []
        carlos.send("ROOM|#sala|hola desde tcp")
        in_log(ana, "#sala", "hola desde tcp")
        in_log(bea, "#sala", "hola desde tcp")

        # Errors show: a private message to a user who left.
        click_user(bea, "carlos")
        carlos.send("DISCONNECT")
        carlos.close()
        carlos = None
        wait(bea, lambda d: users(d) == ["ana", "bea"], "carlos leaves the list")
        say(bea, "sigues ahí?")
        wait(bea, lambda d: text_of(d, "#error") == "Error 404: Usuario no encontrado", "the 404 shows")

        ana.find_element(By.CSS_SELECTOR, '#tabs [data-conv="#sala"]').click()
        SHOT.parent.mkdir(parents=True, exist_ok=True)
        assert ana.save_screenshot(str(SHOT))
        print(f"screenshot: {SHOT}")

        # The server goes away and comes back on the same ports: the pages reconnect,
        # join again under their names and rejoin their rooms.
        port, web = server.port, server.web
        server.stop()
        wait(ana, lambda d: text_of(d, "#status") != "Conectado como ana", "ana sees the server go")
        server = Server(port, web)
        for driver, name in ((ana, "ana"), (bea, "bea")):
            wait(driver, lambda d: text_of(d, "#status") == f"Conectado como {name}", f"{name} reconnects")
        for driver in (ana, bea):
            wait(driver, lambda d: sorted(users(d)) == ["ana", "bea"], "both back in the user list")
        dan = Tcp(server.port, "dan")
        dan.send("JOIN|#sala")
        line = dan.line()
        while not line.startswith("JOINED|#sala|"):
            line = dan.line()
        assert sorted(line.split("|")[2].split(",")) == ["ana", "bea", "dan"], line
        dan.close()
    finally:
        for driver in drivers:
            driver.quit()
        if carlos is not None:
            carlos.close()
        server.stop()
