import os
from dataclasses import dataclass
from typing import Iterator, List, Optional, Union

from ._errors import ConnectionFailed as _ConnectionFailed
from ._errors import Error
from ._native import Server

class ChatError(Error): ...
class ConnectionFailed(ChatError, _ConnectionFailed): ...
class CertificateError(ConnectionFailed):
    reason: str
    def __init__(self, message: str, reason: str = ...) -> None: ...

class Closed(ChatError, ConnectionError): ...
class InvalidInput(ChatError, ValueError): ...
class ProtocolError(ChatError): ...

class NameRefused(ChatError):
    code: Optional[int]
    text: Optional[str]
    def __init__(self, message: str, code: Optional[int] = ..., text: Optional[str] = ...) -> None: ...

@dataclass(frozen=True)
class UserList:
    users: List[str]

@dataclass(frozen=True)
class Message:
    sender: str
    content: str

@dataclass(frozen=True)
class Broadcast:
    sender: str
    content: str

@dataclass(frozen=True)
class ServerError:
    code: int
    text: str

@dataclass(frozen=True)
class Joined:
    room: str
    members: List[str]

@dataclass(frozen=True)
class Parted:
    room: str
    name: str

@dataclass(frozen=True)
class RoomMessage:
    room: str
    sender: str
    content: str

@dataclass(frozen=True)
class RoomList:
    rooms: List[str]

@dataclass(frozen=True)
class HistoryEntry:
    target: str
    sender: str
    millis: int
    content: str

@dataclass(frozen=True)
class HistoryEnd:
    target: str

Event = Union[
    UserList, Message, Broadcast, ServerError, Joined, Parted, RoomMessage, RoomList, HistoryEntry, HistoryEnd
]

def serve(port: int = 0, *, host: str = "127.0.0.1") -> Server: ...

class Client:
    def __init__(
        self,
        host: str,
        port: int,
        name: str,
        *,
        timeout: float = 5.0,
        tls: bool = False,
        ca: Optional[Union[str, os.PathLike[str]]] = None,
    ) -> None: ...
    @property
    def name(self) -> str: ...
    def send(self, to: str, content: str) -> None: ...
    def broadcast(self, content: str) -> None: ...
    def join(self, room: str) -> None: ...
    def part(self, room: str) -> None: ...
    def room(self, room: str, content: str) -> None: ...
    def rooms(self) -> None: ...
    def history(self, target: str, n: int = 20) -> None: ...
    def recv(self, timeout: Optional[float] = None) -> Optional[Event]: ...
    def events(self, timeout: Optional[float] = None) -> Iterator[Event]: ...
    def __iter__(self) -> Iterator[Event]: ...
    def disconnect(self) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> Client: ...
    def __exit__(self, *exc: object) -> None: ...
