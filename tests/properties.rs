//! Property tests: the codec and message round trips under any chunking of the stream, and
//! the engine against a deliberately naive reference model over random operation sequences.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use cartero::engine::{Delivery, DeliveryOutcome, Engine, EngineConfig};
use cartero::wire::{
    ConnectReply as C, ConnectedUsersReply as U, DisconnectReply as D, PushDecoder, RegisterReply as R, ReplyDecoder,
    RequestDecoder, SendReply as S, UnregisterReply as X, UserEntry, UsersReply as L,
};
use cartero::{CodeEncoding, Codec, Push, PushNames, Reply, Request};
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

const CASES: u32 = 512;

/// Splits `bytes` at the given cut points (taken modulo its length) and decodes the chunks
/// in order, then ends the stream.
fn decode_chunked<D: Decoder>(dec: &mut D, bytes: &[u8], cuts: &[usize]) -> Result<Vec<D::Item>, D::Error> {
    let mut points: Vec<usize> = cuts.iter().map(|c| if bytes.is_empty() { 0 } else { c % bytes.len() }).collect();
    points.push(0);
    points.push(bytes.len());
    points.sort_unstable();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for w in points.windows(2) {
        buf.extend_from_slice(&bytes[w[0]..w[1]]);
        while let Some(item) = dec.decode(&mut buf)? {
            out.push(item);
        }
    }
    while let Some(item) = dec.decode_eof(&mut buf)? {
        out.push(item);
    }
    Ok(out)
}

fn field(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(1u8..=255, 0..=max).prop_map(Bytes::from)
}

fn nonempty_field() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(1u8..=255, 1..=255).prop_map(Bytes::from)
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (field(255), field(255), field(255)).prop_map(|(full_name, alias, d)| Request::Register {
            full_name,
            alias,
            birth_date: Some(d)
        }),
        field(255).prop_map(|a| Request::Register { full_name: a.clone(), alias: a, birth_date: None }),
        field(255).prop_map(|alias| Request::Unregister { alias }),
        (field(255), field(255)).prop_map(|(alias, port)| Request::Connect { alias, port }),
        field(255).prop_map(|alias| Request::Disconnect { alias }),
        (field(255), field(255), field(255)).prop_map(|(sender, recipient, body)| Request::Send {
            sender,
            recipient,
            body
        }),
        proptest::option::of(field(255)).prop_map(|alias| Request::ConnectedUsers { alias }),
        proptest::option::of(field(255)).prop_map(|alias| Request::Users { alias }),
        (field(255), field(255), field(255), field(255))
            .prop_map(|(sender, recipient, body, file)| { Request::SendAttach { sender, recipient, body, file } }),
    ]
}

fn user_entry() -> impl Strategy<Value = UserEntry> {
    // Names as USERS lists them: no `::` and no blanks at either end (those are separators).
    let name = "[a-zA-Z0-9_.ñ-]{1,64}".prop_map(Bytes::from);
    (name, any::<IpAddr>(), any::<u16>()).prop_map(|(name, ip, port)| UserEntry { name, ip, port })
}

fn reply() -> impl Strategy<Value = Reply> {
    prop_oneof![
        prop_oneof![Just(R::Ok), Just(R::AliasInUse), Just(R::Error)].prop_map(Reply::Register),
        prop_oneof![Just(X::Ok), Just(X::NoSuchUser), Just(X::Error)].prop_map(Reply::Unregister),
        prop_oneof![Just(C::Ok), Just(C::NoSuchUser), Just(C::AlreadyConnected), Just(C::Error)]
            .prop_map(Reply::Connect),
        prop_oneof![Just(D::Ok), Just(D::NoSuchUser), Just(D::NotConnected), Just(D::Error)]
            .prop_map(Reply::Disconnect),
        prop_oneof![any::<u32>().prop_map(|id| S::Ok { id }), Just(S::NoSuchUser), Just(S::Error)]
            .prop_map(Reply::Send),
        prop_oneof![
            proptest::collection::vec(nonempty_field(), 0..20).prop_map(|users| U::Ok { users }),
            Just(U::NotConnected),
            Just(U::Error)
        ]
        .prop_map(Reply::ConnectedUsers),
        prop_oneof![
            proptest::collection::vec(user_entry(), 0..20).prop_map(|users| L::Ok { users }),
            Just(L::NotConnected),
            Just(L::Error)
        ]
        .prop_map(Reply::Users),
        prop_oneof![any::<u32>().prop_map(|id| S::Ok { id }), Just(S::NoSuchUser), Just(S::Error)]
            .prop_map(Reply::SendAttach),
    ]
}

