"""cartero from Python, against the real Rust server on 127.0.0.1."""

import os
import signal
import socket
import threading
import time

import pytest

import cartero

LOCAL = "127.0.0.1"


@pytest.fixture
def server():
    with cartero.serve(0) as s:
        yield s


@pytest.fixture
def client(server):
    return cartero.Client(LOCAL, server.port, timeout=5.0)


def free_port():
    with socket.socket() as s:
        s.bind((LOCAL, 0))
        return s.getsockname()[1]


def test_every_operation(client):
    client.register("Ana López", "ana", "01/02/2000")
    client.register("Bob", "bob", "29-02-2004")
    with client.connect("ana", listen_host=LOCAL) as ana, client.connect("bob", listen_host=LOCAL) as bob:
        assert ana.port > 0 and ana.port != bob.port
        assert client.connected_users("ana") == ["ana", "bob"]
        assert client.connected_users() == ["ana", "bob"]  # by source IP
        assert client.send("ana", "bob", "hola\nbob") == 1
        assert client.send("ana", "bob", "otra") == 2
        assert next(bob) == cartero.Message("ana", 1, "hola\nbob")
        assert next(bob) == cartero.Message("ana", 2, "otra")
        assert {next(ana), next(ana)} == {cartero.Ack(1), cartero.Ack(2)}
        client.disconnect("ana")
        client.disconnect("bob")
    client.unregister("ana")
    client.unregister("bob")


def test_every_exception_is_a_cartero_error_and_its_builtin(client):
    client.register("Ana", "ana", "01/01/2000")
    with pytest.raises(cartero.AliasInUse):
        client.register("Ana", "ana", "01/01/2000")
    with pytest.raises(cartero.ServerError):
        client.register("Bad", "bad", "31/02/2000")
    for call in (lambda: client.unregister("ghost"), lambda: client.connect("ghost"), lambda: client.disconnect("ghost"),
                 lambda: client.send("ana", "ghost", "x")):
        with pytest.raises(cartero.UserNotFound) as info:
            call()
        assert isinstance(info.value, LookupError)
    with pytest.raises(cartero.NotConnected):
        client.disconnect("ana")
    with pytest.raises(cartero.NotConnected):
        client.connected_users("ana")
    with client.connect("ana", listen_host=LOCAL):
        with pytest.raises(cartero.AlreadyConnected):
            client.connect("ana", listen_host=LOCAL)
        client.disconnect("ana")
    with pytest.raises(cartero.InvalidField) as info:
        client.send("ana", "ana", "x" * 256)
    assert isinstance(info.value, ValueError)
    with pytest.raises(cartero.ConnectionFailed) as info:
        cartero.Client(LOCAL, free_port(), timeout=2.0).register("A", "a", "01/01/2000")
    assert isinstance(info.value, ConnectionError)
    for cls in (cartero.AliasInUse, cartero.UserNotFound, cartero.AlreadyConnected, cartero.NotConnected,
                cartero.ServerError, cartero.ConnectionFailed, cartero.InvalidField, cartero.BadRequest):
        assert issubclass(cls, cartero.Error) and issubclass(cls, Exception)
    with pytest.raises(ValueError):
        cartero.Client(LOCAL, 1, codes="binary")


def test_pending_messages_arrive_after_connect_and_close_ends_iteration(client):
    client.register("Ana", "ana", "01/01/2000")
    client.register("Bob", "bob", "01/01/2000")
    ids = [client.send("ana", "bob", f"m{i}") for i in range(3)]
    assert ids == [1, 2, 3]
    listener = client.connect("bob", listen_host=LOCAL)
    got = [next(listener) for _ in range(3)]
    assert got == [cartero.Message("ana", i, f"m{i - 1}") for i in (1, 2, 3)]
    assert listener.receive(timeout=0.2) is None
    listener.close()
    assert list(listener) == []


