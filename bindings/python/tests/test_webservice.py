"""The web service of part 2 as the course's clients call it (zeep), its JSON endpoint, its
refusals, and the client path that sends every message through it."""

import json
import socket
import urllib.error
import urllib.request

import pytest
import zeep

import cartero

LOCAL = "127.0.0.1"


@pytest.fixture
def webservice():
    with cartero.serve_webservice(0) as ws:
        yield f"http://{LOCAL}:{ws.port}"


def post(url, data, content_type):
    request = urllib.request.Request(url, data=data, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_zeep_calls_each_operation_the_course_uses(webservice):
    client = zeep.Client(f"{webservice}/?wsdl")
    assert client.service.format("  hola \t  mundo ") == "hola mundo"
    assert client.service.convert_text("a   b\n\nc") == "a b c"
    assert client.service.modify_text(" <x> & 'y' ") == "<x> & 'y'"


def test_the_json_endpoint_and_health(webservice):
    status, body = post(f"{webservice}/normalize", json.dumps({"text": "  uno   dos "}).encode(), "application/json")
    assert (status, json.loads(body)) == (200, {"text": "uno dos"})
    with urllib.request.urlopen(f"{webservice}/health", timeout=5) as r:
        assert json.loads(r.read()) == {"status": "ok"}


def test_bad_requests_get_proper_http_and_soap_answers(webservice):
    status, body = post(f"{webservice}/normalize", b"text=x", "application/x-www-form-urlencoded")
    assert status == 415
    status, body = post(f"{webservice}/normalize", b"{not json", "application/json")
    assert status == 400 and "error" in json.loads(body)
    status, body = post(f"{webservice}/normalize", json.dumps({"text": "x" * 100_000}).encode(), "application/json")
    assert status == 413
    status, body = post(f"{webservice}/", b"<unclosed", "text/xml; charset=utf-8")
    assert status == 500 and b"<faultcode>soap:Client</faultcode>" in body
    envelope = (b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
                b'<t:shout xmlns:t="http://tests.python-zeep.org/"><t:msg>x</t:msg></t:shout></s:Body></s:Envelope>')
    status, body = post(f"{webservice}/", envelope, "text/xml")
    assert status == 500 and b"unknown operation shout" in body
    status, _ = post(f"{webservice}/", envelope, "application/json")
    assert status == 415


def test_the_client_sends_every_body_through_the_normalizer(webservice):
    with cartero.serve(0) as server:
        plain = cartero.Client(LOCAL, server.port)
        plain.register("Ana", "ana", "01/01/2000")
        plain.register("Bob", "bob", "01/01/2000")
        client = cartero.Client(LOCAL, server.port, normalizer=webservice)
        with plain.connect("bob", listen_host=LOCAL) as bob:
            assert client.send("ana", "bob", "  hola \t   mundo  ") == 1
            assert next(bob) == cartero.Message("ana", 1, "hola mundo")
            assert client.send_attach("ana", "bob", "  mira \t esto ", "/tmp/a.txt") == 2
            assert next(bob) == cartero.AttachMessage("ana", 2, "mira esto", "/tmp/a.txt")
            with socket.socket() as s:
                s.bind((LOCAL, 0))
                down = f"http://{LOCAL}:{s.getsockname()[1]}"
            with pytest.raises(cartero.ConnectionFailed, match="was not sent"):
                cartero.Client(LOCAL, server.port, normalizer=down).send("ana", "bob", "lost")
            assert bob.receive(timeout=0.5) is None