fn push() -> impl Strategy<Value = Push> {
    prop_oneof![
        (field(255), any::<u32>(), field(255)).prop_map(|(sender, id, body)| Push::Message { sender, id, body }),
        any::<u32>().prop_map(|id| Push::Ack { id }),
        (field(255), any::<u32>(), field(255), field(255)).prop_map(|(sender, id, body, file)| Push::AttachMessage {
            sender,
            id,
            body,
            file
        }),
        (any::<u32>(), field(255)).prop_map(|(id, file)| Push::AttachAck { id, file }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn codec_round_trips_under_any_chunking(
        fields in proptest::collection::vec(field(255), 0..40),
        cuts in proptest::collection::vec(any::<usize>(), 0..64),
    ) {
        let mut codec = Codec::new(255);
        let mut stream = BytesMut::new();
        for f in &fields {
            codec.encode(&f[..], &mut stream).unwrap();
        }
        let got = decode_chunked(&mut Codec::new(255), &stream, &cuts).unwrap();
        prop_assert_eq!(got, fields);
    }

    #[test]
    fn codec_never_yields_a_field_over_the_limit(
        bytes in proptest::collection::vec(any::<u8>(), 0..2000),
        max in 0usize..300,
        cuts in proptest::collection::vec(any::<usize>(), 0..16),
    ) {
        let mut fields = vec![];
        let mut codec = Codec::new(max);
        // Errors are fine; panics and over-long fields are not.
        if let Ok(got) = decode_chunked(&mut codec, &bytes, &cuts) {
            fields = got;
        }
        prop_assert!(fields.iter().all(|f| f.len() <= max && !f.contains(&0)));
    }

    #[test]
    fn requests_round_trip_under_any_chunking(req in request(), cuts in proptest::collection::vec(any::<usize>(), 0..32)) {
        let mut bytes = BytesMut::new();
        req.encode(&mut bytes).unwrap();
        let got = decode_chunked(&mut RequestDecoder::new(), &bytes, &cuts).unwrap();
        prop_assert_eq!(got, vec![req]);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoders(bytes in proptest::collection::vec(any::<u8>(), 0..1200), cuts in proptest::collection::vec(any::<usize>(), 0..16)) {
        let _ = decode_chunked(&mut RequestDecoder::new(), &bytes, &cuts);
        let _ = decode_chunked(&mut PushDecoder::new(), &bytes, &cuts);
        for op in cartero::Operation::ALL {
            let _ = decode_chunked(&mut ReplyDecoder::new(op), &bytes, &cuts);
        }
    }

    #[test]
    fn replies_round_trip_in_both_encodings(reply in reply(), raw in any::<bool>(), cuts in proptest::collection::vec(any::<usize>(), 0..32)) {
        let codes = if raw { CodeEncoding::Raw } else { CodeEncoding::Ascii };
        let mut bytes = BytesMut::new();
        reply.encode(codes, &mut bytes);
        let got = decode_chunked(&mut ReplyDecoder::new(reply.operation()), &bytes, &cuts).unwrap();
        prop_assert_eq!(got, vec![reply]);
    }

    #[test]
    fn pushes_round_trip_in_both_spellings(pushes in proptest::collection::vec(push(), 1..8), underscored in any::<bool>(), cuts in proptest::collection::vec(any::<usize>(), 0..32)) {
        let names = if underscored { PushNames::Underscored } else { PushNames::Spaced };
        let mut bytes = BytesMut::new();
        for p in &pushes {
            p.encode(names, &mut bytes).unwrap();
        }
        let got = decode_chunked(&mut PushDecoder::new(), &bytes, &cuts).unwrap();
        prop_assert_eq!(got, pushes);
    }
}

// ------------------------------------------------------------------------------ engine model

const ALIASES: [&str; 4] = ["a", "b", "c", "d"];
const PER_USER_LIMIT: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    Register(usize),
    Unregister(usize, u8),
    Connect(usize, u8, u16),
    Disconnect(usize, u8),
    Send(usize, usize, u8),
    /// SENDATTACH, with an empty file name when the flag is false.
    SendAttach(usize, usize, u8, bool),
    ConnectedUsers(Option<usize>, u8),
    Users(Option<usize>, u8),
    /// Start the next ready delivery, if any.
    Poll,
    /// End the in-flight delivery at this index (modulo their count).
    Complete(usize, bool),
    /// Let every in-flight delivery time out.
    Timeout,
}

fn op() -> impl Strategy<Value = Op> {
    let user = 0..ALIASES.len();
    let ip = 1u8..=2;
    prop_oneof![
        2 => user.clone().prop_map(Op::Register),
        1 => (user.clone(), ip.clone()).prop_map(|(u, i)| Op::Unregister(u, i)),
        2 => (user.clone(), ip.clone(), 4000u16..4002).prop_map(|(u, i, p)| Op::Connect(u, i, p)),
        1 => (user.clone(), ip.clone()).prop_map(|(u, i)| Op::Disconnect(u, i)),
        4 => (user.clone(), user.clone(), ip.clone()).prop_map(|(s, r, i)| Op::Send(s, r, i)),
        3 => (user.clone(), user.clone(), ip.clone(), proptest::bool::weighted(0.9))
            .prop_map(|(s, r, i, f)| Op::SendAttach(s, r, i, f)),
        1 => (proptest::option::of(user.clone()), ip.clone()).prop_map(|(u, i)| Op::ConnectedUsers(u, i)),
        1 => (proptest::option::of(user), ip).prop_map(|(u, i)| Op::Users(u, i)),
        4 => Just(Op::Poll),
        4 => (any::<usize>(), proptest::bool::weighted(0.8)).prop_map(|(i, ok)| Op::Complete(i, ok)),
        1 => Just(Op::Timeout),
    ]
}

#[derive(Debug, Clone, PartialEq)]
struct MMessage {
    sender: Bytes,
    sender_uid: u64,
    id: u32,
    body: Bytes,
    file: Option<Bytes>,
}

#[derive(Debug)]
struct MUser {
    uid: u64,
    last_id: u32,
    conn: Option<(SocketAddr, u64)>,
    mailbox: VecDeque<MMessage>,
    acks: VecDeque<(u32, Option<Bytes>)>,
    busy: bool,
}

#[derive(Debug, Clone)]
enum MPush {
    Message(MMessage),
    Ack,
}

#[derive(Debug, Clone)]
struct MFlight {
    delivery: Delivery,
    to: Bytes,
    uid: u64,
    conn_seq: u64,
    push: MPush,
}

/// The rules of SPEC 2 and 3 written as plainly as possible.
#[derive(Debug, Default)]
struct Model {
    users: HashMap<Bytes, MUser>,
    connect_order: Vec<Bytes>,
    next_uid: u64,
    next_seq: u64,
    /// (recipient uid, sender, sender uid, id) of every message delivered.
    delivered: HashSet<(u64, Bytes, u64, u32)>,
    /// Every message accepted with 0, with its recipient's uid.
    accepted: Vec<(u64, MMessage)>,
    /// Recipient uids whose mailbox went with an UNREGISTER.
    dropped: HashSet<u64>,
}

fn ip(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

impl Model {
    fn disconnect(&mut self, alias: &Bytes) {
        if let Some(u) = self.users.get_mut(alias) {
            if u.conn.take().is_some() {
                u.acks.clear();
                self.connect_order.retain(|a| a != alias);
            }
        }
    }

    fn request(&mut self, peer: IpAddr, req: &Request) -> Reply {
        match req {
            Request::Register { alias, .. } => Reply::Register(if self.users.contains_key(alias) {
                R::AliasInUse
            } else {
                self.next_uid += 1;
                let user = MUser {
                    uid: self.next_uid,
                    last_id: 0,
                    conn: None,
                    mailbox: VecDeque::new(),
                    acks: VecDeque::new(),
                    busy: false,
                };
                self.users.insert(alias.clone(), user);
                R::Ok
            }),
            Request::Unregister { alias } => Reply::Unregister(match self.users.get(alias) {
                None => X::NoSuchUser,
                Some(u) if u.conn.is_some_and(|(a, _)| a.ip() != peer) => X::Error,
                Some(u) => {
                    self.dropped.insert(u.uid);
                    self.disconnect(alias);
                    self.users.remove(alias);
                    X::Ok
                }
            }),
            Request::Connect { alias, port } => Reply::Connect(match self.users.get_mut(alias) {
                None => C::NoSuchUser,
                Some(u) if u.conn.is_some() => C::AlreadyConnected,
                Some(u) => {
                    self.next_seq += 1;
                    let port: u16 = std::str::from_utf8(port).unwrap().parse().unwrap();
                    u.conn = Some((SocketAddr::new(peer, port), self.next_seq));
                    self.connect_order.push(alias.clone());
                    C::Ok
                }
            }),
            Request::Disconnect { alias } => Reply::Disconnect(match self.users.get(alias) {
                None => D::NoSuchUser,
                Some(u) => match u.conn {
                    None => D::NotConnected,
                    Some((a, _)) if a.ip() != peer => D::Error,
                    Some(_) => {
                        self.disconnect(alias);
                        D::Ok
                    }
                },
            }),
            Request::Send { sender, recipient, body } => Reply::Send(self.send(peer, sender, recipient, body, None)),
            Request::SendAttach { sender, recipient, body, file } => {
                Reply::SendAttach(self.send(peer, sender, recipient, body, Some(file)))
            }
            Request::Users { alias } => {
                let allowed = match alias {
                    Some(a) => match self.users.get(a) {
                        None => return Reply::Users(L::Error),
                        Some(u) => u.conn.is_some(),
                    },
                    None => self.users.values().any(|u| u.conn.is_some_and(|(a, _)| a.ip() == peer)),
                };
                Reply::Users(if allowed {
                    let users = self.connect_order.iter().map(|name| {
                        let (addr, _) = self.users[name].conn.unwrap();
                        UserEntry { name: name.clone(), ip: addr.ip(), port: addr.port() }
                    });
                    L::Ok { users: users.collect() }
                } else {
                    L::NotConnected
                })
            }
            Request::ConnectedUsers { alias } => {
                let allowed = match alias {
                    Some(a) => match self.users.get(a) {
                        None => return Reply::ConnectedUsers(U::Error),
                        Some(u) => u.conn.is_some(),
                    },
                    None => self.users.values().any(|u| u.conn.is_some_and(|(a, _)| a.ip() == peer)),
                };
                Reply::ConnectedUsers(if allowed {
                    U::Ok { users: self.connect_order.clone() }
                } else {
                    U::NotConnected
                })
            }
        }
    }

    /// SEND and SENDATTACH: one mailbox, one per-sender counter.
    fn send(&mut self, peer: IpAddr, sender: &Bytes, recipient: &Bytes, body: &Bytes, file: Option<&Bytes>) -> S {
        let (Some(s), Some(r)) = (self.users.get(sender), self.users.get(recipient)) else {
            return S::NoSuchUser;
        };
        if s.conn.is_some_and(|(a, _)| a.ip() != peer)
            || r.mailbox.len() >= PER_USER_LIMIT
            || file.is_some_and(|f| f.is_empty())
        {
            return S::Error;
        }
        let id = if s.last_id == u32::MAX { 1 } else { s.last_id + 1 };
        let sender_uid = s.uid;
        let r_uid = r.uid;
        self.users.get_mut(sender).unwrap().last_id = id;
        let m = MMessage { sender: sender.clone(), sender_uid, id, body: body.clone(), file: file.cloned() };
        self.users.get_mut(recipient).unwrap().mailbox.push_back(m.clone());
        self.accepted.push((r_uid, m));
        S::Ok { id }
    }

    /// Checks a delivery the engine started against the rules; returns what it carries.
    fn started(&mut self, d: &Delivery) -> Result<MFlight, TestCaseError> {
        let u = self.users.get_mut(&d.to).ok_or_else(|| TestCaseError::fail("delivery to an unknown user"))?;
        let (addr, seq) = u.conn.ok_or_else(|| TestCaseError::fail("delivery to a disconnected user"))?;
        prop_assert_eq!(addr, d.addr, "delivery to the wrong address");
        prop_assert!(!u.busy, "two deliveries at once to one user");
        let push = if let Some((id, file)) = u.acks.pop_front() {
            match file {
                None => prop_assert_eq!(&d.push, &Push::Ack { id }),
                Some(file) => prop_assert_eq!(&d.push, &Push::AttachAck { id, file }),
            }
            MPush::Ack
        } else {
            let m = u.mailbox.front().ok_or_else(|| TestCaseError::fail("delivery with an empty mailbox"))?.clone();
            let (sender, id, body) = (m.sender.clone(), m.id, m.body.clone());
            let want = match &m.file {
                None => Push::Message { sender, id, body },
                Some(file) => Push::AttachMessage { sender, id, body, file: file.clone() },
            };
            prop_assert_eq!(&d.push, &want, "not the oldest");
            MPush::Message(m)
        };
        u.busy = true;
        Ok(MFlight { delivery: d.clone(), to: d.to.clone(), uid: u.uid, conn_seq: seq, push })
    }

    fn finished(&mut self, f: &MFlight, ok: bool) -> Result<(), TestCaseError> {
        let current = self.users.get_mut(&f.to).filter(|u| u.uid == f.uid);
        let same_conn = current.as_ref().is_some_and(|u| u.conn.is_some_and(|(_, s)| s == f.conn_seq));
        if let Some(u) = current {
            u.busy = false;
            if let (MPush::Message(m), true) = (&f.push, ok) {
                let front = u.mailbox.pop_front();
                prop_assert_eq!(front.as_ref(), Some(m));
            }
        }
        match (&f.push, ok) {
            (MPush::Message(m), true) => {
                let key = (f.uid, m.sender.clone(), m.sender_uid, m.id);
                prop_assert!(self.delivered.insert(key), "delivered twice: {:?}", m);
                if let Some(s) = self.users.get_mut(&m.sender).filter(|s| s.uid == m.sender_uid && s.conn.is_some()) {
                    s.acks.push_back((m.id, m.file.clone()));
                }
            }
            (_, false) if same_conn => self.disconnect(&f.to),
            _ => {}
        }
        Ok(())
    }

    fn check_state(&self, engine: &Engine) -> Result<(), TestCaseError> {
        let reg = engine.registry();
        prop_assert_eq!(reg.len(), self.users.len());
        for (alias, mu) in &self.users {
            let u = reg.get(alias).ok_or_else(|| TestCaseError::fail("user missing"))?;
            prop_assert_eq!(u.last_id, mu.last_id);
            prop_assert_eq!(u.connection.map(|c| c.addr), mu.conn.map(|(a, _)| a));
            let got: Vec<_> =
                u.mailbox.iter().map(|m| (m.sender.clone(), m.id, m.body.clone(), m.file.clone())).collect();
            let want: Vec<_> =
                mu.mailbox.iter().map(|m| (m.sender.clone(), m.id, m.body.clone(), m.file.clone())).collect();
            prop_assert_eq!(got, want, "mailbox of {:?}", alias);
        }
        let order: Vec<_> = reg.connected().cloned().collect();
        prop_assert_eq!(order, self.connect_order.clone());
        Ok(())
    }
}

fn run_model(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let config = EngineConfig { max_pending_per_user: PER_USER_LIMIT, record_events: false, ..EngineConfig::default() };
    let mut engine = Engine::new(config);
    let mut model = Model::default();
    let mut flights: Vec<MFlight> = Vec::new();
    let mut now = Instant::now();
    let alias = |i: usize| Bytes::from_static(ALIASES[i].as_bytes());
    let mut body_n = 0u32;

    for op in ops {
        let (peer, req) = match op {
            Op::Register(u) => (ip(1), Request::Register { full_name: alias(u), alias: alias(u), birth_date: None }),
            Op::Unregister(u, i) => (ip(i), Request::Unregister { alias: alias(u) }),
            Op::Connect(u, i, p) => (ip(i), Request::Connect { alias: alias(u), port: Bytes::from(p.to_string()) }),
            Op::Disconnect(u, i) => (ip(i), Request::Disconnect { alias: alias(u) }),
            Op::Send(s, r, i) => {
                body_n += 1;
                (
                    ip(i),
                    Request::Send { sender: alias(s), recipient: alias(r), body: Bytes::from(format!("m{body_n}")) },
                )
            }
            Op::SendAttach(s, r, i, named) => {
                body_n += 1;
                let file = if named { Bytes::from(format!("/tmp/f{body_n}")) } else { Bytes::new() };
                let body = Bytes::from(format!("m{body_n}"));
                (ip(i), Request::SendAttach { sender: alias(s), recipient: alias(r), body, file })
            }
            Op::ConnectedUsers(u, i) => (ip(i), Request::ConnectedUsers { alias: u.map(alias) }),
            Op::Users(u, i) => (ip(i), Request::Users { alias: u.map(alias) }),
            Op::Poll => {
                if let Some(d) = engine.poll_delivery(now) {
                    flights.push(model.started(&d)?);
                }
                model.check_state(&engine)?;
                continue;
            }
            Op::Complete(i, ok) => {
                if !flights.is_empty() {
                    let f = flights.remove(i % flights.len());
                    let outcome = if ok { DeliveryOutcome::Delivered } else { DeliveryOutcome::Failed };
                    engine
                        .handle_delivery_result(f.delivery.id, outcome)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    model.finished(&f, ok)?;
                }
                model.check_state(&engine)?;
                continue;
            }
            Op::Timeout => {
                now += Duration::from_secs(3);
                prop_assert_eq!(engine.handle_timeout(now), flights.len());
                for f in std::mem::take(&mut flights) {
                    model.finished(&f, false)?;
                }
                model.check_state(&engine)?;
                continue;
            }
        };
        let got = engine.handle_request(peer, &req);
        let want = model.request(peer, &req);
        prop_assert_eq!(got, want, "reply to {:?} from {}", req, peer);
        model.check_state(&engine)?;
    }

    // Finish what is in flight, then let every connected user's listener work: nothing may
    // be left pending for a connected user, and nothing may be delivered twice.
    for f in std::mem::take(&mut flights) {
        engine
            .handle_delivery_result(f.delivery.id, DeliveryOutcome::Delivered)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        model.finished(&f, true)?;
    }
    while let Some(d) = engine.poll_delivery(now) {
        let f = model.started(&d)?;
        engine
            .handle_delivery_result(d.id, DeliveryOutcome::Delivered)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        model.finished(&f, true)?;
    }
    model.check_state(&engine)?;
    for (alias, u) in engine.registry().iter() {
        prop_assert!(!u.is_connected() || u.mailbox.is_empty(), "{:?} is connected with mail left", alias);
    }
    // Every accepted message was delivered exactly once, is still pending, or went with its
    // recipient's UNREGISTER.
    for (r_uid, m) in &model.accepted {
        let delivered = model.delivered.contains(&(*r_uid, m.sender.clone(), m.sender_uid, m.id));
        let pending = model.users.values().any(|u| u.uid == *r_uid && u.mailbox.contains(m));
        prop_assert!(
            delivered as u8 + pending as u8 == 1 || (!delivered && model.dropped.contains(r_uid)),
            "message {:?} lost or duplicated",
            m
        );
    }
    prop_assert_eq!(engine.in_flight(), 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn engine_follows_the_reference_model(ops in proptest::collection::vec(op(), 1..120)) {
        run_model(ops)?;
    }
}
