//! Per-address limits of `cartero chat serve` (issue 17), with its defaults: 16 connections
//! per IP address, then `ERROR|429`; a burst of 5 messages, then 2 per second, the excess
//! delayed, and a client more than 10 s over the rate dropped with `ERROR|429`. Another
//! address (127.0.0.2, which Linux loopback answers) is not affected.

mod common;

use common::chat::{serve, Raw};
use common::LIMIT;

#[test]
fn the_17th_connection_from_one_address_is_refused_and_others_are_not() {
    let (mut server, port) = serve(&["--memory"]);
    let mut open: Vec<Raw> = (0..16).map(|_| Raw::connect(port)).collect();
    let mut extra = Raw::connect(port);
    assert_eq!(extra.event(), Some("ERROR|429|Demasiadas conexiones desde esta dirección".into()));
    assert_eq!(extra.event(), None, "then closed");
    server.expect(&[&format!("s> ERROR 429 {}", extra.stream.local_addr().unwrap())]);
    // Another address has its own count.
    let _zoe = Raw::join_from("127.0.0.2", port, "zoe");
    // Those open are served; once one closes, another may come in.
    let mut first = open.remove(0);
    first.send("CONNECT|ana");
    assert_eq!(first.event(), Some("CONNECT_ACK|OK".into()));
    drop(first);
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        let mut again = Raw::connect(port);
        again.send("CONNECT|ana2");
        match again.event().as_deref() {
            Some("CONNECT_ACK|OK") => break,
            Some("ERROR|429|Demasiadas conexiones desde esta dirección") => {}
            other => panic!("unexpected {other:?}"),
        }
        assert!(std::time::Instant::now() < deadline, "the closed connection was never counted out");
    }
}

#[test]
fn a_flood_is_delayed_then_dropped_and_another_address_goes_on() {
    let (_server, port) = serve(&["--memory"]);
    let mut zoe = Raw::join_from("127.0.0.2", port, "zoe");
    let mut ana = Raw::join(port, "ana");
    // Past the burst, messages are delayed, not refused: all arrive, in order.
    let burst: String = (0..8).map(|i| format!("BROADCAST|a{i}\n")).collect();
    ana.write(burst.as_bytes());
    for i in 0..8 {
        assert_eq!(ana.event(), Some(format!("BROADCAST|ana|a{i}")));
        assert_eq!(zoe.event(), Some(format!("BROADCAST|ana|a{i}")));
    }
    // A flood (more than 10 s of messages at 2 per second) is dropped with 429.
    let flood: String = (0..60).map(|i| format!("BROADCAST|f{i}\n")).collect();
    ana.write(flood.as_bytes());
    let mut echoed = 0;
    loop {
        match ana.event() {
            Some(line) if line == format!("BROADCAST|ana|f{echoed}") => echoed += 1,
            Some(line) => {
                assert_eq!(line, "ERROR|429|Demasiados mensajes");
                break;
            }
            None => panic!("closed without ERROR|429"),
        }
    }
    assert!(echoed < 60, "not every message of the flood was taken");
    assert_eq!(ana.event(), None, "then closed");
    // Zoe, on another address, goes on at her own rate.
    for i in 0..echoed {
        assert_eq!(zoe.event(), Some(format!("BROADCAST|ana|f{i}")));
    }
    for i in 0..3 {
        zoe.send(&format!("BROADCAST|z{i}"));
        assert_eq!(zoe.event(), Some(format!("BROADCAST|zoe|z{i}")));
    }
}
