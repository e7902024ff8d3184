//! Every row and rule of SPEC 2 (requests), 3 (delivery) and 4 (bad input), run through the
//! in-memory harness: real request bytes, the real decoders, the real engine.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use cartero::engine::{Change, DeliveryOutcome, Engine, EngineConfig, EngineError, Scheduler};
use cartero::harness::Harness;
use cartero::wire::{
    CodeEncoding, ConnectReply as C, ConnectedUsersReply as U, DisconnectReply as D, PushNames, RegisterReply as R,
    SendReply as S, UnregisterReply as X,
};
use cartero::{Push, Reply, Request, WireSettings};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn ip(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

fn addr(n: u8, port: u16) -> SocketAddr {
    SocketAddr::new(ip(n), port)
}

fn harness() -> Harness {
    Harness::new(EngineConfig::default(), WireSettings::default())
}

fn register_full(h: &mut Harness, alias: &str, date: &str) -> Reply {
    let req = Request::Register { full_name: b("Full Name"), alias: b(alias), birth_date: Some(b(date)) };
    h.request(ip(1), &req).unwrap()
}

fn register(h: &mut Harness, alias: &str) -> Reply {
    register_full(h, alias, "01/02/2000")
}

fn connect(h: &mut Harness, from: u8, alias: &str, port: &str) -> Reply {
    h.request(ip(from), &Request::Connect { alias: b(alias), port: b(port) }).unwrap()
}

fn disconnect(h: &mut Harness, from: u8, alias: &str) -> Reply {
    h.request(ip(from), &Request::Disconnect { alias: b(alias) }).unwrap()
}

fn send(h: &mut Harness, from: u8, sender: &str, recipient: &str, body: &str) -> Reply {
    h.request(ip(from), &Request::Send { sender: b(sender), recipient: b(recipient), body: b(body) }).unwrap()
}

fn users(h: &mut Harness, from: u8, alias: Option<&str>) -> Reply {
    h.request(ip(from), &Request::ConnectedUsers { alias: alias.map(b) }).unwrap()
}

fn pending(h: &Harness, alias: &str) -> Vec<(String, u32, String)> {
    h.engine.registry().get(alias.as_bytes()).map_or(vec![], |u| {
        u.mailbox
            .iter()
            .map(|m| (String::from_utf8_lossy(&m.sender).into(), m.id, String::from_utf8_lossy(&m.body).into()))
            .collect()
    })
}

fn msg(sender: &str, id: u32, body: &str) -> Push {
    Push::Message { sender: b(sender), id, body: b(body) }
}

// ----------------------------------------------------------------------------------- SPEC 2.1

#[test]
fn register_ok_then_alias_in_use() {
    let mut h = harness();
    assert_eq!(register(&mut h, "ana"), Reply::Register(R::Ok));
    assert_eq!(register(&mut h, "ana"), Reply::Register(R::AliasInUse));
    assert_eq!(h.console(), ["s> REGISTER ana OK", "s> REGISTER ana FAIL"]);
    let user = h.engine.registry().get(b"ana").unwrap();
    assert_eq!((user.last_id, user.is_connected(), user.mailbox.len()), (0, false, 0));
    assert_eq!(user.full_name, "Full Name");
}

#[test]
fn register_accepts_real_dates_with_slashes_or_hyphens_only() {
    let mut h = harness();
    for (i, date) in ["29/02/2000", "31-12-1999", "01/01/0001", "29/02/2024"].iter().enumerate() {
        assert_eq!(register_full(&mut h, &format!("ok{i}"), date), Reply::Register(R::Ok), "{date}");
    }
    for (i, date) in [
        "29/02/1900",
        "31/04/2000",
        "00/01/2000",
        "01/13/2000",
        "01/01/0000",
        "1/2/2000",
        "01/02-2000",
        "01.02.2000",
        "",
        "aa/bb/cccc",
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(register_full(&mut h, &format!("bad{i}"), date), Reply::Register(R::Error), "{date:?}");
        assert!(!h.engine.registry().contains(format!("bad{i}").as_bytes()));
    }
}

#[test]
fn register_short_form_and_empty_fields() {
    let mut h = harness();
    // Seed 000: the user name is the only field.
    assert_eq!(h.serve_bytes(ip(1), b"REGISTER\0solo\0"), b"0\0");
    let user = h.engine.registry().get(b"solo").unwrap();
    assert_eq!((user.full_name.as_ref(), user.birth_date.is_none()), (&b"solo"[..], true));
    assert_eq!(register(&mut h, ""), Reply::Register(R::Error));
    let req = Request::Register { full_name: b(""), alias: b("x"), birth_date: Some(b("01/01/2000")) };
    assert_eq!(h.request(ip(1), &req).unwrap(), Reply::Register(R::Error));
}

#[test]
fn register_beyond_max_users_is_any_other_error() {
    let config = EngineConfig { max_users: 2, ..EngineConfig::default() };
    let mut h = Harness::new(config, WireSettings::default());
    assert_eq!(register(&mut h, "a"), Reply::Register(R::Ok));
    assert_eq!(register(&mut h, "b"), Reply::Register(R::Ok));
    assert_eq!(register(&mut h, "c"), Reply::Register(R::Error));
    assert_eq!(register(&mut h, "a"), Reply::Register(R::AliasInUse));
}

// ----------------------------------------------------------------------------------- SPEC 2.2

#[test]
fn unregister_rows() {
    let mut h = harness();
    assert_eq!(
        h.request(ip(1), &Request::Unregister { alias: b("nobody") }).unwrap(),
        Reply::Unregister(X::NoSuchUser)
    );
    register(&mut h, "ana");
    register(&mut h, "bob");
    send(&mut h, 1, "bob", "ana", "pending");
    assert_eq!(h.engine.registry().pending_total(), 1);
    assert_eq!(h.request(ip(1), &Request::Unregister { alias: b("ana") }).unwrap(), Reply::Unregister(X::Ok));
    assert!(!h.engine.registry().contains(b"ana"));
    assert_eq!(h.engine.registry().pending_total(), 0, "the mailbox goes with the user");
    // Registered again: a new user, empty mailbox, counter at 0.
    register(&mut h, "ana");
    assert!(pending(&h, "ana").is_empty());
    let console = h.console();
    assert!(console.contains(&"s> UNREGISTER nobody FAIL".to_string()));
    assert!(console.contains(&"s> UNREGISTER ana OK".to_string()));
}

#[test]
fn unregister_of_a_connected_user_only_from_its_ip() {
    let mut h = harness();
    register(&mut h, "ana");
    connect(&mut h, 5, "ana", "4000");
    assert_eq!(h.request(ip(6), &Request::Unregister { alias: b("ana") }).unwrap(), Reply::Unregister(X::Error));
    assert!(h.engine.registry().contains(b"ana"));
    assert_eq!(h.request(ip(5), &Request::Unregister { alias: b("ana") }).unwrap(), Reply::Unregister(X::Ok));
    assert_eq!(h.engine.registry().connected_count(), 0);
}

// ----------------------------------------------------------------------------------- SPEC 2.3

#[test]
fn connect_rows() {
    let mut h = harness();
    assert_eq!(connect(&mut h, 1, "ghost", "4000"), Reply::Connect(C::NoSuchUser));
    register(&mut h, "ana");
    for port in ["0", "65536", "abc", "", "-1", "4000 ", "99999999999"] {
        assert_eq!(connect(&mut h, 1, "ana", port), Reply::Connect(C::Error), "{port:?}");
    }
    assert_eq!(connect(&mut h, 7, "ana", "65535"), Reply::Connect(C::Ok));
    let conn = h.engine.registry().get(b"ana").unwrap().connection.unwrap();
    assert_eq!(conn.addr, addr(7, 65535), "IP from the request's source, port from the request");
    assert_eq!(connect(&mut h, 7, "ana", "4000"), Reply::Connect(C::AlreadyConnected));
    let console = h.console();
    assert_eq!(console.last().unwrap(), "s> CONNECT ana FAIL");
    assert!(console.contains(&"s> CONNECT ana OK".to_string()));
}

#[test]
fn connect_delivers_pending_messages_oldest_first_one_at_a_time() {
    let mut h = harness();
    register(&mut h, "ana");
    register(&mut h, "bob");
    for body in ["one", "two", "three"] {
        send(&mut h, 1, "bob", "ana", body);
    }
    assert_eq!(h.engine.poll_delivery(h.now), None, "nothing to deliver while ana is offline");
    let scheduler: &Scheduler = h.engine.scheduler();
    assert_eq!((scheduler.queued(), scheduler.in_flight_count()), (0, 0), "idle while ana is offline");
    h.listen(addr(2, 4000));
    connect(&mut h, 2, "ana", "4000");
    assert_eq!(h.engine.scheduler().queued(), 1, "ana is queued once, whatever her mailbox holds");
    let first = h.engine.poll_delivery(h.now).unwrap();
    assert_eq!(first.push, msg("bob", 1, "one"));
    assert_eq!(h.engine.poll_delivery(h.now), None, "never two at once to one recipient");
    let in_flight: Vec<_> = h.engine.scheduler().in_flight().map(|(id, to)| (id, to.clone())).collect();
    assert_eq!(in_flight, [(first.id, b("ana"))]);
    h.engine.handle_delivery_result(first.id, DeliveryOutcome::Delivered).unwrap();
    h.run_deliveries();
    // The first was reported by hand above; the harness made the other two, in order.
    assert_eq!(h.received(addr(2, 4000)), [msg("bob", 2, "two"), msg("bob", 3, "three")]);
    assert!(pending(&h, "ana").is_empty());
}

// ----------------------------------------------------------------------------------- SPEC 2.4

#[test]
fn disconnect_rows() {
    let mut h = harness();
    assert_eq!(disconnect(&mut h, 1, "ghost"), Reply::Disconnect(D::NoSuchUser));
    register(&mut h, "ana");
    assert_eq!(disconnect(&mut h, 1, "ana"), Reply::Disconnect(D::NotConnected));
    connect(&mut h, 3, "ana", "4000");
    assert_eq!(disconnect(&mut h, 4, "ana"), Reply::Disconnect(D::Error), "only from the connected IP");
    assert!(h.engine.registry().get(b"ana").unwrap().is_connected());
    assert_eq!(disconnect(&mut h, 3, "ana"), Reply::Disconnect(D::Ok));
    assert!(h.engine.registry().get(b"ana").unwrap().connection.is_none());
    let console = h.console();
    assert_eq!(console.last().unwrap(), "s> DISCONNECT ana OK");
    assert_eq!(console.iter().filter(|l| l.as_str() == "s> DISCONNECT ana FAIL").count(), 2);
}

#[test]
fn disconnect_keeps_pending_messages() {
    let mut h = harness();
    register(&mut h, "ana");
    register(&mut h, "bob");
    connect(&mut h, 3, "ana", "4000");
    disconnect(&mut h, 3, "ana");
    send(&mut h, 1, "bob", "ana", "later");
    assert_eq!(pending(&h, "ana"), [("bob".into(), 1, "later".into())]);
    assert_eq!(h.run_deliveries(), 0);
    assert_eq!(h.console().last().unwrap(), "s> MESSAGE 1 FROM bob TO ana STORED");
}

// ----------------------------------------------------------------------------------- SPEC 2.5

#[test]
fn send_needs_both_users() {
    let mut h = harness();
    register(&mut h, "ana");
    assert_eq!(send(&mut h, 1, "ana", "ghost", "x"), Reply::Send(S::NoSuchUser));
    assert_eq!(send(&mut h, 1, "ghost", "ana", "x"), Reply::Send(S::NoSuchUser));
    assert_eq!(h.engine.registry().get(b"ana").unwrap().last_id, 0, "a failed SEND uses no id");
}

#[test]
fn ids_are_per_sender_and_start_at_one() {
    let mut h = harness();
    for u in ["ana", "bob", "eve"] {
        register(&mut h, u);
    }
    assert_eq!(send(&mut h, 1, "ana", "eve", "a1"), Reply::Send(S::Ok { id: 1 }));
    assert_eq!(send(&mut h, 1, "bob", "eve", "b1"), Reply::Send(S::Ok { id: 1 }));
    assert_eq!(send(&mut h, 1, "ana", "bob", "a2"), Reply::Send(S::Ok { id: 2 }));
    assert_eq!(send(&mut h, 1, "ana", "ana", "a3 to self"), Reply::Send(S::Ok { id: 3 }));
    assert_eq!(pending(&h, "eve"), [("ana".into(), 1, "a1".into()), ("bob".into(), 1, "b1".into())]);
}

#[test]
fn ids_wrap_from_u32_max_to_one_never_zero() {
    let mut h = harness();
    register(&mut h, "ana");
    register(&mut h, "bob");
    // Bring ana's counter to just below the top, as a store would on restart.
    h.engine
        .apply(&Change::Stored { recipient: b("bob"), sender: b("ana"), id: u32::MAX - 1, body: b("old"), file: None })
        .unwrap();
    assert_eq!(send(&mut h, 1, "ana", "bob", "x"), Reply::Send(S::Ok { id: u32::MAX }));
    assert_eq!(send(&mut h, 1, "ana", "bob", "y"), Reply::Send(S::Ok { id: 1 }));
    assert_eq!(send(&mut h, 1, "ana", "bob", "z"), Reply::Send(S::Ok { id: 2 }));
}

#[test]
fn send_from_a_connected_sender_only_from_its_ip() {
    let mut h = harness();
    register(&mut h, "ana");
    register(&mut h, "bob");
    connect(&mut h, 3, "ana", "4000");
    assert_eq!(send(&mut h, 4, "ana", "bob", "spoofed"), Reply::Send(S::Error));
    assert_eq!(send(&mut h, 3, "ana", "bob", "real"), Reply::Send(S::Ok { id: 1 }));
    // A disconnected sender may send from anywhere.
    assert_eq!(send(&mut h, 9, "bob", "ana", "hi"), Reply::Send(S::Ok { id: 1 }));
}

#[test]
fn send_over_limits_is_any_other_error_and_changes_nothing() {
    let config = EngineConfig { max_pending_per_user: 2, max_pending_total: 3, ..EngineConfig::default() };
    let mut h = Harness::new(config, WireSettings::default());
    for u in ["ana", "bob", "eve"] {
        register(&mut h, u);
    }
    assert_eq!(send(&mut h, 1, "ana", "bob", "1"), Reply::Send(S::Ok { id: 1 }));
    assert_eq!(send(&mut h, 1, "ana", "bob", "2"), Reply::Send(S::Ok { id: 2 }));
    assert_eq!(send(&mut h, 1, "ana", "bob", "3"), Reply::Send(S::Error), "bob's mailbox is full");
    assert_eq!(send(&mut h, 1, "ana", "eve", "4"), Reply::Send(S::Ok { id: 3 }));
    assert_eq!(send(&mut h, 1, "ana", "eve", "5"), Reply::Send(S::Error), "all mailboxes together are full");
    assert_eq!(h.engine.registry().get(b"ana").unwrap().last_id, 3);

    // A body over 255 bytes cannot be encoded by a client; a driver handing the engine one
    // directly still gets "any other error".
    let mut engine = Engine::default();
    let peer = ip(1);
    for u in ["ana", "bob"] {
        engine.handle_request(peer, &Request::Register { full_name: b(u), alias: b(u), birth_date: None });
    }
    let long = Request::Send { sender: b("ana"), recipient: b("bob"), body: Bytes::from(vec![b'x'; 256]) };
    assert_eq!(engine.handle_request(peer, &long), Reply::Send(S::Error));
    let max = Request::Send { sender: b("ana"), recipient: b("bob"), body: Bytes::from(vec![b'x'; 255]) };
    assert_eq!(engine.handle_request(peer, &max), Reply::Send(S::Ok { id: 1 }));
}

// ----------------------------------------------------------------------------------- SPEC 2.6

#[test]
fn connected_users_with_alias() {
    let mut h = harness();
    assert_eq!(users(&mut h, 1, Some("ghost")), Reply::ConnectedUsers(U::Error));
    register(&mut h, "ana");
    register(&mut h, "bob");
    register(&mut h, "eve");
    assert_eq!(users(&mut h, 1, Some("ana")), Reply::ConnectedUsers(U::NotConnected));
    connect(&mut h, 2, "eve", "4000");
    connect(&mut h, 3, "ana", "4000");
    connect(&mut h, 4, "bob", "4000");
    disconnect(&mut h, 2, "eve");
    connect(&mut h, 2, "eve", "4001");
    assert_eq!(
        users(&mut h, 9, Some("ana")),
        Reply::ConnectedUsers(U::Ok { users: vec![b("ana"), b("bob"), b("eve")] }),
        "in the order users connected, oldest first"
    );
    assert_eq!(h.console().last().unwrap(), "s> CONNECTEDUSERS OK");
}

#[test]
fn connected_users_without_alias_goes_by_source_ip() {
    let mut h = harness();
    register(&mut h, "ana");
    assert_eq!(users(&mut h, 3, None), Reply::ConnectedUsers(U::NotConnected));
    assert_eq!(h.console().last().unwrap(), "s> CONNECTEDUSERS FAIL");
    connect(&mut h, 3, "ana", "4000");
    assert_eq!(users(&mut h, 3, None), Reply::ConnectedUsers(U::Ok { users: vec![b("ana")] }));
    assert_eq!(users(&mut h, 4, None), Reply::ConnectedUsers(U::NotConnected));
    // The short form arrives as the operation alone on the wire.
    assert_eq!(h.serve_bytes(ip(3), b"CONNECTEDUSERS\0"), b"0\01\0ana\0");
}

// ------------------------------------------------------------------------------------- SPEC 3

fn two_connected(settings: WireSettings) -> Harness {
    let mut h = Harness::new(EngineConfig::default(), settings);
    register(&mut h, "ana");
    register(&mut h, "bob");
    h.listen(addr(2, 4000));
    h.listen(addr(3, 5000));
    connect(&mut h, 2, "ana", "4000");
    connect(&mut h, 3, "bob", "5000");
    h.console();
    h
}

#[test]
fn delivery_then_acknowledgement_with_exact_bytes_in_both_spellings() {
    for (names, message, ack) in [
        (PushNames::Spaced, &b"SEND MESSAGE\0ana\01\0hola mundo\0"[..], &b"SEND MESS ACK\01\0"[..]),
        (PushNames::Underscored, b"SEND_MESSAGE\0ana\01\0hola mundo\0", b"SEND_MESS_ACK\01\0"),
    ] {
        let mut h = two_connected(WireSettings { codes: CodeEncoding::Ascii, push_names: names });
        assert_eq!(send(&mut h, 2, "ana", "bob", "hola mundo"), Reply::Send(S::Ok { id: 1 }));
        assert_eq!(h.run_deliveries(), 2);
        assert_eq!(h.listener(addr(3, 5000)).unwrap().raw, [message.to_vec()]);
        assert_eq!(h.listener(addr(2, 4000)).unwrap().raw, [ack.to_vec()]);
        assert!(pending(&h, "bob").is_empty());
        assert_eq!(h.console(), ["s> SEND MESSAGE 1 FROM ana TO bob"]);
    }
}

#[test]
fn no_acknowledgement_to_a_disconnected_sender() {
    let mut h = two_connected(WireSettings::default());
    send(&mut h, 2, "ana", "bob", "bye");
    disconnect(&mut h, 2, "ana");
    assert_eq!(h.run_deliveries(), 1);
    assert_eq!(h.received(addr(3, 5000)), [msg("ana", 1, "bye")]);
    assert!(h.received(addr(2, 4000)).is_empty());
}

#[test]
fn failed_delivery_keeps_the_message_and_disconnects_the_recipient() {
    let mut h = two_connected(WireSettings::default());
    h.close_listener(addr(3, 5000));
    send(&mut h, 2, "ana", "bob", "m1");
    send(&mut h, 2, "ana", "bob", "m2");
    assert_eq!(h.run_deliveries(), 1, "the rest wait for bob's next CONNECT");
    assert!(!h.engine.registry().get(b"bob").unwrap().is_connected());
    assert_eq!(pending(&h, "bob").len(), 2);
    assert!(h.received(addr(2, 4000)).is_empty(), "no acknowledgement for an undelivered message");
    assert_eq!(h.console(), ["s> MESSAGE 1 FROM ana TO bob STORED"]);

    h.listen(addr(3, 6000));
    connect(&mut h, 3, "bob", "6000");
    h.run_deliveries();
    assert_eq!(h.received(addr(3, 6000)), [msg("ana", 1, "m1"), msg("ana", 2, "m2")]);
    assert_eq!(h.received(addr(2, 4000)), [Push::Ack { id: 1 }, Push::Ack { id: 2 }]);
}

#[test]
fn failed_acknowledgement_disconnects_the_sender() {
    let mut h = two_connected(WireSettings::default());
    h.close_listener(addr(2, 4000));
    send(&mut h, 2, "ana", "bob", "m");
    assert_eq!(h.run_deliveries(), 2);
    assert!(!h.engine.registry().get(b"ana").unwrap().is_connected(), "the sender is marked disconnected");
    assert!(h.engine.registry().get(b"bob").unwrap().is_connected());
    assert!(pending(&h, "bob").is_empty(), "the message itself was delivered");
}

#[test]
fn delivery_timeout_fails_the_delivery_and_a_late_result_is_refused() {
    let mut h = two_connected(WireSettings::default());
    send(&mut h, 2, "ana", "bob", "slow");
    let d = h.engine.poll_delivery(h.now).unwrap();
    assert_eq!(h.engine.poll_timeout(), Some(h.now + Duration::from_secs(2)));
    assert_eq!(h.advance(Duration::from_millis(1999)), 0);
    assert_eq!(h.advance(Duration::from_millis(1)), 1);
    assert_eq!(h.engine.poll_timeout(), None);
    assert_eq!(
        h.engine.handle_delivery_result(d.id, DeliveryOutcome::Delivered),
        Err(EngineError::UnknownDelivery(d.id))
    );
    assert!(!h.engine.registry().get(b"bob").unwrap().is_connected());
    assert_eq!(pending(&h, "bob").len(), 1);
}

#[test]
fn an_old_connections_failure_does_not_disconnect_the_new_one() {
    let mut h = two_connected(WireSettings::default());
    send(&mut h, 2, "ana", "bob", "m");
    let d = h.engine.poll_delivery(h.now).unwrap();
    disconnect(&mut h, 3, "bob");
    h.listen(addr(3, 7000));
    connect(&mut h, 3, "bob", "7000");
    assert_eq!(h.engine.poll_delivery(h.now), None, "still one in flight to bob");
    h.engine.handle_delivery_result(d.id, DeliveryOutcome::Failed).unwrap();
    assert!(h.engine.registry().get(b"bob").unwrap().is_connected());
    h.run_deliveries();
    assert_eq!(h.received(addr(3, 7000)), [msg("ana", 1, "m")]);
}

#[test]
fn unregister_during_a_delivery_then_register_again() {
    let mut h = two_connected(WireSettings::default());
    send(&mut h, 2, "ana", "bob", "m");
    let d = h.engine.poll_delivery(h.now).unwrap();
    assert_eq!(h.request(ip(3), &Request::Unregister { alias: b("bob") }).unwrap(), Reply::Unregister(X::Ok));
    register(&mut h, "bob");
    send(&mut h, 2, "ana", "bob", "for the new bob");
    h.engine.handle_delivery_result(d.id, DeliveryOutcome::Delivered).unwrap();
    assert_eq!(pending(&h, "bob"), [("ana".into(), 2, "for the new bob".into())], "the new bob's mailbox is untouched");
}

#[test]
fn deliveries_to_different_recipients_run_in_parallel() {
    let mut h = harness();
    register(&mut h, "src");
    for (i, u) in ["r1", "r2", "r3"].iter().enumerate() {
        register(&mut h, u);
        connect(&mut h, 10 + i as u8, u, "4000");
        send(&mut h, 1, "src", u, "x");
        send(&mut h, 1, "src", u, "y");
    }
    let batch: Vec<_> = std::iter::from_fn(|| h.engine.poll_delivery(h.now)).collect();
    let mut to: Vec<_> = batch.iter().map(|d| d.to.clone()).collect();
    to.sort();
    assert_eq!(to, [b("r1"), b("r2"), b("r3")], "one per recipient, all at once");
    assert_eq!(h.engine.in_flight(), 3);
}

// ------------------------------------------------------------------------------------- SPEC 4

#[test]
fn bad_input_gets_the_operations_error_code_or_nothing_and_changes_nothing() {
    let mut h = harness();
    register(&mut h, "ana");
    let mut long = b"SEND\0ana\0ana\0".to_vec();
    long.extend(vec![b'x'; 100_000]);
    let cases: Vec<(&[u8], &[u8])> = vec![
        (b"HELLO\0", b""),
        (b"", b""),
        (b"REGISTER", b""),
        (b"SEND\0ana\0ana\0no nul", b"2\0"),
        (b"CONNECT\0ana\0", b"3\0"),
        (b"DISCONNECT\0an", b"3\0"),
        (b"REGISTER\0Name\0bob\0", b"2\0"),
        (&long, b"2\0"),
    ];
    for (input, expected) in cases {
        assert_eq!(
            h.serve_bytes(ip(1), input),
            expected,
            "{:?}",
            String::from_utf8_lossy(&input[..input.len().min(40)])
        );
    }
    assert_eq!(h.engine.registry().len(), 1);
    assert_eq!(h.engine.registry().pending_total(), 0);
    assert!(!h.engine.registry().get(b"ana").unwrap().is_connected());
    h.settings.codes = CodeEncoding::Raw;
    assert_eq!(h.serve_bytes(ip(1), b"CONNECT\0ana\0"), b"\x03");
}

// --------------------------------------------------------------------------- changes and apply

#[test]
fn replaying_recorded_changes_rebuilds_the_state() {
    let config = EngineConfig { record_changes: true, ..EngineConfig::default() };
    let mut h = Harness::new(config, WireSettings::default());
    register(&mut h, "ana");
    register(&mut h, "bob");
    register(&mut h, "eve");
    h.listen(addr(2, 4000));
    connect(&mut h, 2, "ana", "4000");
    connect(&mut h, 3, "bob", "5000"); // no listener: delivery fails, bob is disconnected
    send(&mut h, 2, "ana", "bob", "kept");
    send(&mut h, 3, "bob", "ana", "delivered");
    send(&mut h, 1, "eve", "bob", "second");
    h.request(ip(1), &Request::Unregister { alias: b("eve") }).unwrap();
    h.run_deliveries();

    let changes: Vec<Change> = std::iter::from_fn(|| h.engine.poll_change()).collect();
    assert!(changes.iter().any(|c| matches!(c, Change::Removed { .. })));
    assert!(changes.contains(&Change::Disconnected { alias: b("bob") }));
    let mut restored = Engine::default();
    for change in &changes {
        restored.apply(change).unwrap();
    }
    let summary = |e: &Engine| {
        let mut users: Vec<_> = e
            .registry()
            .iter()
            .map(|(alias, u)| {
                (alias.clone(), u.last_id, u.connection.map(|c| c.addr), u.mailbox.iter().cloned().collect::<Vec<_>>())
            })
            .collect();
        users.sort_by(|a, b| a.0.cmp(&b.0));
        (users, e.registry().connected().cloned().collect::<Vec<_>>())
    };
    assert_eq!(summary(&restored), summary(&h.engine));
    let again = restored.apply(&Change::Registered { alias: b("ana"), full_name: b("x"), birth_date: None });
    assert_eq!(again, Err(EngineError::InconsistentChange("registering an alias in use")));
}

// ------------------------------------------------------------------- holds and durability

fn plain_engine(record_changes: bool) -> Engine {
    Engine::new(EngineConfig { record_changes, record_events: false, ..EngineConfig::default() })
}

fn req_register(alias: &str) -> Request {
    Request::Register { full_name: b(alias), alias: b(alias), birth_date: None }
}

#[test]
fn held_pushes_wait_for_the_reply_to_be_sent() {
    let mut e = plain_engine(false);
    let now = std::time::Instant::now();
    for u in ["ana", "bob"] {
        let _ = e.handle_request(ip(1), &req_register(u));
    }
    let (reply, hold) = e.handle_request_held(ip(2), &Request::Connect { alias: b("ana"), port: b("4000") });
    assert_eq!(reply, Reply::Connect(C::Ok));
    e.release(hold);
    e.handle_request(ip(3), &Request::Connect { alias: b("bob"), port: b("5000") });
    let (reply, hold) =
        e.handle_request_held(ip(2), &Request::Send { sender: b("ana"), recipient: b("bob"), body: b("x") });
    assert_eq!(reply, Reply::Send(S::Ok { id: 1 }));
    assert_eq!(e.poll_delivery(now), None, "the push waits for SEND's reply");
    e.release(hold);
    let d = e.poll_delivery(now).expect("released");
    assert_eq!(d.push, msg("ana", 1, "x"));
}

#[test]
fn pending_messages_wait_for_the_connect_reply() {
    let mut e = plain_engine(false);
    let now = std::time::Instant::now();
    for u in ["ana", "bob"] {
        let _ = e.handle_request(ip(1), &req_register(u));
    }
    e.handle_request(ip(1), &Request::Send { sender: b("ana"), recipient: b("bob"), body: b("waiting") });
    let (_, hold) = e.handle_request_held(ip(3), &Request::Connect { alias: b("bob"), port: b("5000") });
    assert_eq!(e.poll_delivery(now), None, "no push before CONNECT's reply");
    e.release(hold);
    assert_eq!(e.poll_delivery(now).unwrap().push, msg("ana", 1, "waiting"));
}

#[test]
fn with_a_store_pushes_wait_for_durability() {
    let mut e = plain_engine(true);
    let now = std::time::Instant::now();
    for u in ["ana", "bob"] {
        let _ = e.handle_request(ip(1), &req_register(u));
    }
    e.handle_request(ip(3), &Request::Connect { alias: b("bob"), port: b("5000") });
    e.handle_request(ip(1), &Request::Send { sender: b("ana"), recipient: b("bob"), body: b("m") });
    let changes: Vec<Change> = std::iter::from_fn(|| e.poll_change()).collect();
    assert_eq!(changes.len(), 4);
    assert_eq!(e.change_seq(), 4);
    e.mark_durable(3);
    assert_eq!(e.poll_delivery(now), None, "the stored message is not durable yet");
    e.mark_durable(4);
    assert_eq!(e.poll_delivery(now).unwrap().push, msg("ana", 1, "m"));
}

#[test]
fn restore_rebuilds_users_counters_connections_and_mailboxes() {
    use cartero::engine::{MessageRecord, UserRecord};
    let users = vec![
        UserRecord {
            alias: b("bob"),
            full_name: b("Bob"),
            birth_date: None,
            last_id: 7,
            connection: Some(addr(3, 5000)),
            uid: 1,
            acks: vec![],
        },
        UserRecord {
            alias: b("ana"),
            full_name: b("Ana"),
            birth_date: Some(b("01/01/2000")),
            last_id: 2,
            connection: Some(addr(2, 4000)),
            uid: 2,
            acks: vec![],
        },
        UserRecord {
            alias: b("eve"),
            full_name: b("Eve"),
            birth_date: None,
            last_id: 0,
            connection: None,
            uid: 3,
            acks: vec![],
        },
    ];
    let messages = vec![
        MessageRecord { recipient: b("bob"), sender: b("ana"), id: 1, body: b("first"), file: None, sender_uid: 2 },
        MessageRecord {
            recipient: b("eve"),
            sender: b("gone"),
            id: 9,
            body: b("from an unregistered sender"),
            file: None,
            sender_uid: 9,
        },
        MessageRecord { recipient: b("bob"), sender: b("ana"), id: 2, body: b("second"), file: None, sender_uid: 2 },
    ];
    let mut e = Engine::restore(EngineConfig::default(), users, messages).unwrap();
    assert_eq!(e.registry().connected().cloned().collect::<Vec<_>>(), [b("bob"), b("ana")]);
    assert_eq!(
        e.handle_request(ip(2), &Request::Send { sender: b("ana"), recipient: b("eve"), body: b("x") }),
        Reply::Send(S::Ok { id: 3 })
    );
    assert_eq!(e.registry().get(b"eve").unwrap().mailbox.len(), 2);
    let d = e.poll_delivery(std::time::Instant::now()).unwrap();
    assert_eq!((d.addr, d.push), (addr(3, 5000), msg("ana", 1, "first")));
    let dup = vec![
        UserRecord {
            alias: b("x"),
            full_name: b("x"),
            birth_date: None,
            last_id: 0,
            connection: None,
            uid: 0,
            acks: vec![]
        };
        2
    ];
    assert!(Engine::restore(EngineConfig::default(), dup, vec![]).is_err());
}

#[test]
fn a_hold_of_a_replaced_engine_releases_nothing_of_the_new_one() {
    let now = std::time::Instant::now();
    let mut old = plain_engine(false);
    let _ = old.handle_request(ip(1), &req_register("x"));
    let (_, stale) = old.handle_request_held(ip(1), &Request::Connect { alias: b("x"), port: b("4000") });
    let mut new = plain_engine(false);
    for u in ["ana", "bob"] {
        let _ = new.handle_request(ip(1), &req_register(u));
    }
    new.handle_request(ip(3), &Request::Connect { alias: b("bob"), port: b("5000") });
    let (_, fresh) =
        new.handle_request_held(ip(1), &Request::Send { sender: b("ana"), recipient: b("bob"), body: b("m") });
    new.release(stale);
    assert_eq!(new.poll_delivery(now), None, "the old engine's hold must not release the new SEND's push");
    new.release(fresh);
    assert!(new.poll_delivery(now).is_some());
}

// ----------------------------------------------------------------------------------- SPEC 8

fn send_attach(h: &mut Harness, from: u8, sender: &str, recipient: &str, body: &str, file: &str) -> Reply {
    let req = Request::SendAttach { sender: b(sender), recipient: b(recipient), body: b(body), file: b(file) };
    h.request(ip(from), &req).unwrap()
}

fn users_with_addresses(h: &mut Harness, from: u8, alias: Option<&str>) -> Reply {
    h.request(ip(from), &Request::Users { alias: alias.map(b) }).unwrap()
}

#[test]
fn users_lists_names_with_addresses_under_connectedusers_rules() {
    use cartero::wire::{UserEntry, UsersReply as L};
    let mut h = two_connected(WireSettings::default());
    register(&mut h, "eve");
    let entry = |name: &str, n: u8, port: u16| UserEntry { name: b(name), ip: ip(n), port };
    let all = Reply::Users(L::Ok { users: vec![entry("ana", 2, 4000), entry("bob", 3, 5000)] });
    assert_eq!(users_with_addresses(&mut h, 9, Some("ana")), all);
    assert_eq!(users_with_addresses(&mut h, 3, None), all, "by source IP without a name");
    assert_eq!(users_with_addresses(&mut h, 9, None), Reply::Users(L::NotConnected));
    assert_eq!(users_with_addresses(&mut h, 9, Some("eve")), Reply::Users(L::NotConnected));
    assert_eq!(users_with_addresses(&mut h, 9, Some("nobody")), Reply::Users(L::Error));
    assert_eq!(
        h.console(),
        ["s> REGISTER eve OK", "s> USERS OK", "s> USERS OK", "s> USERS FAIL", "s> USERS FAIL", "s> USERS FAIL"]
    );
    // Exact bytes, both code encodings.
    for (codes, want) in [
        (CodeEncoding::Ascii, &b"0\x002\x00ana :: 127.0.0.2 :: 4000\x00bob :: 127.0.0.3 :: 5000\x00"[..]),
        (CodeEncoding::Raw, b"\x002\x00ana :: 127.0.0.2 :: 4000\x00bob :: 127.0.0.3 :: 5000\x00"),
    ] {
        let mut h = two_connected(WireSettings { codes, push_names: PushNames::Spaced });
        assert_eq!(h.serve_bytes(ip(2), b"USERS\0ana\0"), want);
    }
}

#[test]
fn sendattach_shares_the_mailbox_and_the_per_sender_counter() {
    let mut h = harness();
    register(&mut h, "ana");
    register(&mut h, "bob");
    assert_eq!(send(&mut h, 1, "ana", "bob", "one"), Reply::Send(S::Ok { id: 1 }));
    assert_eq!(send_attach(&mut h, 1, "ana", "bob", "two", "/home/ana/a.txt"), Reply::SendAttach(S::Ok { id: 2 }));
    assert_eq!(send(&mut h, 1, "ana", "bob", "three"), Reply::Send(S::Ok { id: 3 }));
    assert_eq!(send_attach(&mut h, 1, "ana", "nobody", "x", "/f"), Reply::SendAttach(S::NoSuchUser));
    assert_eq!(send_attach(&mut h, 1, "ana", "bob", "x", ""), Reply::SendAttach(S::Error), "an empty file name");
    assert_eq!(
        send_attach(&mut h, 1, "ana", "bob", "x", "relative/name"),
        Reply::SendAttach(S::Ok { id: 4 }),
        "a relative name is the client's business"
    );
    assert_eq!(
        h.console(),
        [
            "s> REGISTER ana OK",
            "s> REGISTER bob OK",
            "s> MESSAGE 1 FROM ana TO bob STORED",
            "s> SENDATTACH MESSAGE 2 FROM ana TO bob FILE /home/ana/a.txt STORED",
            "s> MESSAGE 3 FROM ana TO bob STORED",
            "s> SENDATTACH MESSAGE 4 FROM ana TO bob FILE relative/name STORED",
        ]
    );
    // Pending SEND and SENDATTACH go out in id order, mixed, each acknowledged in its kind.
    h.listen(addr(2, 4000));
    h.listen(addr(3, 5000));
    connect(&mut h, 2, "ana", "4000");
    connect(&mut h, 3, "bob", "5000");
    h.console();
    assert_eq!(h.run_deliveries(), 8);
    assert_eq!(
        h.received(addr(3, 5000)),
        [
            msg("ana", 1, "one"),
            Push::AttachMessage { sender: b("ana"), id: 2, body: b("two"), file: b("/home/ana/a.txt") },
            msg("ana", 3, "three"),
            Push::AttachMessage { sender: b("ana"), id: 4, body: b("x"), file: b("relative/name") },
        ]
    );
    assert_eq!(
        h.received(addr(2, 4000)),
        [
            Push::Ack { id: 1 },
            Push::AttachAck { id: 2, file: b("/home/ana/a.txt") },
            Push::Ack { id: 3 },
            Push::AttachAck { id: 4, file: b("relative/name") },
        ]
    );
    assert_eq!(
        h.console(),
        [
            "s> SEND MESSAGE 1 FROM ana TO bob",
            "s> SENDATTACH MESSAGE 2 FROM ana TO bob FILE /home/ana/a.txt",
            "s> SEND MESSAGE 3 FROM ana TO bob",
            "s> SENDATTACH MESSAGE 4 FROM ana TO bob FILE relative/name",
        ]
    );
}

#[test]
fn sendattach_pushes_exact_bytes_in_both_spellings() {
    for (names, message, ack) in [
        (
            PushNames::Spaced,
            &b"SEND MESSAGE ATTACH\0ana\01\0mira\0/tmp/f.txt\0"[..],
            &b"SEND MESS ATTACH ACK\01\0/tmp/f.txt\0"[..],
        ),
        (
            PushNames::Underscored,
            b"SEND_MESSAGE_ATTACH\0ana\01\0mira\0/tmp/f.txt\0",
            b"SEND_MESS_ATTACH_ACK\01\0/tmp/f.txt\0",
        ),
    ] {
        let mut h = two_connected(WireSettings { codes: CodeEncoding::Raw, push_names: names });
        assert_eq!(h.serve_bytes(ip(2), b"SENDATTACH\0ana\0bob\0mira\0/tmp/f.txt\0"), b"\x001\0");
        assert_eq!(h.run_deliveries(), 2);
        assert_eq!(h.listener(addr(3, 5000)).unwrap().raw, [message.to_vec()]);
        assert_eq!(h.listener(addr(2, 4000)).unwrap().raw, [ack.to_vec()]);
    }
}

#[test]
fn sendattach_bad_input_gets_any_other_error_and_changes_nothing() {
    let mut h = two_connected(WireSettings::default());
    let mut long = b"SENDATTACH\0ana\0bob\0hola\0/".to_vec();
    long.extend(std::iter::repeat_n(b'x', 255));
    long.push(0);
    assert_eq!(h.serve_bytes(ip(2), &long), b"2\0", "a file name over 255 bytes");
    assert_eq!(h.serve_bytes(ip(2), b"SENDATTACH\0ana\0bob\0hola\0\0"), b"2\0", "an empty file name");
    assert_eq!(h.serve_bytes(ip(9), b"SENDATTACH\0ana\0bob\0hola\0/f\0"), b"2\0", "not from ana's IP");
    assert_eq!(h.serve_bytes(ip(2), b"SENDATTACH\0ana\0bob\0hola\0"), b"2\0", "the file name never came");
    assert!(pending(&h, "bob").is_empty());
    assert_eq!(h.engine.registry().get(b"ana").unwrap().last_id, 0);
}

#[test]
fn sendattach_survives_a_restart_through_changes() {
    let config = EngineConfig { record_changes: true, ..EngineConfig::default() };
    let mut e = Engine::new(config.clone());
    for alias in ["ana", "bob"] {
        e.handle_request(ip(1), &Request::Register { full_name: b(alias), alias: b(alias), birth_date: None });
    }
    let req = Request::SendAttach { sender: b("ana"), recipient: b("bob"), body: b("m"), file: b("/f") };
    assert_eq!(e.handle_request(ip(1), &req), Reply::SendAttach(S::Ok { id: 1 }));
    let changes: Vec<Change> = std::iter::from_fn(|| e.poll_change()).collect();
    assert!(changes.contains(&Change::Stored {
        recipient: b("bob"),
        sender: b("ana"),
        id: 1,
        body: b("m"),
        file: Some(b("/f"))
    }));
    let mut replayed = Engine::new(config);
    for c in &changes {
        replayed.apply(c).unwrap();
    }
    let m = replayed.registry().get(b"bob").unwrap().mailbox.front().unwrap().clone();
    assert_eq!((m.id, m.file), (1, Some(b("/f"))));
}
