"""The course chat (myChatProtocol, seed 002) from Python.

>>> import cartero
>>> with cartero.chat.Client("127.0.0.1", 8080, "ana") as ana:
...     ana.broadcast("hola a todos")
...     for event in ana.events(timeout=1.0):     # stops after 1 s without events
...         print(event)                          # UserList(users=['ana']), Broadcast(...)

Waits release the GIL and can be interrupted with Ctrl-C.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, List, Optional, Union

from ._errors import Error
from ._errors import ConnectionFailed as _ConnectionFailed


class ChatError(Error):
    """Base of the chat's errors."""


class ConnectionFailed(ChatError, _ConnectionFailed):
    """The server could not be reached, or did not answer in time."""


class CertificateError(ConnectionFailed):
    """TLS: the server's certificate was refused. ``reason`` says why, in one word:
    ``"expired"``, ``"not_yet_valid"``, ``"unknown_issuer"`` (not signed by anyone trusted:
    give the server's certificate as ``ca``), ``"bad_signature"`` (an old ``ca`` file of a
    server that made a new certificate?), ``"wrong_name"`` or ``"other"``."""

    def __init__(self, message: str, reason: str = "other"):
        super().__init__(message)
        self.reason = reason


class Closed(ChatError, ConnectionError):
    """The server closed the connection."""


class InvalidInput(ChatError, ValueError):
    """A name that is not a valid user name, a message that cannot be sent (a line
    break, over 1024 bytes), or a ``ca`` file without a usable certificate."""


class ProtocolError(ChatError):
    """The server sent something that is not a chat message."""


class NameRefused(ChatError):
    """CONNECT was refused (CONNECT_ACK|FAIL); ``code`` and ``text`` are the server's
    ERROR when it sent one (409: the name is taken; 400: the name is not valid)."""

    def __init__(self, message: str, code: Optional[int] = None, text: Optional[str] = None):
        super().__init__(message)
        self.code = code
        self.text = text


@dataclass(frozen=True)
class UserList:
    """``USER_LIST``: the connected users, in order of joining."""

    users: List[str]


@dataclass(frozen=True)
class Message:
    """A private message to this user."""

    sender: str
    content: str


@dataclass(frozen=True)
class Broadcast:
    """A message to every user."""

    sender: str
    content: str


@dataclass(frozen=True)
class ServerError:
    """``ERROR|code|text``: the server refused something this client sent; the connection
    stays open (except for 408 and 503)."""

    code: int
    text: str


@dataclass(frozen=True)
class Joined:
    """``JOINED``: someone joined ``room`` (this user, or another member); ``members`` in
    order of joining."""

    room: str
    members: List[str]


@dataclass(frozen=True)
class Parted:
    """``PARTED``: ``name`` left ``room`` (this user too, after ``part``)."""

    room: str
    name: str


@dataclass(frozen=True)
class RoomMessage:
    """``ROOM``: a message to a room this user is in."""

    room: str
    sender: str
    content: str


@dataclass(frozen=True)
class RoomList:
    """``ROOM_LIST``: every room that has members."""

    rooms: List[str]


@dataclass(frozen=True)
class HistoryEntry:
    """One message of a ``history`` replay, oldest first; ``millis`` is unix time in ms."""

    target: str
    sender: str
    millis: int
    content: str


@dataclass(frozen=True)
class HistoryEnd:
    """The end of a ``history`` replay."""

    target: str


Event = Union[
    UserList, Message, Broadcast, ServerError, Joined, Parted, RoomMessage, RoomList, HistoryEntry, HistoryEnd
]


def _event(raw) -> Event:
    kind, a, b = raw
    if kind == "joined":
        return Joined(a, list(b))
    if kind == "parted":
        return Parted(a, b)
    if kind == "room":
        return RoomMessage(a, b[0], b[1])
    if kind == "room_list":
        return RoomList(list(a))
    if kind == "history":
        return HistoryEntry(a, b[0], int(b[1]), b[2])
    if kind == "history_end":
        return HistoryEnd(a)
    if kind == "user_list":
        return UserList(list(a))
    if kind == "message":
        return Message(a, b)
    if kind == "broadcast":
        return Broadcast(a, b)
    if kind == "error":
        return ServerError(int(a), b)
    raise ProtocolError(f"unexpected message from the server: {raw!r}")


