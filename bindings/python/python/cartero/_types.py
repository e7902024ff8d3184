"""What a listener yields."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Message:
    """A message pushed to this user: ``SEND MESSAGE``."""

    sender: str
    id: int
    body: str


@dataclass(frozen=True)
class Ack:
    """An acknowledgement that message ``id`` of this user was delivered: ``SEND MESS ACK``."""

    id: int


@dataclass(frozen=True)
class AttachMessage:
    """A message with an attached file's name (course 2025/26): ``SEND MESSAGE ATTACH``.

    Only the name travels; ``Client.get_file`` fetches the file from the sender's listener.
    """

    sender: str
    id: int
    body: str
    file: str


@dataclass(frozen=True)
class AttachAck:
    """An acknowledgement of this user's SENDATTACH message ``id``: ``SEND MESS ATTACH ACK``."""

    id: int
    file: str
