//! SPEC 8 (course 2025/26) over real TCP on 127.0.0.1: USERS and SENDATTACH through the
//! client library, the listener's GET FILE and the requester's three answer forms, and the
//! bad input of issue 15 (names never attached, `../..`, deleted files, a requester that
//! stops reading, a listener that closes mid-transfer).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use cartero::client::blocking::{Client, Listener};
use cartero::messaging::files::{get_file, AnswerForm, GetFileError, Offers};
use cartero::server::{Server, ServerConfig};
use cartero::wire::{ConnectReply, RegisterReply, SendReply, UserEntry, UsersReply};
use cartero::Push;

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const LIMIT: Duration = Duration::from_secs(10);

/// A server on a thread of its own, for the blocking clients; it stops with the test.
fn server() -> u16 {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        rt.block_on(async {
            let config = ServerConfig { bind: SocketAddr::new(LOCAL, 0), ..ServerConfig::default() };
            let server = Server::bind(config).await.unwrap();
            tx.send(server.local_addr().unwrap().port()).unwrap();
            let _ = server.run(std::future::pending()).await;
        });
    });
    rx.recv_timeout(LIMIT).unwrap()
}

fn recv(l: &Listener) -> Push {
    l.recv_timeout(LIMIT).expect("a push arrives")
}

/// Files left in `dir` (to see that no partial file stays behind).
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn sendattach_users_and_getfile_between_two_clients() {
    let port = server();
    let c = Client::new("127.0.0.1", port).with_timeout(LIMIT);
    let home = tempfile::tempdir().unwrap();
    let inbox = tempfile::tempdir().unwrap();
    let offered = home.path().join("apuntes.bin");
    let content: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&offered, &content).unwrap();

    let ana_offers = Offers::new();
    let ana = Listener::bind_offering(LOCAL, ana_offers.clone()).unwrap();
    let bob = Listener::bind_offering(LOCAL, Offers::new()).unwrap();
    for (alias, l) in [("ana", &ana), ("bob", &bob)] {
        assert_eq!(c.register_alias(alias).unwrap(), RegisterReply::Ok);
        assert_eq!(c.connect(alias, l.port()).unwrap(), ConnectReply::Ok);
    }
    let file = offered.to_str().unwrap();
    assert_eq!(c.send("ana", "bob", "first").unwrap(), SendReply::Ok { id: 1 });
    assert_eq!(c.send_attach("ana", "bob", "mira esto", file).unwrap(), SendReply::Ok { id: 2 });
    assert!(ana_offers.offer(file.as_bytes()));
    assert_eq!(c.send_attach("ana", "ghost", "x", file).unwrap(), SendReply::NoSuchUser);
    assert_eq!(c.send_attach("ana", "bob", "x", "").unwrap(), SendReply::Error);
    assert_eq!(recv(&bob), Push::Message { sender: "ana".into(), id: 1, body: "first".into() });
    assert_eq!(
        recv(&bob),
        Push::AttachMessage { sender: "ana".into(), id: 2, body: "mira esto".into(), file: file.to_string().into() }
    );
    assert_eq!(recv(&ana), Push::Ack { id: 1 });
    assert_eq!(recv(&ana), Push::AttachAck { id: 2, file: file.to_string().into() });

    let UsersReply::Ok { users } = c.users(Some(b"bob")).unwrap() else { panic!("USERS refused") };
    assert_eq!(
        users,
        [
            UserEntry { name: "ana".into(), ip: LOCAL, port: ana.port() },
            UserEntry { name: "bob".into(), ip: LOCAL, port: bob.port() }
        ]
    );
    assert_eq!(c.users(Some(b"ghost")).unwrap(), UsersReply::Error);

    // bob fetches the file from ana's listener.
    let dest = inbox.path().join("copia.bin");
    let ana_addr = SocketAddr::new(users[0].ip, users[0].port);
    assert_eq!(get_file(ana_addr, b"bob", file.as_bytes(), &dest, AnswerForm::Auto).unwrap(), content.len() as u64);
    assert_eq!(std::fs::read(&dest).unwrap(), content);
    assert_eq!(get_file(ana_addr, b"bob", file.as_bytes(), &dest, AnswerForm::Sized).unwrap(), content.len() as u64);

    // Anything ana did not attach in this session is refused, and nothing is written.
    let never = home.path().join("never.txt");
    std::fs::write(&never, b"secret").unwrap();
    let refused = |name: &[u8]| get_file(ana_addr, b"bob", name, &inbox.path().join("x"), AnswerForm::Auto);
    for name in [never.to_str().unwrap().as_bytes(), b"../..", b"/etc/passwd", b""] {
        assert!(matches!(refused(name), Err(GetFileError::Refused)), "{}", name.escape_ascii());
    }
    // A file deleted since it was attached.
    std::fs::remove_file(&offered).unwrap();
    assert!(matches!(refused(file.as_bytes()), Err(GetFileError::Refused)));
    assert_eq!(entries(inbox.path()), ["copia.bin"]);
    // bob's listener offers nothing.
    let bob_addr = SocketAddr::new(LOCAL, bob.port());
    assert!(matches!(
        get_file(bob_addr, b"ana", file.as_bytes(), &inbox.path().join("y"), AnswerForm::Auto),
        Err(GetFileError::Refused)
    ));
    // Pushes still arrive after all of that.
    assert_eq!(c.send("bob", "ana", "still here").unwrap(), SendReply::Ok { id: 1 });
    assert_eq!(recv(&ana), Push::Message { sender: "bob".into(), id: 1, body: "still here".into() });
}

