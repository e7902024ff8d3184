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
    InvalidField,
    NotConnected,
    ServerError,
    UserNotFound,
)
from ._types import Ack, Message
from . import chat
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

__all__ = [
    "Ack",
    "AliasInUse",
    "AlreadyConnected",
    "BadRequest",
    "Client",
    "ConnectionFailed",
    "Delivery",
    "Engine",
    "Error",
    "FieldDecoder",
    "InvalidField",
    "Listener",
    "Message",
    "NotConnected",
    "RequestDecoder",
    "Server",
    "ServerError",
    "UserNotFound",
    "chat",
    "__version__",
    "encode_fields",
    "serve",
    "serve_webservice",
]