def test_a_blocking_wait_does_not_stop_other_python_threads(client):
    client.register("Ana", "ana", "01/01/2000")
    client.register("Bob", "bob", "01/01/2000")
    bob = client.connect("bob", listen_host=LOCAL)
    got = []
    waiter = threading.Thread(target=lambda: got.append(next(bob)))
    waiter.start()
    # While that thread waits inside Rust, this one runs Python and other requests.
    ticks = 0
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:
        ticks += 1
    assert client.connected_users("bob") == ["bob"]
    assert waiter.is_alive() and ticks > 1000
    client.send("ana", "bob", "wake up")
    waiter.join(timeout=10)
    assert got == [cartero.Message("ana", 1, "wake up")]
    bob.close()


def test_ctrl_c_interrupts_a_listener_wait(client):
    # Python's own Ctrl-C handler, whatever this process inherited: a shell that starts a job
    # in the background without job control makes it ignore SIGINT, and Python then installs
    # none, so the signal would never reach the wait.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    client.register("Ana", "ana", "01/01/2000")
    try:
        with client.connect("ana", listen_host=LOCAL) as inbox:
            timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT))
            timer.start()
            started = time.monotonic()
            with pytest.raises(KeyboardInterrupt):
                next(inbox)
            timer.join()
            assert time.monotonic() - started < 5
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_rust_panic_is_a_cartero_error():
    with pytest.raises(cartero.Error) as info:
        cartero._native._panic_for_tests()
    assert "internal error" in str(info.value)
    try:
        cartero._native._panic_for_tests()
    except Exception as e:  # what callers write: it must catch it
        assert isinstance(e, cartero.Error)


def test_fields_encode_and_decode_in_any_chunks():
    stream = cartero.encode_fields([b"SEND", b"ana", b"bob", b"hola\tmundo", b""])
    assert stream == b"SEND\0ana\0bob\0hola\tmundo\0\0"
    decoder = cartero.FieldDecoder()
    fields = []
    for i in range(len(stream)):
        fields += decoder.feed(stream[i:i + 1])
    assert fields == [b"SEND", b"ana", b"bob", b"hola\tmundo", b""]
    with pytest.raises(cartero.InvalidField):
        cartero.encode_fields([b"a\0b"])
    with pytest.raises(cartero.InvalidField):
        cartero.encode_fields([b"x" * 256])
    with pytest.raises(cartero.InvalidField):
        cartero.FieldDecoder(max_len=4).feed(b"toolong")


def test_serve_picks_a_port_keeps_state_on_disk_and_stops(tmp_path):
    with cartero.serve(0, memory=False, data=tmp_path / "store") as s:
        assert s.port > 0
        c = cartero.Client(LOCAL, s.port)
        c.register("Ana", "ana", "01/01/2000")
        c.register("Bob", "bob", "01/01/2000")
        assert c.send("ana", "bob", "kept") == 1
    with cartero.serve(0, memory=False, data=tmp_path / "store") as s:
        c = cartero.Client(LOCAL, s.port)
        with pytest.raises(cartero.AliasInUse):
            c.register("Ana", "ana", "01/01/2000")
        with c.connect("bob", listen_host=LOCAL) as bob:
            assert next(bob) == cartero.Message("ana", 1, "kept")
    with socket.socket() as taken:
        taken.bind((LOCAL, 0))
        taken.listen()
        with pytest.raises(cartero.Error, match="cannot listen"):
            cartero.serve(taken.getsockname()[1])
    with pytest.raises(ValueError):
        cartero.serve(0, host="256.0.0.1")