/// A listener of another implementation: answers every GET FILE with `answer`, after reading
/// the request's three fields.
fn fake_listener(answer: Vec<u8>) -> SocketAddr {
    let listener = TcpListener::bind((LOCAL, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(4) {
            let Ok(mut stream) = stream else { continue };
            stream.set_read_timeout(Some(LIMIT)).unwrap();
            let (mut nuls, mut byte) = (0, [0u8; 1]);
            while nuls < 3 && stream.read(&mut byte).unwrap_or(0) == 1 {
                nuls += usize::from(byte[0] == 0);
            }
            let _ = stream.write_all(&answer);
        }
    });
    addr
}

#[test]
fn getfile_reads_the_three_answer_forms_of_public_clients() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("f");
    let cases: Vec<(&[u8], AnswerForm, &[u8])> = vec![
        (b"OK\x005\0hello", AnswerForm::Auto, b"hello"),
        (b"OK\x000\0", AnswerForm::Auto, b""),
        (b"\0raw bytes after a zero", AnswerForm::Auto, b"raw bytes after a zero"),
        (b"plain bytes to the end", AnswerForm::Auto, b"plain bytes to the end"),
        (b"OK", AnswerForm::Auto, b"OK"),
        (b"OK\x005\0hello", AnswerForm::Raw, b"OK\x005\0hello"),
        (b"\0abc", AnswerForm::ZeroByte, b"abc"),
    ];
    for (answer, form, want) in cases {
        let addr = fake_listener(answer.to_vec());
        let got = get_file(addr, b"bob", b"/f", &dest, form);
        assert_eq!(got.unwrap(), want.len() as u64, "{}", answer.escape_ascii());
        assert_eq!(std::fs::read(&dest).unwrap(), want);
    }
    assert_eq!(entries(dir.path()), ["f"], "no temporary file stays");
}

#[test]
fn getfile_keeps_no_partial_file_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("f");
    // The listener closes in the middle of the transfer.
    let cut = fake_listener(b"OK\x00100\0only ten b".to_vec());
    assert!(matches!(
        get_file(cut, b"bob", b"/f", &dest, AnswerForm::Auto),
        Err(GetFileError::Truncated { got: 10, expected: 100 })
    ));
    let refused = fake_listener(b"ERROR\0".to_vec());
    assert!(matches!(get_file(refused, b"bob", b"/f", &dest, AnswerForm::Auto), Err(GetFileError::Refused)));
    let empty = fake_listener(Vec::new());
    assert!(matches!(get_file(empty, b"bob", b"/f", &dest, AnswerForm::Auto), Err(GetFileError::Empty)));
    let garbage = fake_listener(b"OK\0twelve\0".to_vec());
    assert!(matches!(get_file(garbage, b"bob", b"/f", &dest, AnswerForm::Auto), Err(GetFileError::BadAnswer(_))));
    // Nobody listening.
    let gone = TcpListener::bind((LOCAL, 0)).unwrap().local_addr().unwrap();
    assert!(matches!(get_file(gone, b"bob", b"/f", &dest, AnswerForm::Auto), Err(GetFileError::Connect { .. })));
    // A file name over the field limit is refused before anything is sent.
    let long = vec![b'/'; 256];
    assert!(matches!(get_file(cut, b"bob", &long, &dest, AnswerForm::Auto), Err(GetFileError::Invalid(_))));
    assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
}

