"""cartero: the UC3M message-delivery protocol, exact on the wire.

>>> import cartero
>>> server = cartero.serve(0)                      # a Rust server in the background
>>> client = cartero.Client("127.0.0.1", server.port)
>>> client.register("Ana López", "ana", "01/02/2000")
>>> with client.connect("ana") as inbox:          # a listener on a free port
...     client.send("ana", "ana", "hola")          # returns the message id, 1
...     print(next(inbox))                          # Message(sender='ana', id=1, body='hola')
"""

from ._errors import (
    AliasInUse,
    AlreadyConnected,
    BadRequest,
    ConnectionFailed,
    Error,
    FileTransferFailed,
    InvalidField,
    NotConnected,
    ServerError,
    UserNotFound,
)
from ._types import Ack, AttachAck, AttachMessage, Message
from ._native import (
    Client,
    Delivery,
    Engine,
    FieldDecoder,
    Listener,
    RequestDecoder,
    Server,
    __version__,
    encode_fields,
    serve,
    serve_webservice,
)
from . import buckets  # cartero.buckets: the bucket stores of seeds 003 and 004
from . import chat  # cartero.chat: the course chat of seed 002

__all__ = [
    "Ack",
    "AttachAck",
    "AttachMessage",
    "AliasInUse",
    "AlreadyConnected",
    "BadRequest",
    "Client",
    "ConnectionFailed",
    "Delivery",
    "Engine",
    "Error",
    "FieldDecoder",
    "FileTransferFailed",
    "InvalidField",
    "Listener",
    "Message",
    "NotConnected",
    "RequestDecoder",
    "Server",
    "ServerError",
    "UserNotFound",
    "buckets",
    "chat",
    "__version__",
    "encode_fields",
    "serve",
    "serve_webservice",
]
