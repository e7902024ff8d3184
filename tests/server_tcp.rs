//! The server over real TCP on 127.0.0.1: exact bytes of every reply and push in both wire
//! settings, the bad input of SPEC 4, and the client library against it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use cartero::client::{blocking, Client, Listener};
use cartero::engine::EngineConfig;
use cartero::server::{Server, ServerConfig};
use cartero::wire::{ConnectReply, ConnectedUsersReply, DisconnectReply, RegisterReply, SendReply, UnregisterReply};
use cartero::{CodeEncoding, Push, PushNames, WireSettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::{timeout, Instant};

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Every wait in these tests ends by itself within this.
const LIMIT: Duration = Duration::from_secs(10);

struct TestServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    async fn start(tweak: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let mut config = ServerConfig { bind: SocketAddr::new(LOCAL, 0), ..ServerConfig::default() };
        tweak(&mut config);
        let server = Server::bind(config).await.unwrap();
        let addr = server.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        TestServer { addr, stop: Some(stop), task }
    }

    async fn with(wire: WireSettings) -> TestServer {
        TestServer::start(|c| c.wire = wire).await
    }

    fn client(&self) -> Client {
        Client::new("127.0.0.1", self.addr.port()).with_timeout(LIMIT)
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        timeout(LIMIT, &mut self.task).await.expect("server stops in time").unwrap().unwrap();
    }
}

/// Sends `bytes` on a new connection, half-closes if asked, and returns all the server wrote.
async fn exchange(addr: SocketAddr, bytes: &[u8], half_close: bool) -> Vec<u8> {
    try_exchange(addr, bytes, half_close).await.unwrap()
}

/// [`exchange`], for connections the server may refuse (a refusal can come as a reset).
async fn try_exchange(addr: SocketAddr, bytes: &[u8], half_close: bool) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(bytes).await?;
    if half_close {
        stream.shutdown().await?;
    }
    let mut out = Vec::new();
    timeout(LIMIT, stream.read_to_end(&mut out)).await.expect("server answers in time")?;
    Ok(out)
}

/// A raw listener that records the exact bytes of each push connection.
struct RawListener {
    port: u16,
    pushes: tokio::sync::mpsc::Receiver<Vec<u8>>,
}

impl RawListener {
    async fn bind() -> RawListener {
        let listener = TcpListener::bind((LOCAL, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, pushes) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut bytes = Vec::new();
                let _ = s.read_to_end(&mut bytes).await;
                drop(s);
                if tx.send(bytes).await.is_err() {
                    return;
                }
            }
        });
        RawListener { port, pushes }
    }

    async fn next(&mut self) -> Vec<u8> {
        timeout(LIMIT, self.pushes.recv()).await.expect("a push arrives").unwrap()
    }
}

