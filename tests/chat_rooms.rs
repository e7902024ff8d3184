//! Rooms and history (SPEC-chat 7) over real TCP on 127.0.0.1, against `cartero chat serve`:
//! JOIN, PART, ROOM, ROOMS and HISTORY line by line, a member that disconnects, 403 for
//! non-members, bad room names, one client joining 10,000 rooms (the limit), HISTORY with
//! n = 0, 1000000000, 1e9 and not a number, and the original client's legacy framing (400).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{SystemTime, UNIX_EPOCH};

use common::chat::{serve_open, Raw};
use common::LIMIT;

#[test]
fn join_part_room_rooms_and_a_member_that_leaves() {
    let (mut server, port) = serve_open(&[]);
    let mut ana = Raw::join(port, "ana");
    let mut bob = Raw::join(port, "bob");
    ana.expect(&["USER_LIST|ana,bob"]);
    server.expect(&["s> CONNECT ana OK", "s> CONNECT bob OK"]);

    ana.send("JOIN|#sala");
    ana.expect(&["JOINED|#sala|ana"]);
    bob.send("ROOM|#sala|hola");
    bob.expect(&["ERROR|403|No eres miembro de la sala"]);
    bob.send("HISTORY|#sala|5");
    bob.expect(&["ERROR|403|No eres miembro de la sala"]);
    bob.send("PART|#sala");
    bob.expect(&["ERROR|403|No eres miembro de la sala"]);
    bob.send("JOIN|#sala");
    ana.expect(&["JOINED|#sala|ana,bob"]);
    bob.expect(&["JOINED|#sala|ana,bob"]);
    bob.send("ROOM|#sala|hola|a todos");
    ana.expect(&["ROOM|#sala|bob|hola|a todos"]);
    bob.expect(&["ROOM|#sala|bob|hola|a todos"]);
    server.expect(&["s> JOIN ana #sala", "s> ERROR 403 bob", "s> ERROR 403 bob", "s> ERROR 403 bob"]);
    server.expect(&["s> JOIN bob #sala", "s> ROOM bob -> #sala"]);

    for bad in ["sala", "#", "##x", "#a b", "#a,b", &format!("#{}", "x".repeat(32))] {
        ana.send(&format!("JOIN|{bad}"));
        ana.expect(&["ERROR|400|Nombre de sala no válido"]);
    }
    ana.send("JOIN|#otra");
    ana.expect(&["JOINED|#otra|ana"]);
    bob.send("ROOMS");
    bob.expect(&["ROOM_LIST|#otra,#sala"]);

    ana.send("PART|#otra");
    ana.expect(&["PARTED|#otra|ana"]);
    bob.send("ROOMS");
    bob.expect(&["ROOM_LIST|#sala"]);
    ana.send("PART|#sala");
    ana.expect(&["PARTED|#sala|ana"]);
    bob.expect(&["PARTED|#sala|ana"]);
    ana.send("JOIN|#sala");
    ana.expect(&["JOINED|#sala|bob,ana"]);
    bob.expect(&["JOINED|#sala|bob,ana"]);

    // A member whose connection drops leaves its rooms: PARTED, then the user list.
    drop(bob);
    ana.expect(&["PARTED|#sala|bob", "USER_LIST|ana"]);
    ana.send("ROOMS");
    ana.expect(&["ROOM_LIST|#sala"]);
    ana.send("DISCONNECT");
    assert_eq!(ana.line(), None);
    let mut empty = Raw::join(port, "eve");
    empty.send("ROOMS");
    empty.expect(&["ROOM_LIST|"]);
}

