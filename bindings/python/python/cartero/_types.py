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
