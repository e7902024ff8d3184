"""The bucket stores of seeds 003 and 004 from Python.

>>> from cartero.buckets import Client, serve
>>> server = serve("./buckets")                   # a Rust server in the background
>>> c = Client("127.0.0.1", server.port)          # vocabulary="codes" or "eafit"
>>> c.create_bucket("photos")
>>> c.upload("photos", "cat.jpg")                 # a path, or a binary file object + name
>>> c.list_files("photos")                        # [RemoteFile(bucket='photos', name='cat.jpg', size=...)]
>>> c.download("photos", "cat.jpg", "./copy.jpg")

Transfers stream in constant memory with the GIL released.
"""

import os
import shutil
import tempfile
from typing import BinaryIO, List, NamedTuple, Optional, Union

from ._errors import Error
from ._native import BucketsClient as _Native
from ._native import serve_buckets as _serve

__all__ = [
    "BucketsError",
    "Client",
    "ConnectionFailed",
    "FileExists",
    "InvalidName",
    "ProtocolError",
    "Refused",
    "RemoteFile",
    "SourceChanged",
    "Unsupported",
    "serve",
]


class BucketsError(Error):
    """Base of the bucket client's errors."""


class ConnectionFailed(BucketsError, ConnectionError):
    """The server could not be reached, closed the connection, or did not answer in time."""


class InvalidName(BucketsError, ValueError):
    """A bucket or file name breaks the naming rules (.., /, \\, control characters...)."""


class Unsupported(BucketsError, ValueError):
    """The vocabulary has no such command (eafit: no HELP, no listing of every bucket)."""


class Refused(BucketsError):
    """The server answered with a failure; the message holds its reason."""


class FileExists(Refused, FileExistsError):
    """eafit: the file exists, and uploads in that vocabulary never overwrite."""


class ProtocolError(BucketsError):
    """The server answered something the protocol does not allow."""


class SourceChanged(BucketsError):
    """The local file gave fewer bytes than announced (it changed during the upload)."""


class RemoteFile(NamedTuple):
    bucket: str
    name: str
    size: int


PathLike = Union[str, "os.PathLike[str]"]


def serve(root: PathLike, port: int = 0, *, host: str = "127.0.0.1", max_file_size: int = 1 << 30):
    """Starts a bucket server over ``root`` in the background; ``.port``, ``.stop()``."""
    return _serve(os.fspath(root), port, host=host, max_file_size=max_file_size)


class Client:
    """A client of one bucket server (cartero's or anyone's), on one connection."""

    def __init__(self, host: str, port: int, *, vocabulary: str = "codes", timeout: float = 30.0):
        self._native = _Native(host, port, vocabulary=vocabulary, timeout=timeout)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Says goodbye and closes the connection (safe to call twice)."""
        self._native.close()

    def list_buckets(self) -> List[str]:
        return self._native.list_buckets()

    def list_files(self, bucket: Optional[str] = None) -> List[RemoteFile]:
        """The files of ``bucket`` (or of every bucket, codes only) with their sizes."""
        return [RemoteFile(*f) for f in self._native.list_files(bucket)]

    def create_bucket(self, bucket: str) -> None:
        self._native.create_bucket(bucket)

    def delete_bucket(self, bucket: str) -> None:
        self._native.delete_bucket(bucket)

    def delete_file(self, bucket: str, name: str) -> None:
        self._native.delete_file(bucket, name)

    def upload(self, bucket: str, path_or_fileobj: Union[PathLike, BinaryIO], name: Optional[str] = None) -> None:
        """Uploads a local file (a path, or a binary file object) as ``bucket/name``.

        ``name`` defaults to the file's own name. A file object that cannot tell its size
        (a pipe) is first spooled to a temporary file, so memory stays bounded.
        """
        if isinstance(path_or_fileobj, (str, bytes, os.PathLike)):
            path = os.fsdecode(path_or_fileobj)
            self._native.upload_path(bucket, path, name if name is not None else os.path.basename(path))
            return
        source = path_or_fileobj
        if name is None:
            own = getattr(source, "name", None)
            if not isinstance(own, str):
                raise InvalidName("give a name: the file object has none")
            name = os.path.basename(own)
        size = _remaining(source)
        if size is None:
            with tempfile.TemporaryFile() as spool:
                shutil.copyfileobj(source, spool, 1 << 16)
                size = spool.tell()
                spool.seek(0)
                self._native.upload_reader(bucket, name, size, spool)
            return
        self._native.upload_reader(bucket, name, size, source)

    def download(self, bucket: str, name: str, dest: Union[PathLike, BinaryIO]) -> None:
        """Downloads ``bucket/name`` to ``dest``: a path (a directory gets ``dest/name``;
        written to a temporary file beside it, then renamed) or a binary file object."""
        if isinstance(dest, (str, bytes, os.PathLike)):
            self._native.download_path(bucket, name, os.fsdecode(dest))
        else:
            self._native.download_writer(bucket, name, dest)


def _remaining(source) -> Optional[int]:
    """The bytes left in a seekable file object, or None."""
    try:
        if not source.seekable():
            return None
        here = source.tell()
        end = source.seek(0, os.SEEK_END)
        source.seek(here)
        return end - here
    except (AttributeError, OSError, ValueError):
        return None
