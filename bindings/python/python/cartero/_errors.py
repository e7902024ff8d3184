"""The exceptions of cartero: one per result of the protocol, under ``cartero.Error``."""


class Error(Exception):
    """Base of every cartero error (also raised for an internal error of the library)."""


class AliasInUse(Error):
    """REGISTER: the alias is already registered (result 1)."""


class UserNotFound(Error, LookupError):
    """The user (or, for SEND, one of the two users) does not exist (result 1)."""


class AlreadyConnected(Error):
    """CONNECT: the user is already connected (result 2)."""


class NotConnected(Error):
    """DISCONNECT or CONNECTEDUSERS: the user is not connected."""


class ServerError(Error):
    """The server answered "any other error", or answered something that is not protocol."""


class ConnectionFailed(Error, ConnectionError):
    """The server could not be reached, or did not answer in time."""


class InvalidField(Error, ValueError):
    """A field is over 255 bytes or contains a NUL byte, so it cannot be sent."""


class BadRequest(Error, ValueError):
    """Bytes given to a RequestDecoder are not a valid request."""


class FileTransferFailed(Error):
    """GETFILE: the file did not arrive whole (refused, cut short, unreachable); no file was
    left at the destination."""


# Public as cartero.<Name>: tracebacks and reprs show that name, not this private module.
for _cls in (Error, AliasInUse, UserNotFound, AlreadyConnected, NotConnected, ServerError, ConnectionFailed,
             InvalidField, BadRequest, FileTransferFailed):
    _cls.__module__ = "cartero"
del _cls
