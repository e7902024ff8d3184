"""cartero.buckets from Python, against the real Rust bucket server on 127.0.0.1."""

import io
import os
import subprocess
import sys
import threading

import pytest

from cartero import buckets
from cartero.buckets import Client

LOCAL = "127.0.0.1"
EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "..", "examples", "python")


@pytest.fixture
def server(tmp_path):
    with buckets.serve(tmp_path / "root") as s:
        yield s


@pytest.fixture
def client(server):
    with Client(LOCAL, server.port, timeout=10.0) as c:
        yield c


def test_every_operation_with_paths(client, tmp_path):
    client.create_bucket("b")
    assert client.list_buckets() == ["b"]
    src = tmp_path / "data.bin"
    data = os.urandom(300_000)
    src.write_bytes(data)
    client.upload("b", src)
    client.upload("b", str(src), "copy")
    assert client.list_files("b") == [
        buckets.RemoteFile("b", "copy", 300_000),
        buckets.RemoteFile("b", "data.bin", 300_000),
    ]
    assert [f.name for f in client.list_files()] == ["copy", "data.bin"]
    client.download("b", "copy", tmp_path / "out.bin")
    assert (tmp_path / "out.bin").read_bytes() == data
    (tmp_path / "dir").mkdir()
    client.download("b", "copy", tmp_path / "dir")
    assert (tmp_path / "dir" / "copy").read_bytes() == data
    client.delete_file("b", "copy")
    client.delete_bucket("b")
    assert client.list_buckets() == []


def test_file_objects_and_pipes_stream(client, tmp_path):
    client.create_bucket("b")
    client.upload("b", io.BytesIO(b"hello"), "greeting")
    with open(tmp_path / "f.txt", "wb") as f:
        f.write(b"named")
    with open(tmp_path / "f.txt", "rb") as f:
        client.upload("b", f)  # takes the file object's own name
    r, w = os.pipe()
    threading.Thread(target=lambda: (os.write(w, b"x" * 100_000), os.close(w))).start()
    with os.fdopen(r, "rb") as pipe:
        client.upload("b", pipe, "piped")
    out = io.BytesIO()
    client.download("b", "greeting", out)
    assert out.getvalue() == b"hello"
    sizes = {f.name: f.size for f in client.list_files("b")}
    assert sizes == {"f.txt": 5, "greeting": 5, "piped": 100_000}


def test_typed_errors(server, client, tmp_path):
    client.create_bucket("b")
    with pytest.raises(buckets.Refused):
        client.create_bucket("b")
    with pytest.raises(buckets.InvalidName):
        client.create_bucket("..")
    with pytest.raises(buckets.InvalidName):
        client.download("b", "../../etc/passwd", tmp_path / "x")
    with pytest.raises(buckets.Refused):
        client.download("b", "missing", tmp_path / "missing")
    assert not (tmp_path / "missing").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    with pytest.raises(FileNotFoundError):
        client.upload("b", tmp_path / "nothere")
    with pytest.raises(ValueError, match="binary mode"):
        client.upload("b", io.StringIO("text"), "t")
    with Client(LOCAL, server.port, vocabulary="eafit") as e:
        e.upload("b", io.BytesIO(b"1"), "once")
        with pytest.raises(buckets.FileExists):
            e.upload("b", io.BytesIO(b"2"), "once")
        with pytest.raises(buckets.Unsupported):
            e.list_files()
    with pytest.raises(ValueError):
        Client(LOCAL, server.port, vocabulary="klingon")
    with pytest.raises(buckets.ConnectionFailed):
        free = server.port
        server.stop()
        Client(LOCAL, free, timeout=2.0)
    assert issubclass(buckets.Refused, buckets.BucketsError)


def test_transfers_release_the_gil(client, tmp_path):
    client.create_bucket("b")
    big = tmp_path / "big"
    big.write_bytes(b"\0" * (32 << 20))
    ticks = []
    stop = threading.Event()

    def tick():
        while not stop.is_set():
            ticks.append(1)
            stop.wait(0.001)

    t = threading.Thread(target=tick)
    t.start()
    try:
        client.upload("b", big)
        client.download("b", "big", tmp_path / "back")
    finally:
        stop.set()
        t.join()
    assert (tmp_path / "back").stat().st_size == 32 << 20
    assert len(ticks) > 1


def test_the_example(server, tmp_path):
    run = lambda *a: subprocess.run(
        [sys.executable, os.path.join(EXAMPLES, "buckets_client.py"), "-p", str(server.port), *a],
        capture_output=True, text=True, timeout=30)
    assert run("mb", "b").returncode == 0
    (tmp_path / "f").write_bytes(b"abc")
    assert run("put", "b", str(tmp_path / "f")).returncode == 0
    assert run("ls", "b").stdout == "f 3\n"
    assert run("--vocabulary", "eafit", "ls").stdout == "b\n"
    assert run("get", "b", "f", str(tmp_path / "g")).returncode == 0
    assert (tmp_path / "g").read_bytes() == b"abc"
    bad = run("get", "b", "nope", str(tmp_path / "h"))
    assert bad.returncode == 1 and bad.stderr.startswith("buckets_client: ") and bad.stderr.count("\n") == 1
