#!/usr/bin/env python3
"""The course's client window (2022/23, and 2025/26's SENDATTACH, USERS and GETFILE), in
tkinter, on the cartero module.

    python examples/python/gui_client.py -s localhost -p 8888 [--course 2022|2025]

Buttons REGISTER, UNREGISTER, CONNECT, DISCONNECT, CONNECTED USERS, SEND, SENDATTACH, USERS,
GETFILE and QUIT act on the fields above them (SENDATTACH sends Message with File; GETFILE
fetches Dest's File into Local file); the left pane shows what the user did ("c> ..."), the
right pane what the server answered and pushed ("s> ..."), in the same words as the console
client.
"""

import argparse
import os
import queue
import sys
import tkinter as tk

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from client import Session  # noqa: E402  (the console client's session, shared)

FIELDS = [("full_name", "Full name"), ("alias", "Alias"), ("birth_date", "Birth date (DD/MM/YYYY)"),
          ("dest", "Dest"), ("message", "Message"), ("file", "File (absolute path)"), ("local", "Local file")]
BUTTONS = ["REGISTER", "UNREGISTER", "CONNECT", "DISCONNECT", "CONNECTED USERS", "SEND", "SENDATTACH", "USERS",
           "GETFILE", "QUIT"]


class App:
    def __init__(self, root, host, port, course="2022"):
        self.root = root
        self.pushes = queue.Queue()  # filled by the listener's thread, drained by Tk's
        self.session = Session(host, port, self.pushes.put, course=course)
        root.title(f"cartero client - {host}:{port}")
        form = tk.Frame(root)
        form.pack(fill="x", padx=8, pady=8)
        self.entries = {}
        for row, (key, label) in enumerate(FIELDS):
            tk.Label(form, text=label).grid(row=row, column=0, sticky="w")
            entry = tk.Entry(form, width=40)
            entry.grid(row=row, column=1, sticky="we")
            self.entries[key] = entry
        bar = tk.Frame(root)
        bar.pack(fill="x", padx=8)
        self.buttons = {}
        for label in BUTTONS:
            button = tk.Button(bar, text=label, command=getattr(self, "on_" + label.lower().replace(" ", "_")))
            button.pack(side="left", padx=2)
            self.buttons[label] = button
        panes = tk.Frame(root)
        panes.pack(fill="both", expand=True, padx=8, pady=8)
        self.client_pane = tk.Text(panes, width=45, height=16)
        self.server_pane = tk.Text(panes, width=45, height=16)
        self.client_pane.pack(side="left", fill="both", expand=True)
        self.server_pane.pack(side="left", fill="both", expand=True)
        root.protocol("WM_DELETE_WINDOW", self.on_quit)
        root.after(50, self._drain)

    def field(self, key):
        return self.entries[key].get().strip()

    def c(self, text):
        self.client_pane.insert("end", f"c> {text}\n")
        self.client_pane.see("end")

    def s(self, text):
        self.server_pane.insert("end", text + "\n")
        self.server_pane.see("end")

    def _drain(self):
        while True:
            try:
                self.s(self.pushes.get_nowait())
            except queue.Empty:
                break
        self.root.after(50, self._drain)

    def on_register(self):
        alias = self.field("alias")
        self.c(f"REGISTER {alias}")
        self.s(self.session.register(alias, self.field("birth_date") or None, self.field("full_name") or None))

    def on_unregister(self):
        alias = self.field("alias")
        self.c(f"UNREGISTER {alias}")
        self.s(self.session.unregister(alias))

    def on_connect(self):
        alias = self.field("alias")
        self.c(f"CONNECT {alias}")
        self.s(self.session.connect(alias))

    def on_disconnect(self):
        alias = self.field("alias")
        self.c(f"DISCONNECT {alias}")
        self.s(self.session.disconnect(alias))

    def on_connected_users(self):
        self.c("CONNECTEDUSERS")
        self.s(self.session.connected_users())

    def on_send(self):
        dest, message = self.field("dest"), self.entries["message"].get()
        self.c(f"SEND {dest} {message}")
        if len(message.encode()) > 255:
            self.s("s> SEND FAIL")
            self.c("the message is over 255 bytes")
            return
        self.s(self.session.send(dest, message))

    def on_sendattach(self):
        dest, message, file = self.field("dest"), self.entries["message"].get(), self.field("file")
        self.c(f"SENDATTACH {dest} {message} {file}")
        if len(message.encode()) > 255 or len(file.encode()) > 255 or not file:
            self.s("s> SENDATTACH FAIL")
            self.c("the message and the file name hold 1 to 255 bytes")
            return
        if not os.path.isabs(file):
            self.c(f"{file} is not an absolute path; it is sent as is")
        self.s(self.session.send_attach(dest, message, file))

    def on_users(self):
        self.c("USERS")
        self.s(self.session.users())

    def on_getfile(self):
        dest, file, local = self.field("dest"), self.field("file"), self.field("local")
        self.c(f"GETFILE {dest} {file} {local}")
        self.s(self.session.get_file(dest, file, local))

    def on_quit(self):
        if self.session.connected is not None:
            self.c(f"QUIT refused: DISCONNECT {self.session.connected} first")
            return
        self.root.destroy()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-s", "--server", required=True)
    parser.add_argument("-p", "--port", required=True, type=int)
    parser.add_argument("--course", choices=["2022", "2025"], default="2022", help="which year's result lines")
    args = parser.parse_args(argv)
    root = tk.Tk()
    App(root, args.server, args.port, args.course)
    root.mainloop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
