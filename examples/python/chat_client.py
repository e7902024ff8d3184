#!/usr/bin/env python3
"""The chat console of SPEC-chat 6 on the cartero module.

    python examples/python/chat_client.py -s localhost -p 8080 -n ana

Lines typed: `@name text` sends a private message, `/users` prints the last user list,
`/logout` (or the end of input) leaves; any other line is broadcast. Prints what
`cartero chat connect` prints.
"""

import argparse
import sys
import threading

import cartero
from cartero import chat


def event_text(event):
    if isinstance(event, chat.UserList):
        return "Usuarios conectados: " + ", ".join(event.users)
    if isinstance(event, chat.Message):
        return f"Mensaje de {event.sender}: {event.content}"
    if isinstance(event, chat.Broadcast):
        return f"Broadcast de {event.sender}: {event.content}"
    return f"Error {event.code}: {event.text}"


_print_lock = threading.Lock()


def say(text):
    """Prints one whole line, never interleaved with another thread's."""
    with _print_lock:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-s", "--server", default="localhost")
    parser.add_argument("-p", "--port", type=int, default=8080)
    parser.add_argument("-n", "--name")
    args = parser.parse_args()
    name = args.name or sys.stdin.readline().strip()
    try:
        client = chat.Client(args.server, args.port, name)
    except chat.ChatError as e:
        say("Conexión fallida")
        print(f"cartero: {e}", file=sys.stderr)
        return 1
    say("Conectado exitosamente")
    users = []

    def receive():
        for event in client.events():
            if isinstance(event, chat.UserList):
                users[:] = event.users
            say(event_text(event))
        say("Desconectado del servidor")

    reader = threading.Thread(target=receive)
    reader.start()
    try:
        for line in sys.stdin:
            line = line.rstrip("\r\n")
            try:
                if line.startswith("@"):
                    to, _, text = line[1:].partition(" ")
                    client.send(to, text)
                elif line.strip() == "/users":
                    say("Usuarios conectados: " + ", ".join(users))
                elif line.strip() == "/logout":
                    break
                elif line.strip():
                    client.broadcast(line)
            except chat.InvalidInput as e:
                print(f"cartero: not sent: {e}", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    try:
        client.disconnect()
    except cartero.Error:
        client.close()
    reader.join(timeout=5)
    client.close()
    reader.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
