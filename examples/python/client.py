#!/usr/bin/env python3
"""The course's console client (SPEC 6, seed 000's form, SPEC 8) on the cartero module.

    python examples/python/client.py -s localhost -p 8888 [--course 2022|2025]

Same commands and output lines as `cartero client`: REGISTER <alias> [<DD/MM/YYYY> [<full
name>]], UNREGISTER <alias>, CONNECT <alias>, DISCONNECT <alias>, SEND <alias> <message>,
CONNECTEDUSERS, and of the 2025/26 course SENDATTACH <alias> <message> <file>, USERS and
GETFILE <alias> <remote file> <local file>; QUIT. Causes of failures go to standard error.
With --normalizer <url>, every message goes through the web service of part 2 before SEND.
--course 2025 prints that year's result lines ("FAIL, USER ..." for "FAIL / USER ...").
"""

import argparse
import os
import sys
import threading

import cartero


def push_text(push):
    """The lines a push prints (SPEC 6)."""
    if isinstance(push, cartero.Ack):
        return f"s> SEND MESSAGE {push.id} OK"
    if isinstance(push, cartero.AttachAck):
        return f"s> SENDATTACH MESSAGE {push.id} {push.file} OK"
    if isinstance(push, cartero.AttachMessage):
        return f"s> MESSAGE {push.id} FROM {push.sender}\n   {push.body}\n   END\n   FILE {push.file}"
    return f"s> MESSAGE {push.id} FROM {push.sender}\n   {push.body}\n   END"


def cause(error):
    print(f"cartero: {error}", file=sys.stderr)


class Session:
    """One user's session with a server; each command returns the line SPEC 6 prints.
    Pushes go to `printer` from the listener's thread."""

    def __init__(self, host, port, printer, normalizer=None, course="2022"):
        self.client = cartero.Client(host, port, normalizer=normalizer)
        self.sep = ", " if course == "2025" else " / "  # the year's result lines
        self.printer = printer
        self.user = None  # the alias last registered or connected: SEND's sender
        self.connected = None
        self.listener = None
        self.thread = None
        # Held from a SEND's request to its printed reply, so that its acknowledgement (a push
        # the listener may get first) never prints above the reply.
        self.replying = threading.Lock()

    def register(self, alias, birth_date=None, full_name=None):
        try:
            self.client.register(full_name or alias, alias, birth_date)
            self.user = alias
            return "s> REGISTER OK"
        except cartero.AliasInUse:
            return "s> USERNAME IN USE"
        except cartero.Error as e:
            cause(e)
            # The short form against a server that waits for the statement's three fields:
            # it answers 2, or does not answer in time.
            if birth_date is None and (isinstance(e, cartero.ServerError) or "did not answer" in str(e)):
                cause("this server may need REGISTER <alias> <DD/MM/YYYY> [name]")
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
            return "s> USER ALREADY CONNECTED"  # the statement's line for this situation
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
            with self.replying:
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
            line = f"s> DISCONNECT FAIL{self.sep}USER DOES NOT EXIST"
        except cartero.NotConnected:
            line = f"s> DISCONNECT FAIL{self.sep}USER NOT CONNECTED"
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
            return f"s> SEND FAIL{self.sep}USER DOES NOT EXIST"
        except cartero.Error as e:
            cause(e)
            return "s> SEND FAIL"

    def send_attach(self, recipient, message, file):
        """SENDATTACH (SPEC 8); the file is then offered to the recipient's GETFILE."""
        if self.user is None:
            cause("SENDATTACH needs a user: REGISTER or CONNECT first")
            return "s> SENDATTACH FAIL"
        if not os.path.isabs(file):
            cause(f"{file!r} is not an absolute path (the statement asks for one); it is sent as is")
        try:
            return f"s> SENDATTACH OK - MESSAGE {self.client.send_attach(self.user, recipient, message, file)}"
        except cartero.UserNotFound:
            return "s> SENDATTACH FAIL, USER DOES NOT EXIST"
        except cartero.Error as e:
            cause(e)
            return "s> SENDATTACH FAIL"

    def users(self):
        """USERS (SPEC 8): the result line, then one name per line."""
        try:
            users = self.client.users(self.user)
        except cartero.NotConnected:
            return f"s> CONNECTED USERS FAIL{self.sep}USER IS NOT CONNECTED"
        except cartero.Error as e:
            cause(e)
            return "s> CONNECTED USERS FAIL"
        return "\n".join([f"s> CONNECTED USERS ({len(users)} users connected) OK"] + [u[0] for u in users])

    def get_file(self, user, remote, local):
        """GETFILE (SPEC 8): the file from the other user's listener."""
        if self.user is None:
            cause("GETFILE needs a user: REGISTER or CONNECT first")
            return "c> FILE TRANSFER FAILED"
        try:
            self.client.get_file(user, remote, local, requester=self.user)
            return "c> FILE TRANSFER OK"
        except cartero.NotConnected:
            return "c> FILE TRANSFER FAILED, user not connected."
        except cartero.Error as e:
            cause(f"{e}; no file was written to {local}")
            return "c> FILE TRANSFER FAILED"

    def connected_users(self):
        try:
            users = self.client.connected_users(self.user)
            return f"s> CONNECTED USERS ({len(users)} users connected) OK - {', '.join(users)}"
        except cartero.NotConnected:
            return f"s> CONNECTED USERS FAIL{self.sep}USER IS NOT CONNECTED"
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
    "SENDATTACH": "SENDATTACH <alias> <message> <absolute file name>",
    "USERS": "USERS",
    "GETFILE": "GETFILE <alias> <remote file> <local file>",
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
            with session.replying:
                session.printer(session.send(args[0], message))
    elif name == "SENDATTACH" and len(args) >= 3:
        # SPEC 8: the file is the last word, the message what lies between (quotes dropped).
        after = line.strip()[len(words[0]):].strip()[len(args[0]):].strip()
        message = after[: len(after) - len(args[-1])].strip()
        if len(message) >= 2 and message[0] == message[-1] and message[0] in "\"'":
            message = message[1:-1]
        if len(message.encode()) > 255 or len(args[-1].encode()) > 255:
            cause("the message and the file name hold at most 255 bytes each")
            session.printer("s> SENDATTACH FAIL")
        else:
            with session.replying:
                session.printer(session.send_attach(args[0], message, args[-1]))
    elif name == "USERS" and not args:
        session.printer(session.users())
    elif name == "GETFILE" and len(args) == 3:
        session.printer(session.get_file(*args))
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
    parser.add_argument("--course", choices=["2022", "2025"], default="2022", help="which year's result lines")
    args = parser.parse_args(argv)
    lock = threading.Lock()

    def printer(text):
        with lock:
            print(text, flush=True)

    session = Session(args.server, args.port, printer, args.normalizer, args.course)
    try:
        while True:
            try:
                # The prompt is printed from a pipe too, as the course's clients do.
                line = input("c> ")
            except EOFError:
                break
            if not command(session, line):
                return 0
    except KeyboardInterrupt:
        pass
    session.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