def python_server(engine, stop):
    """A small server on Python's own sockets, with cartero's engine deciding everything."""
    listener = socket.create_server((LOCAL, 0))
    listener.settimeout(0.1)

    def push(delivery):
        try:
            with socket.create_connection((delivery.ip, delivery.port), timeout=2) as s:
                s.sendall(delivery.data)
                s.shutdown(socket.SHUT_WR)
                while s.recv(512):
                    pass
            return True
        except OSError:
            return False

    def run():
        while not stop.is_set():
            try:
                conn, (peer, _) = listener.accept()
            except socket.timeout:
                continue
            with conn:
                decoder = cartero.RequestDecoder()
                conn.settimeout(0.1)
                ready = False
                try:
                    while not ready:
                        try:
                            data = conn.recv(1024)
                        except socket.timeout:
                            if decoder.has_short_form():
                                ready = decoder.finish(False)
                            continue
                        ready = decoder.feed(data) if data else decoder.finish(True)
                        if not data:
                            break
                except cartero.BadRequest:
                    conn.sendall(decoder.error_reply())
                    continue
                if not ready:
                    continue
                reply, hold = engine.handle_request(decoder, peer)
                conn.sendall(reply)
                conn.shutdown(socket.SHUT_WR)
            engine.release(hold)
            while (delivery := engine.poll_delivery(time.monotonic())) is not None:
                engine.delivery_result(delivery.id, push(delivery))
        listener.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread


def test_the_engine_drives_a_server_built_on_python_sockets():
    engine = cartero.Engine(push_names="underscored")
    stop = threading.Event()
    port, thread = python_server(engine, stop)
    c = cartero.Client(LOCAL, port)
    c.register("Ana", "ana", "01/01/2000")
    c.register("Bob", "bob", "01/01/2000")
    with c.connect("ana", listen_host=LOCAL) as ana, c.connect("bob", listen_host=LOCAL) as bob:
        assert c.send("ana", "bob", "via python") == 1
        assert next(bob) == cartero.Message("ana", 1, "via python")
        assert next(ana) == cartero.Ack(1)
        with pytest.raises(cartero.AliasInUse):
            c.register("Ana", "ana", "01/01/2000")
    lines = []
    while (line := engine.poll_event()) is not None:
        lines.append(line)
    assert "s> SEND MESSAGE 1 FROM ana TO bob" in lines
    assert lines[:2] == ["s> REGISTER ana OK", "s> REGISTER bob OK"]
    stop.set()
    thread.join(timeout=10)


def test_a_bad_request_to_the_python_server_gets_the_error_code():
    decoder = cartero.RequestDecoder()
    assert decoder.feed(b"SEND\0ana\0") is False
    with pytest.raises(cartero.BadRequest):
        decoder.finish(True)
    assert decoder.error_reply() == b"2\0"
    assert decoder.error_reply(raw_codes=True) == b"\x02"
    unknown = cartero.RequestDecoder()
    with pytest.raises(cartero.BadRequest):
        unknown.feed(b"HELLO\0")
    assert unknown.error_reply() == b""


def test_leaving_with_connect_disconnects_the_user(client):
    client.register("Ana", "ana", "01/01/2000")
    with client.connect("ana"):
        assert client.connected_users("ana") == ["ana"]
    with pytest.raises(cartero.NotConnected):
        client.disconnect("ana")
    with client.connect("ana"):  # connected again: the exit left nothing behind
        client.disconnect("ana")  # a DISCONNECT already made is fine on exit


def test_the_listener_binds_the_address_towards_the_server_unless_told(client):
    def accepts(ip, port):
        with socket.socket() as s:
            s.settimeout(2)
            return s.connect_ex((ip, port)) == 0

    client.register("Ana", "ana", "01/01/2000")
    with client.connect("ana") as inbox:
        assert accepts("127.0.0.1", inbox.port)
        assert not accepts("127.0.0.2", inbox.port)  # 127.0.0.1 only, not every interface
    with client.connect("ana", listen_host="0.0.0.0") as inbox:
        assert accepts("127.0.0.2", inbox.port)


def test_public_exceptions_are_named_as_cartero_attributes(client):
    import traceback

    client.register("Ana", "ana", "01/01/2000")
    with pytest.raises(cartero.AliasInUse) as info:
        client.register("Ana", "ana", "01/01/2000")
    assert traceback.format_exception_only(info.type, info.value)[0].startswith("cartero.AliasInUse: ")
    for name in ["Error", "AliasInUse", "UserNotFound", "AlreadyConnected", "NotConnected", "ServerError",
                 "ConnectionFailed", "InvalidField", "BadRequest", "FileTransferFailed"]:
        assert getattr(cartero, name).__module__ == "cartero", name