#[test]
fn a_requester_that_stops_reading_holds_up_nothing_else() {
    let port = server();
    let c = Client::new("127.0.0.1", port).with_timeout(LIMIT);
    let home = tempfile::tempdir().unwrap();
    let big = home.path().join("big.bin");
    std::fs::write(&big, vec![7u8; 32 * 1024 * 1024]).unwrap();
    let small = home.path().join("small.txt");
    std::fs::write(&small, b"small").unwrap();
    let offers = Offers::new();
    assert!(offers.offer(big.to_str().unwrap().as_bytes()));
    assert!(offers.offer(small.to_str().unwrap().as_bytes()));
    let ana = Listener::bind_offering(LOCAL, offers).unwrap();
    let bob = Listener::bind(LOCAL).unwrap();
    for (alias, l) in [("ana", &ana), ("bob", &bob)] {
        c.register_alias(alias).unwrap();
        assert_eq!(c.connect(alias, l.port()).unwrap(), ConnectReply::Ok);
    }
    let ana_addr = SocketAddr::new(LOCAL, ana.port());
    // A requester asks for the big file and reads nothing.
    let mut stuck = TcpStream::connect(ana_addr).unwrap();
    stuck.write_all(format!("GET_FILE\0bob\0{}\0", big.display()).as_bytes()).unwrap();
    // Meanwhile other transfers and pushes go on.
    let dest = home.path().join("copy.txt");
    assert_eq!(get_file(ana_addr, b"bob", small.to_str().unwrap().as_bytes(), &dest, AnswerForm::Auto).unwrap(), 5);
    assert_eq!(c.send("bob", "ana", "hola").unwrap(), SendReply::Ok { id: 1 });
    assert_eq!(recv(&ana), Push::Message { sender: "bob".into(), id: 1, body: "hola".into() });
    // What the stuck requester does get starts with the sized form's head.
    let mut head = [0u8; 12];
    stuck.set_read_timeout(Some(LIMIT)).unwrap();
    stuck.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"OK\x0033554432\0");
}

/// The async listener serves GET FILE the same way (and still takes pushes).
#[test]
fn the_async_listener_serves_get_file_too() {
    let port = server();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let home = tempfile::tempdir().unwrap();
    let notes = home.path().join("notes.txt");
    std::fs::write(&notes, b"async notes").unwrap();
    let name = notes.to_str().unwrap().to_string();
    let offers = Offers::new();
    let mut ana = rt.block_on(cartero::client::Listener::bind_offering(LOCAL, offers.clone())).unwrap();
    let c = Client::new("127.0.0.1", port).with_timeout(LIMIT);
    c.register_alias("ana").unwrap();
    assert_eq!(c.connect("ana", ana.port()).unwrap(), ConnectReply::Ok);
    assert_eq!(c.send_attach("ana", "ana", "para mi", &name).unwrap(), SendReply::Ok { id: 1 });
    assert!(offers.offer(name.as_bytes()));
    let first = rt.block_on(async { tokio::time::timeout(LIMIT, ana.next()).await }).unwrap().unwrap();
    assert!(matches!(first, Push::AttachMessage { id: 1, .. }), "{first:?}");
    let addr = SocketAddr::new(LOCAL, ana.port());
    let dest = home.path().join("copy.txt");
    assert_eq!(get_file(addr, b"ana", name.as_bytes(), &dest, AnswerForm::Sized).unwrap(), 11);
    assert_eq!(std::fs::read(&dest).unwrap(), b"async notes");
    let refused = get_file(addr, b"ana", b"/etc/hostname", &home.path().join("x"), AnswerForm::Sized);
    assert!(matches!(refused, Err(GetFileError::Refused)), "{refused:?}");
    let ack = rt.block_on(async { tokio::time::timeout(LIMIT, ana.next()).await }).unwrap().unwrap();
    assert!(matches!(ack, Push::AttachAck { id: 1, .. }), "{ack:?}");
}