#[test]
fn history_of_rooms_broadcasts_and_private_messages() {
    let (_server, port) = serve_open(&[]);
    let mut ana = Raw::join(port, "ana");
    let mut bob = Raw::join(port, "bob");
    let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    ana.send("JOIN|#sala");
    ana.send("ROOM|#sala|en la sala");
    ana.send("BROADCAST|uno");
    ana.send("BROADCAST|dos");
    ana.send("MESSAGE|bob|privado|1");
    ana.send("MESSAGE|nadie|perdido");
    ana.expect_events(&["JOINED|#sala|ana", "ROOM|#sala|ana|en la sala", "BROADCAST|ana|uno", "BROADCAST|ana|dos"]);
    ana.expect(&["ERROR|404|Usuario no encontrado"]);
    bob.expect(&["BROADCAST|ana|uno", "BROADCAST|ana|dos", "MESSAGE|ana|privado|1"]);

    bob.send("HISTORY|*|1000000000");
    let first = bob.line().unwrap();
    let fields: Vec<&str> = first.splitn(5, '|').collect();
    assert_eq!((fields[0], fields[1], fields[2], fields[4]), ("HISTORY", "*", "ana", "uno"), "{first}");
    let millis: u64 = fields[3].parse().unwrap();
    let after = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    assert!(before <= millis && millis <= after, "{before} <= {millis} <= {after}");
    let second = bob.line().unwrap();
    assert!(second.starts_with("HISTORY|*|ana|") && second.ends_with("|dos"), "{second}");
    bob.expect(&["HISTORY_END|*"]);

    bob.send("HISTORY|*|1");
    assert!(bob.line().unwrap().ends_with("|dos"));
    bob.expect(&["HISTORY_END|*"]);
    bob.send("HISTORY|*|0");
    bob.expect(&["HISTORY_END|*"]);
    for bad in ["HISTORY|*|1e9", "HISTORY|*|muchos", "HISTORY|*|-1", "HISTORY|*|"] {
        bob.send(bad);
        bob.expect(&["ERROR|400|Número no válido"]);
    }
    bob.send("HISTORY|ana|10");
    let private = bob.line().unwrap();
    assert!(private.starts_with("HISTORY|ana|ana|") && private.ends_with("|privado|1"), "{private}");
    bob.expect(&["HISTORY_END|ana"]);
    // Nobody else's private messages: eve sees none between ana and bob.
    let mut eve = Raw::join(port, "eve");
    eve.send("HISTORY|ana|10");
    eve.expect_events(&["HISTORY_END|ana"]);
    eve.send("HISTORY|#sala|10");
    eve.expect(&["ERROR|403|No eres miembro de la sala"]);
    eve.send("JOIN|#sala");
    eve.expect(&["JOINED|#sala|ana,eve"]);
    eve.send("HISTORY|#sala|10");
    let room = eve.line().unwrap();
    assert!(room.starts_with("HISTORY|#sala|ana|") && room.ends_with("|en la sala"), "{room}");
    eve.expect(&["HISTORY_END|#sala"]);
}

#[test]
fn one_client_joining_ten_thousand_rooms_meets_the_limit() {
    let (_server, port) = serve_open(&["--max-rooms", "100"]);
    let mut ana = Raw::join(port, "ana");
    let (mut joined, mut refused) = (0, 0);
    // In batches, reading each batch's answers, so the test reads as fast as it writes.
    for batch in 0..100 {
        let lines: String = (0..100).map(|i| format!("JOIN|#r{}\n", batch * 100 + i)).collect();
        ana.write(lines.as_bytes());
        for _ in 0..100 {
            let line = ana.line().expect("an answer to each JOIN");
            if line.starts_with("JOINED|#r") {
                joined += 1;
            } else {
                assert_eq!(line, "ERROR|405|Demasiadas salas");
                refused += 1;
            }
        }
    }
    assert_eq!((joined, refused), (100, 9_900));
    // Still served, still in its rooms.
    ana.send("ROOM|#r99|sigo aquí");
    ana.expect(&["ROOM|#r99|ana|sigo aquí"]);
    ana.send("PART|#r0");
    ana.expect(&["PARTED|#r0|ana"]);
    ana.send("JOIN|#r10000");
    ana.expect(&["JOINED|#r10000|ana"]);
}

#[test]
fn rooms_before_connect_and_on_legacy_connections() {
    let (_server, port) = serve_open(&[]);
    let mut raw = Raw::connect(port);
    for line in ["JOIN|#sala", "ROOM|#sala|x", "ROOMS", "HISTORY|*|5", "PART|#sala"] {
        raw.send(line);
        raw.expect(&["ERROR|401|No conectado"]);
    }
    raw.send("ROOM|#sala");
    raw.expect(&["ERROR|400|Número de campos incorrecto"]);
    // A legacy connection (no terminator): CONNECT, then JOIN in its own write, 400.
    let mut legacy = TcpStream::connect(("127.0.0.1", port)).unwrap();
    legacy.set_read_timeout(Some(LIMIT)).unwrap();
    legacy.write_all(b"CONNECT|viejo").unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains("USER_LIST|viejo") {
        let n = legacy.read(&mut chunk).unwrap();
        assert!(n > 0, "closed");
        got.extend_from_slice(&chunk[..n]);
    }
    legacy.write_all(b"JOIN|#sala").unwrap();
    let n = legacy.read(&mut chunk).unwrap();
    assert_eq!(&chunk[..n], b"ERROR|400|Extensi\xc3\xb3n no soportada");
}