def serve(port: int = 0, *, host: str = "127.0.0.1"):
    """Starts cartero's chat server (SPEC-chat's limits) in the background of this program;
    the handle has ``.port`` and ``.stop()`` and is a context manager."""
    from ._native import serve_chat

    return serve_chat(port, host=host)


class Client:
    """A connection to a chat server, joined as ``name``.

    Raises ``NameRefused`` when the server refuses the name, ``InvalidInput`` for a name
    that is not valid, ``ConnectionFailed`` when the server cannot be reached in ``timeout``
    seconds.

    With ``tls=True`` (or a ``ca``) the connection is made over TLS (to the server's TLS
    port), checking the certificate against the name ``host`` and the certificates of the
    PEM file ``ca`` only (a self-signed server's ``--tls-cert-out``), or the public
    authorities without ``ca``. A refused certificate raises ``CertificateError``.
    """

    def __init__(
        self,
        host: str,
        port: int,
        name: str,
        *,
        timeout: float = 5.0,
        tls: bool = False,
        ca: Optional[Union[str, "os.PathLike[str]"]] = None,
    ):
        from ._native import ChatClient

        self._native = ChatClient(host, port, name, timeout, tls, None if ca is None else os.fspath(ca))

    @property
    def name(self) -> str:
        return self._native.name

    def send(self, to: str, content: str) -> None:
        """A private message to ``to`` (``ServerError(404)`` comes back if nobody has that name)."""
        self._native.send(to, content)

    def broadcast(self, content: str) -> None:
        """A message to every user, this one included."""
        self._native.broadcast(content)

    def join(self, room: str) -> None:
        """``JOIN|room``: ``Joined`` comes back (``ServerError(400)`` for a name without
        ``#``, ``ServerError(405)`` past the server's limit of rooms)."""
        self._native.join(room)

    def part(self, room: str) -> None:
        """``PART|room``: ``Parted`` comes back (``ServerError(403)`` if not a member)."""
        self._native.part(room)

    def room(self, room: str, content: str) -> None:
        """``ROOM|room|content``: a message to the room's members, this user included."""
        self._native.room(room, content)

    def rooms(self) -> None:
        """``ROOMS``: ``RoomList`` comes back."""
        self._native.rooms()

    def history(self, target: str, n: int = 20) -> None:
        """``HISTORY|target|n``: up to ``n`` (at most 100) earlier messages of ``#room``,
        ``*`` (the broadcasts) or a user name (the private messages with that user), as
        ``HistoryEntry`` events, then ``HistoryEnd``."""
        if n < 0:
            raise InvalidInput(f"n must be 0 or more, not {n}")
        self._native.history(target, n)

    def recv(self, timeout: Optional[float] = None) -> Optional[Event]:
        """The next event, or None when none came within ``timeout`` seconds (waits forever
        when None). Raises ``Closed`` once the server closed the connection."""
        raw = self._native.recv(timeout)
        return None if raw is None else _event(raw)

    def events(self, timeout: Optional[float] = None) -> Iterator[Event]:
        """Events as they come; ends when ``timeout`` seconds pass without one, or when the
        server closes the connection."""
        while True:
            try:
                event = self.recv(timeout)
            except Closed:
                return
            if event is None:
                return
            yield event

    def __iter__(self) -> Iterator[Event]:
        return self.events()

    def disconnect(self) -> None:
        """``DISCONNECT``: leave; the server closes the connection."""
        self._native.disconnect()

    def close(self) -> None:
        """Close the connection at once (the server takes it as DISCONNECT)."""
        self._native.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.disconnect()
        except ChatError:
            pass
        self.close()


__all__ = [
    "Broadcast",
    "ChatError",
    "Client",
    "Closed",
    "ConnectionFailed",
    "Event",
    "HistoryEnd",
    "HistoryEntry",
    "InvalidInput",
    "Joined",
    "Message",
    "NameRefused",
    "Parted",
    "ProtocolError",
    "RoomList",
    "RoomMessage",
    "ServerError",
    "serve",
    "UserList",
]
