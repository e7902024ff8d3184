#!/usr/bin/env python3
"""The course's console client (SPEC 6, seed 000's form) on the cartero module.

    python examples/python/client.py -s localhost -p 8888

Same commands and output lines as `cartero client`: REGISTER <alias> [<DD/MM/YYYY> [<full
name>]], UNREGISTER <alias>, CONNECT <alias>, DISCONNECT <alias>, SEND <alias> <message>,
CONNECTEDUSERS, QUIT. Causes of failures go to standard error. With --normalizer <url>, every
message goes through the web service of part 2 before SEND.
"""

import argparse
import sys
import threading

import cartero


def push_text(push):
    """The lines a push prints (SPEC 6)."""
    if isinstance(push, cartero.Ack):
        return f"s> SEND MESSAGE {push.id} OK"
    return f"s> MESSAGE {push.id} FROM {push.sender}\n   {push.body}\n   END"


def cause(error):
    print(f"cartero: {error}", file=sys.stderr)


class Session:
    """One user's session with a server; each command returns the line SPEC 6 prints.
    Pushes go to `printer` from the listener's thread."""

    def __init__(self, host, port, printer, normalizer=None):
        self.client = cartero.Client(host, port, normalizer=normalizer)
        self.printer = printer
        self.user = None  # the alias last registered or connected: SEND's sender
        self.connected = None
        self.listener = None
        self.thread = None

    def register(self, alias, birth_date=None, full_name=None):
        try:
            self.client.register(full_name or alias, alias, birth_date)
            self.user = alias
            return "s> REGISTER OK"
        except cartero.AliasInUse:
            return "s> USERNAME IN USE"
        except cartero.Error as e:
            cause(e)
            return "s> REGISTER FAIL"

    def unregister(self, alias):
        try:
            self.client.unregister(alias)
            if self.user == alias:
                self.user = None
            return "s> UNREGISTER OK"
        except cartero.UserNotFound:
            return "s> USER DOES NOT EXIST"
        except cartero.Error as e:
            cause(e)
            return "s> UNREGISTER FAIL"

    def connect(self, alias):
        if self.listener is not None:
            cause(f"{self.connected} is already connected from this client; DISCONNECT {self.connected} first")
            return "s> CONNECT FAIL"
        try:
            self.listener = self.client.connect(alias)
        except cartero.UserNotFound:
            return "s> CONNECT FAIL, USER DOES NOT EXIST"
        except cartero.AlreadyConnected:
            return "s> USER ALREADY CONNECTED"
        except cartero.Error as e:
            cause(e)
            return "s> CONNECT FAIL"
        self.connected = self.user = alias
        self.thread = threading.Thread(target=self._print_pushes, args=(self.listener,), daemon=True)
        self.thread.start()
        return "s> CONNECT OK"

    def _print_pushes(self, listener):
        for push in listener:
            self.printer(push_text(push))

    def _stop_listener(self):
        if self.listener is not None:
            self.listener.close()
            self.thread.join()
            self.listener = self.thread = self.connected = None

    def disconnect(self, alias):
        try:
            self.client.disconnect(alias)
            line = "s> DISCONNECT OK"
        except cartero.UserNotFound:
            line = "s> DISCONNECT FAIL / USER DOES NOT EXIST"
        except cartero.NotConnected:
            line = "s> DISCONNECT FAIL / USER NOT CONNECTED"
        except cartero.Error as e:
            cause(e)
            line = "s> DISCONNECT FAIL"
        if self.connected == alias:  # the listener stops whatever the server answered
            self._stop_listener()
        return line

    def send(self, recipient, message):
        if self.user is None:
            cause("SEND needs a user: REGISTER or CONNECT first")
            return "s> SEND FAIL"
        try:
            return f"s> SEND OK - MESSAGE {self.client.send(self.user, recipient, message)}"
        except cartero.UserNotFound:
            return "s> SEND FAIL / USER DOES NOT EXIST"
        except cartero.Error as e:
            cause(e)
            return "s> SEND FAIL"

    def connected_users(self):
        try:
            users = self.client.connected_users(self.user)
            return f"s> CONNECTED USERS ({len(users)} users connected) OK - {', '.join(users)}"
        except cartero.NotConnected:
            return "s> CONNECTED USERS FAIL / USER IS NOT CONNECTED"
        except cartero.Error as e:
            cause(e)
            return "s> CONNECTED USERS FAIL"

    def close(self):
        """At the end: a connected user is disconnected first."""
        if self.connected is not None:
            self.printer(self.disconnect(self.connected))


USAGE = {
    "REGISTER": "REGISTER <alias> [<DD/MM/YYYY> [<full name>]]",
    "UNREGISTER": "UNREGISTER <alias>",
    "CONNECT": "CONNECT <alias>",
    "DISCONNECT": "DISCONNECT <alias>",
    "SEND": "SEND <alias> <message>",
    "CONNECTEDUSERS": "CONNECTEDUSERS",
    "QUIT": "QUIT",
}


def command(session, line):
    """Runs one command line; returns False when the client should end."""
    words = line.split()
    if not words:
        return True
    name, args = words[0].upper(), words[1:]
    if name == "REGISTER" and args:
        session.printer(session.register(args[0], args[1] if len(args) > 1 else None, " ".join(args[2:]) or None))
    elif name == "UNREGISTER" and len(args) == 1:
        session.printer(session.unregister(args[0]))
    elif name == "CONNECT" and len(args) == 1:
        session.printer(session.connect(args[0]))
    elif name == "DISCONNECT" and len(args) == 1:
        session.printer(session.disconnect(args[0]))
    elif name == "SEND" and len(args) >= 2:
        message = line.strip()[len(words[0]):].strip()[len(args[0]):].strip()
        if len(message.encode()) > 255:
            cause(f"the message has {len(message.encode())} bytes; at most 255 fit")
            session.printer("s> SEND FAIL")
        else:
            session.printer(session.send(args[0], message))
    elif name == "CONNECTEDUSERS" and not args:
        session.printer(session.connected_users())
    elif name == "QUIT" and not args:
        if session.connected is None:
            return False
        cause(f"QUIT refused: {session.connected} is connected; DISCONNECT {session.connected} first")
    elif name in USAGE:
        cause(f"usage: {USAGE[name]}")
    else:
        cause(f"unknown command {words[0]!r}; commands: {', '.join(USAGE)}")
    return True


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-s", "--server", required=True, help="the server: a name or a dotted address")
    parser.add_argument("-p", "--port", required=True, type=int, help="the server's port")
    parser.add_argument("--normalizer", help="the web service every message goes through, e.g. http://127.0.0.1:8000")
    args = parser.parse_args(argv)
    lock = threading.Lock()

    def printer(text):
        with lock:
            print(text, flush=True)

    session = Session(args.server, args.port, printer, args.normalizer)
    interactive = sys.stdin.isatty()
    try:
        while True:
            try:
                line = input("c> ") if interactive else sys.stdin.readline()
            except EOFError:
                break
            if not interactive and line == "":
                break
            if not command(session, line):
                return 0
    except KeyboardInterrupt:
        pass
    session.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