fn ascii_raw() -> [(CodeEncoding, PushNames); 2] {
    [(CodeEncoding::Ascii, PushNames::Spaced), (CodeEncoding::Raw, PushNames::Underscored)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reply_has_its_exact_bytes_in_both_encodings() {
    for (codes, push_names) in ascii_raw() {
        let server = TestServer::with(WireSettings { codes, push_names }).await;
        let code = |c: u8| if codes == CodeEncoding::Ascii { vec![b'0' + c, 0] } else { vec![c] };
        let with = |c: u8, rest: &[u8]| [code(c), rest.to_vec()].concat();
        let a = server.addr;
        assert_eq!(exchange(a, b"REGISTER\0Ana Lopez\0ana\001/02/2000\0", true).await, code(0));
        assert_eq!(exchange(a, b"REGISTER\0Ana Lopez\0ana\001/02/2000\0", true).await, code(1));
        assert_eq!(exchange(a, b"REGISTER\0Bob\0bob\031/02/2000\0", true).await, code(2));
        assert_eq!(exchange(a, b"REGISTER\0Bob\0bob\029-02-2004\0", true).await, code(0));
        assert_eq!(exchange(a, b"CONNECT\0ghost\01234\0", true).await, code(1));
        assert_eq!(exchange(a, b"CONNECT\0ana\0notaport\0", true).await, code(3));
        let mut ana = RawListener::bind().await;
        let connect = format!("CONNECT\0ana\0{}\0", ana.port);
        assert_eq!(exchange(a, connect.as_bytes(), true).await, code(0));
        assert_eq!(exchange(a, connect.as_bytes(), true).await, code(2));
        assert_eq!(exchange(a, b"SEND\0bob\0ghost\0x\0", true).await, code(1));
        assert_eq!(exchange(a, b"SEND\0bob\0ana\0hola\nmundo\0", true).await, with(0, b"1\0"));
        let name = if push_names == PushNames::Spaced { &b"SEND MESSAGE"[..] } else { b"SEND_MESSAGE" };
        assert_eq!(ana.next().await, [name, b"\0bob\01\0hola\nmundo\0"].concat());
        assert_eq!(exchange(a, b"CONNECTEDUSERS\0ana\0", true).await, with(0, b"1\0ana\0"));
        assert_eq!(exchange(a, b"CONNECTEDUSERS\0bob\0", true).await, code(1));
        assert_eq!(exchange(a, b"CONNECTEDUSERS\0ghost\0", true).await, code(2));
        assert_eq!(exchange(a, b"DISCONNECT\0ghost\0", true).await, code(1));
        assert_eq!(exchange(a, b"DISCONNECT\0bob\0", true).await, code(2));
        assert_eq!(exchange(a, b"DISCONNECT\0ana\0", true).await, code(0));
        assert_eq!(exchange(a, b"UNREGISTER\0ana\0", true).await, code(0));
        assert_eq!(exchange(a, b"UNREGISTER\0ana\0", true).await, code(1));
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_and_acknowledgement_pushes_have_their_exact_bytes() {
    for (codes, push_names) in ascii_raw() {
        let server = TestServer::with(WireSettings { codes, push_names }).await;
        let client = server.client();
        let mut ana = RawListener::bind().await;
        let mut bob = RawListener::bind().await;
        for (alias, l) in [("ana", &ana), ("bob", &bob)] {
            assert_eq!(client.register(alias, alias, "01/01/2001").await.unwrap(), RegisterReply::Ok);
            assert_eq!(client.connect(alias, l.port).await.unwrap(), ConnectReply::Ok);
        }
        assert_eq!(client.send("ana", "bob", "hi bob").await.unwrap(), SendReply::Ok { id: 1 });
        let (msg, ack) = match push_names {
            PushNames::Spaced => (&b"SEND MESSAGE\0ana\01\0hi bob\0"[..], &b"SEND MESS ACK\01\0"[..]),
            PushNames::Underscored => (&b"SEND_MESSAGE\0ana\01\0hi bob\0"[..], &b"SEND_MESS_ACK\01\0"[..]),
        };
        assert_eq!(bob.next().await, msg);
        assert_eq!(ana.next().await, ack);
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_messages_are_pushed_in_order_after_connect() {
    let server = TestServer::with(WireSettings::default()).await;
    let client = server.client();
    client.register("Ana", "ana", "01/01/2001").await.unwrap();
    client.register("Bob", "bob", "01/01/2001").await.unwrap();
    for i in 1..=5 {
        assert_eq!(client.send("ana", "bob", format!("m{i}")).await.unwrap(), SendReply::Ok { id: i });
    }
    let mut bob = Listener::bind(LOCAL).await.unwrap();
    assert_eq!(client.connect("bob", bob.port()).await.unwrap(), ConnectReply::Ok);
    for i in 1..=5u32 {
        let push = timeout(LIMIT, bob.next()).await.unwrap().unwrap();
        assert_eq!(push, Push::Message { sender: "ana".into(), id: i, body: format!("m{i}").into() });
    }
    server.stop().await;
}

/// The client's listener hands pushes over in the order the server made them: the server
/// sends a user's next push only once the last one's connection is closed (SPEC 3), so the
/// listener must queue a push before that close. (It once closed first, and a later push
/// could overtake an earlier one.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_queues_each_push_before_acknowledging_it() {
    const PUSHES: u32 = 300;
    let mut listener = Listener::bind(LOCAL).await.unwrap();
    let addr = listener.local_addr();
    let pusher = tokio::spawn(async move {
        for id in 1..=PUSHES {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream.write_all(format!("SEND MESSAGE\0ana\0{id}\0m{id}\0").as_bytes()).await.unwrap();
            stream.shutdown().await.unwrap();
            let mut rest = Vec::new();
            timeout(LIMIT, stream.read_to_end(&mut rest)).await.expect("the listener closes").unwrap();
        }
    });
    for id in 1..=PUSHES {
        let push = timeout(LIMIT, listener.next()).await.unwrap().unwrap();
        assert_eq!(push, Push::Message { sender: "ana".into(), id, body: format!("m{id}").into() });
    }
    pusher.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_is_down_keeps_the_message_and_disconnects_its_user() {
    let server = TestServer::with(WireSettings::default()).await;
    let client = server.client();
    client.register("Ana", "ana", "01/01/2001").await.unwrap();
    client.register("Bob", "bob", "01/01/2001").await.unwrap();
    // A port nobody listens on: bind one, note it, close it.
    let dead_port = TcpListener::bind((LOCAL, 0)).await.unwrap().local_addr().unwrap().port();
    assert_eq!(client.connect("bob", dead_port).await.unwrap(), ConnectReply::Ok);
    assert_eq!(client.send("ana", "bob", "are you there").await.unwrap(), SendReply::Ok { id: 1 });
    // The failed push marks bob disconnected.
    let start = Instant::now();
    loop {
        if client.disconnect("bob").await.unwrap() == DisconnectReply::NotConnected {
            break;
        }
        assert!(start.elapsed() < LIMIT, "bob was never marked disconnected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut bob = Listener::bind(LOCAL).await.unwrap();
    assert_eq!(client.connect("bob", bob.port()).await.unwrap(), ConnectReply::Ok);
    let push = timeout(LIMIT, bob.next()).await.unwrap().unwrap();
    assert_eq!(push, Push::Message { sender: "ana".into(), id: 1, body: "are you there".into() });
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_never_closes_times_out_without_holding_up_others() {
    let server = TestServer::start(|c| {
        c.engine = EngineConfig { delivery_timeout: Duration::from_secs(2), ..EngineConfig::default() }
    })
    .await;
    let client = server.client();
    for u in ["ana", "stuck", "bob"] {
        client.register(u, u, "01/01/2001").await.unwrap();
    }
    // Accepts and never reads nor closes.
    let stuck = TcpListener::bind((LOCAL, 0)).await.unwrap();
    let stuck_port = stuck.local_addr().unwrap().port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = stuck.accept().await {
            held.push(s);
        }
    });
    client.connect("stuck", stuck_port).await.unwrap();
    let mut bob = Listener::bind(LOCAL).await.unwrap();
    client.connect("bob", bob.port()).await.unwrap();
    client.send("ana", "stuck", "never read").await.unwrap();
    client.send("ana", "bob", "read at once").await.unwrap();
    let push = timeout(LIMIT, bob.next()).await.unwrap().unwrap();
    assert_eq!(push, Push::Message { sender: "ana".into(), id: 2, body: "read at once".into() });
    // bob got his push while the stuck delivery was still pending: stuck is still connected.
    let users = client.connected_users(Some(b"bob")).await.unwrap();
    assert_eq!(users, ConnectedUsersReply::Ok { users: vec!["stuck".into(), "bob".into()] });
    // After the delivery timeout the stuck user is disconnected and the message kept.
    let start = Instant::now();
    while client.disconnect("stuck").await.unwrap() != DisconnectReply::NotConnected {
        assert!(start.elapsed() < LIMIT, "the stuck delivery never timed out");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    holder.abort();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_answered_as_specified_and_others_are_still_served() {
    let server = TestServer::start(|c| c.request_timeout = Duration::from_secs(2)).await;
    let a = server.addr;
    let client = server.client();
    client.register("Ana", "ana", "01/01/2001").await.unwrap();

    // Unknown operation: nothing comes back.
    assert_eq!(exchange(a, b"HELLO\0world\0", true).await, b"");
    // A request cut short by the client's close: the operation's "any other error".
    assert_eq!(exchange(a, b"SEND\0ana\0ana\0no nul", true).await, b"2\0");
    assert_eq!(exchange(a, b"CONNECT\0ana\0", true).await, b"3\0");
    // An empty connection.
    assert_eq!(exchange(a, b"", true).await, b"");

    // A 100 KB field is refused at its 256th byte, without reading the rest.
    let mut huge = b"SEND\0ana\0ana\0".to_vec();
    huge.extend(vec![b'x'; 100 * 1024]);
    let mut stream = TcpStream::connect(a).await.unwrap();
    let (mut rd, mut wr) = stream.split();
    let write = async {
        let _ = wr.write_all(&huge).await; // the server may close before taking it all
    };
    let mut out = Vec::new();
    let read = async { timeout(LIMIT, rd.read_to_end(&mut out)).await };
    let (_, read) = tokio::join!(write, read);
    let _ = read.expect("answered in time");
    assert_eq!(out, b"2\0");

    // A client that stalls mid-request gets its error at the request timeout, and others are
    // served meanwhile.
    let mut stall = TcpStream::connect(a).await.unwrap();
    stall.write_all(b"DISCONNECT\0an").await.unwrap();
    let stalled_at = Instant::now();
    assert_eq!(client.register("Bob", "bob", "01/01/2001").await.unwrap(), RegisterReply::Ok);
    let mut first = [0u8; 1];
    assert!(
        timeout(Duration::ZERO, stall.read(&mut first)).await.is_err(),
        "bob was served while the stall was pending"
    );
    let mut out = Vec::new();
    timeout(LIMIT, stall.read_to_end(&mut out)).await.unwrap().unwrap();
    assert_eq!(out, b"3\0");
    assert!(stalled_at.elapsed() >= Duration::from_millis(1900), "answered before the request timeout");

    // No state changed: ana is still registered and not connected.
    assert_eq!(client.disconnect("ana").await.unwrap(), DisconnectReply::NotConnected);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connected_users_waits_a_grace_period_for_the_optional_alias() {
    let server = TestServer::start(|c| c.grace = Duration::from_millis(300)).await;
    let client = server.client();
    client.register("Ana", "ana", "01/01/2001").await.unwrap();
    let ana = Listener::bind(LOCAL).await.unwrap();
    client.connect("ana", ana.port()).await.unwrap();

    // The operation alone, no half-close: answered after the grace period, by source IP.
    let start = Instant::now();
    assert_eq!(exchange(server.addr, b"CONNECTEDUSERS\0", false).await, b"0\01\0ana\0");
    assert!(start.elapsed() >= Duration::from_millis(250));

    // The alias arriving a little later, within the grace period, is used.
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"CONNECTEDUSERS\0").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.write_all(b"ghost\0").await.unwrap();
    let mut out = Vec::new();
    timeout(LIMIT, s.read_to_end(&mut out)).await.unwrap().unwrap();
    assert_eq!(out, b"2\0", "an unregistered requester is any other error");

    // Seed 000's one-field REGISTER, without a half-close.
    assert_eq!(exchange(server.addr, b"REGISTER\0solo\0", false).await, b"0\0");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_and_blocking_clients_speak_to_both_encodings() {
    for (codes, push_names) in ascii_raw() {
        let server = TestServer::with(WireSettings { codes, push_names }).await;
        let port = server.addr.port();
        let c = server.client();
        assert_eq!(c.register("Ana", "ana", "01/01/2001").await.unwrap(), RegisterReply::Ok);
        assert_eq!(c.register("Ana", "ana", "01/01/2001").await.unwrap(), RegisterReply::AliasInUse);
        assert_eq!(c.register_alias("bob").await.unwrap(), RegisterReply::Ok);
        let mut ana = Listener::bind(LOCAL).await.unwrap();
        assert_eq!(c.connect("ana", ana.port()).await.unwrap(), ConnectReply::Ok);

        let blocking_result = tokio::task::spawn_blocking(move || {
            let b = blocking::Client::new("localhost", port).with_timeout(LIMIT);
            let bob = blocking::Listener::bind(LOCAL).unwrap();
            assert_eq!(b.connect("bob", bob.port()).unwrap(), ConnectReply::Ok);
            assert_eq!(b.send("bob", "ana", "from a thread").unwrap(), SendReply::Ok { id: 1 });
            let ack = bob.recv_timeout(LIMIT).expect("ack arrives");
            assert_eq!(ack, Push::Ack { id: 1 });
            let users = b.connected_users(Some(b"bob")).unwrap();
            assert_eq!(users, ConnectedUsersReply::Ok { users: vec!["ana".into(), "bob".into()] });
            assert_eq!(b.disconnect("bob").unwrap(), DisconnectReply::Ok);
            assert_eq!(b.unregister("bob").unwrap(), UnregisterReply::Ok);
        });
        let push = timeout(LIMIT, ana.next()).await.unwrap().unwrap();
        assert_eq!(push, Push::Message { sender: "bob".into(), id: 1, body: "from a thread".into() });
        blocking_result.await.unwrap();
        ana.close();
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_down_is_a_typed_error() {
    let port = TcpListener::bind((LOCAL, 0)).await.unwrap().local_addr().unwrap().port();
    let err = Client::new("127.0.0.1", port).register_alias("x").await.unwrap_err();
    assert!(matches!(err, cartero::client::ClientError::Connect { .. }), "{err}");
    let err =
        tokio::task::spawn_blocking(move || blocking::Client::new("127.0.0.1", port).register_alias("x").unwrap_err())
            .await
            .unwrap();
    assert!(err.to_string().starts_with("cannot reach the server at 127.0.0.1:"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_closed_unanswered_and_service_resumes() {
    let server =
        Server::bind(ServerConfig { bind: SocketAddr::new(LOCAL, 0), max_connections: 1, ..ServerConfig::default() })
            .await
            .unwrap();
    let addr = server.local_addr().unwrap();
    let stats = server.stats();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    // One slow client holds the only slot.
    let mut holder = TcpStream::connect(addr).await.unwrap();
    holder.write_all(b"REGISTER\0Ana\0ana\0").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Refused: closed at once, unanswered; if our bytes were already in, the close is a reset.
    match try_exchange(addr, b"REGISTER\0Bob\0bob\001/01/2000\0", true).await {
        Ok(out) => assert_eq!(out, b"", "refused while full"),
        Err(e) => {
            assert!(matches!(e.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe), "{e}")
        }
    }
    assert_eq!(stats.refused_connections.load(std::sync::atomic::Ordering::Relaxed), 1);
    // The holder finishes; service resumes.
    holder.write_all(b"01/01/2000\0").await.unwrap();
    holder.shutdown().await.unwrap();
    let mut out = Vec::new();
    timeout(LIMIT, holder.read_to_end(&mut out)).await.unwrap().unwrap();
    assert_eq!(out, b"0\0");
    drop(holder);
    let start = Instant::now();
    loop {
        if try_exchange(addr, b"REGISTER\0Bob\0bob\001/01/2000\0", true).await.is_ok_and(|out| out == b"0\0") {
            break;
        }
        assert!(start.elapsed() < LIMIT, "service never resumed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(());
    timeout(LIMIT, task).await.unwrap().unwrap().unwrap();
}

/// SPEC 8 over TCP: USERS and SENDATTACH replies, the attach pushes in both spellings, and
/// pending SEND and SENDATTACH messages delivered in id order, mixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn course_2025_operations_have_their_exact_bytes() {
    for (codes, push_names) in ascii_raw() {
        let server = TestServer::with(WireSettings { codes, push_names }).await;
        let code = |c: u8| if codes == CodeEncoding::Ascii { vec![b'0' + c, 0] } else { vec![c] };
        let with = |c: u8, rest: &[u8]| [code(c), rest.to_vec()].concat();
        let a = server.addr;
        assert_eq!(exchange(a, b"REGISTER\0ana\0", true).await, code(0));
        assert_eq!(exchange(a, b"REGISTER\0bob\0", true).await, code(0));
        assert_eq!(exchange(a, b"USERS\0ana\0", true).await, code(1));
        assert_eq!(exchange(a, b"USERS\0ghost\0", true).await, code(2));
        assert_eq!(exchange(a, b"SEND\0ana\0bob\0uno\0", true).await, with(0, b"1\0"));
        assert_eq!(exchange(a, b"SENDATTACH\0ana\0bob\0dos\0/tmp/dos.txt\0", true).await, with(0, b"2\0"));
        assert_eq!(exchange(a, b"SEND\0ana\0bob\0tres\0", true).await, with(0, b"3\0"));
        assert_eq!(exchange(a, b"SENDATTACH\0ana\0ghost\0x\0/f\0", true).await, code(1));
        assert_eq!(exchange(a, b"SENDATTACH\0ana\0bob\0x\0\0", true).await, code(2));
        let mut ana = RawListener::bind().await;
        let mut bob = RawListener::bind().await;
        assert_eq!(exchange(a, format!("CONNECT\0ana\0{}\0", ana.port).as_bytes(), true).await, code(0));
        assert_eq!(exchange(a, format!("CONNECT\0bob\0{}\0", bob.port).as_bytes(), true).await, code(0));
        let users = format!("2\0ana :: 127.0.0.1 :: {}\0bob :: 127.0.0.1 :: {}\0", ana.port, bob.port);
        assert_eq!(exchange(a, b"USERS\0bob\0", true).await, with(0, users.as_bytes()));
        let (message, attach, ack, attach_ack) = match push_names {
            PushNames::Spaced => ("SEND MESSAGE", "SEND MESSAGE ATTACH", "SEND MESS ACK", "SEND MESS ATTACH ACK"),
            PushNames::Underscored => ("SEND_MESSAGE", "SEND_MESSAGE_ATTACH", "SEND_MESS_ACK", "SEND_MESS_ATTACH_ACK"),
        };
        assert_eq!(bob.next().await, format!("{message}\0ana\x001\0uno\0").into_bytes());
        assert_eq!(bob.next().await, format!("{attach}\0ana\x002\0dos\0/tmp/dos.txt\0").into_bytes());
        assert_eq!(bob.next().await, format!("{message}\0ana\x003\0tres\0").into_bytes());
        assert_eq!(ana.next().await, format!("{ack}\x001\0").into_bytes());
        assert_eq!(ana.next().await, format!("{attach_ack}\x002\0/tmp/dos.txt\0").into_bytes());
        assert_eq!(ana.next().await, format!("{ack}\x003\0").into_bytes());
        server.stop().await;
    }
}

/// SPEC 2.3: some clients start their listener only after reading the CONNECT reply; a push
/// refused in that moment is retried, and the pending message is not lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_started_after_the_connect_reply_still_gets_the_pending_message() {
    let server = TestServer::with(WireSettings::default()).await;
    let client = server.client();
    client.register("Ana", "ana", "01/01/2001").await.unwrap();
    client.register("Bob", "bob", "01/01/2001").await.unwrap();
    assert_eq!(client.send("ana", "bob", "early").await.unwrap(), SendReply::Ok { id: 1 });
    // A free port, not listened on until after the reply (and a moment more).
    let port = TcpListener::bind((LOCAL, 0)).await.unwrap().local_addr().unwrap().port();
    assert_eq!(client.connect("bob", port).await.unwrap(), ConnectReply::Ok);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let late = TcpListener::bind((LOCAL, port)).await.unwrap();
    let (mut push, _) = timeout(LIMIT, late.accept()).await.expect("the push is retried").unwrap();
    let mut bytes = Vec::new();
    push.read_to_end(&mut bytes).await.unwrap();
    assert_eq!(bytes, b"SEND MESSAGE\0ana\01\0early\0");
    drop(push);
    assert_eq!(exchange(server.addr, b"CONNECTEDUSERS\0bob\0", true).await, b"0\x001\0bob\0");
    server.stop().await;
}
