//! `cartero webservice` and `cartero client --normalizer`, end to end on 127.0.0.1.

mod common;

use std::time::Duration;

use cartero::client::blocking::{Client, Listener};
use cartero::Push;
use common::{serve, Proc, LIMIT};

/// Starts `cartero webservice -p 0`; returns it and its base URL.
fn webservice() -> (Proc, String) {
    let mut ws = Proc::start(&["webservice", "-p", "0"]);
    let line = ws.line();
    let url = line
        .strip_prefix("webservice on ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("start line {line:?}"))
        .trim_end_matches('/')
        .to_string();
    (ws, url)
}

#[test]
fn the_json_endpoint_answers_and_refuses_what_it_must() {
    let (_ws, url) = webservice();
    let text = cartero::webservice::normalize_remote(&url, "  hola \t  mundo ", LIMIT).unwrap();
    assert_eq!(text, "hola mundo");
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let r = agent.post(format!("{url}/normalize")).header("Content-Type", "text/plain").send("x").unwrap();
    assert_eq!(r.status(), 415);
    let r = agent.post(format!("{url}/normalize")).header("Content-Type", "application/json").send("{").unwrap();
    assert_eq!(r.status(), 400);
    let big = format!("{{\"text\":\"{}\"}}", "x".repeat(100_000));
    let mut r =
        agent.post(format!("{url}/normalize")).header("Content-Type", "application/json").send(big.as_str()).unwrap();
    assert_eq!(r.status(), 413);
    let refusal: serde_json::Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    assert!(refusal["error"].as_str().is_some_and(|e| !e.is_empty()), "a JSON error like the others: {refusal}");
    let mut r = agent.get(format!("{url}/?wsdl")).call().unwrap();
    let wsdl = r.body_mut().read_to_string().unwrap();
    for op in ["format", "convert_text", "modify_text"] {
        assert!(wsdl.contains(&format!("<operation name=\"{op}\">")), "{op} in the WSDL");
    }
    assert!(wsdl.contains(&format!("location=\"{url}/\"")), "the WSDL points back at the service");
}

#[test]
fn the_console_client_sends_through_the_normalizer_and_refuses_when_it_is_down() {
    let (_server, port) = serve(&[]);
    let (ws, url) = webservice();
    let c = Client::new("127.0.0.1", port).with_timeout(LIMIT);
    c.register("Bob", "bob", "01/01/2000").unwrap();
    let bob = Listener::bind("127.0.0.1".parse().unwrap()).unwrap();
    c.connect("bob", bob.port()).unwrap();
    let port = port.to_string();
    let mut ana = Proc::start(&["client", "-s", "127.0.0.1", "-p", &port, "--normalizer", &url]);
    ana.type_line("REGISTER ana");
    ana.expect(&["s> REGISTER OK"]);
    ana.type_line("SEND bob   hola \t   mundo   ");
    ana.expect(&["s> SEND OK - MESSAGE 1"]);
    assert_eq!(
        bob.recv_timeout(LIMIT).unwrap(),
        Push::Message { sender: "ana".into(), id: 1, body: "hola mundo".into() }
    );
    // SENDATTACH's message goes through it too (the file name as given).
    ana.type_line("SENDATTACH bob \"  mira \t  esto \" /tmp/a.txt");
    ana.expect(&["s> SENDATTACH OK - MESSAGE 2"]);
    assert_eq!(
        bob.recv_timeout(LIMIT).unwrap(),
        Push::AttachMessage { sender: "ana".into(), id: 2, body: "mira esto".into(), file: "/tmp/a.txt".into() }
    );
    // The service goes down: one line says so, and nothing is sent.
    drop(ws);
    std::thread::sleep(Duration::from_millis(200));
    ana.type_line("SEND bob lost");
    ana.expect(&["s> SEND FAIL"]);
    let (code, _, stderr) = ana.finish();
    assert_eq!(code, 0);
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("normalizer")).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("cannot be reached") && lines[0].ends_with("the message was not sent"), "{}", lines[0]);
    assert!(!lines[0].contains("io:"), "no library prefix in the cause: {}", lines[0]);
    assert!(bob.recv_timeout(Duration::from_millis(500)).is_err(), "nothing was sent");
}
