//! Frames <-> state: the sans-IO server engine.
//!
//! [`Engine`] owns no socket, no clock and no thread. A driver (the tokio runtime, a C
//! program, a Python script, a test) feeds it and drains it:
//!
//! 1. For each decoded request: `let reply = engine.handle_request(peer_ip, &request);`
//!    Then drain [`poll_change`](Engine::poll_change) (when changes are recorded) and make
//!    them durable, then send `reply`.
//! 2. After the reply has been sent: drain [`poll_delivery`](Engine::poll_delivery) until
//!    `None`. Each [`Delivery`] is one TCP connection to `delivery.addr` carrying
//!    `delivery.push`. At most one delivery per user is in flight at a time.
//! 3. When a delivery ends, report it with
//!    [`handle_delivery_result`](Engine::handle_delivery_result); this may make more
//!    deliveries ready (the next message, an acknowledgement), so drain again.
//! 4. Call [`handle_timeout`](Engine::handle_timeout) at [`poll_timeout`](Engine::poll_timeout)
//!    to fail deliveries that outlived the delivery timeout.
//! 5. Drain [`poll_event`](Engine::poll_event) for the console lines of SPEC 5.
//!
//! Its state is in three parts, each readable from outside: the [`Registry`] of users (with
//! their [`Connection`] and [`Mailbox`]), and the delivery [`Scheduler`] (per user idle,
//! queued for its next push, or delivering one), through [`Engine::registry`] and
//! [`Engine::scheduler`].
//!
//! The engine answers every request itself, so it enforces every rule of SPEC 2 and 3; the
//! driver only moves bytes and reports what the network did.

mod registry;
mod scheduler;

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;

use registry::Gate;
pub use registry::{Connection, Mailbox, Registry, StoredMessage, User};
pub use scheduler::{DeliveryId, Scheduler};
use scheduler::{InFlight, InFlightPush};

use crate::messaging::codec::MAX_FIELD_LEN;
use crate::messaging::wire::{
    parse_u32, ConnectReply, ConnectedUsersReply, DisconnectReply, Push, RegisterReply, Reply, Request, SendReply,
    UnregisterReply, UserEntry, UsersReply,
};

/// Limits and policies of an [`Engine`].
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Registered users at most; a REGISTER past it gets "any other error".
    pub max_users: usize,
    /// Pending messages per recipient at most; a SEND past it gets "any other error".
    pub max_pending_per_user: usize,
    /// Pending messages over all mailboxes at most.
    pub max_pending_total: usize,
    /// How long one delivery may take, connect to close (SPEC 3).
    pub delivery_timeout: Duration,
    /// Queue console [`Event`]s for [`Engine::poll_event`].
    pub record_events: bool,
    /// Queue state [`Change`]s for [`Engine::poll_change`] (for a durable store).
    pub record_changes: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_users: 1_000_000,
            max_pending_per_user: 10_000,
            max_pending_total: 2_000_000,
            delivery_timeout: Duration::from_secs(2),
            record_events: true,
            record_changes: false,
        }
    }
}

/// One push to make: connect to `addr`, write `push`, end as SPEC 3 says, then report the
/// outcome with [`Engine::handle_delivery_result`] before `deadline`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: DeliveryId,
    /// The alias of the user the push goes to.
    pub to: Bytes,
    pub addr: SocketAddr,
    pub push: Push,
    pub deadline: Instant,
}

/// What happened to a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// Written in full, and the listener closed cleanly.
    Delivered,
    /// Connecting, writing or waiting for the close failed.
    Failed,
}

/// A console line of SPEC 5, without its `s> ` prompt (see its `Display`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Register {
        alias: Bytes,
        ok: bool,
    },
    Unregister {
        alias: Bytes,
        ok: bool,
    },
    Connect {
        alias: Bytes,
        ok: bool,
    },
    Disconnect {
        alias: Bytes,
        ok: bool,
    },
    /// A message reached its recipient's listener. `file` is set for a SENDATTACH message.
    Delivered {
        id: u32,
        sender: Bytes,
        recipient: Bytes,
        file: Option<Bytes>,
    },
    /// A message waits in its recipient's mailbox: the recipient was offline, or the
    /// delivery failed.
    Stored {
        id: u32,
        sender: Bytes,
        recipient: Bytes,
        file: Option<Bytes>,
    },
    ConnectedUsers {
        ok: bool,
    },
    /// SPEC 8's USERS.
    Users {
        ok: bool,
    },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
        let status = |ok: bool| if ok { "OK" } else { "FAIL" };
        match self {
            Event::Register { alias, ok } => write!(f, "REGISTER {} {}", text(alias), status(*ok)),
            Event::Unregister { alias, ok } => write!(f, "UNREGISTER {} {}", text(alias), status(*ok)),
            Event::Connect { alias, ok } => write!(f, "CONNECT {} {}", text(alias), status(*ok)),
            Event::Disconnect { alias, ok } => write!(f, "DISCONNECT {} {}", text(alias), status(*ok)),
            Event::Delivered { id, sender, recipient, file: None } => {
                write!(f, "SEND MESSAGE {id} FROM {} TO {}", text(sender), text(recipient))
            }
            Event::Stored { id, sender, recipient, file: None } => {
                write!(f, "MESSAGE {id} FROM {} TO {} STORED", text(sender), text(recipient))
            }
            // SPEC 8 leaves these open; docs/protocols/messaging.md settles them.
            Event::Delivered { id, sender, recipient, file: Some(file) } => {
                write!(f, "SENDATTACH MESSAGE {id} FROM {} TO {} FILE {}", text(sender), text(recipient), text(file))
            }
            Event::Stored { id, sender, recipient, file: Some(file) } => {
                write!(
                    f,
                    "SENDATTACH MESSAGE {id} FROM {} TO {} FILE {} STORED",
                    text(sender),
                    text(recipient),
                    text(file)
                )
            }
            Event::ConnectedUsers { ok } => write!(f, "CONNECTEDUSERS {}", status(*ok)),
            Event::Users { ok } => write!(f, "USERS {}", status(*ok)),
        }
    }
}

impl Event {
    /// The same console line for an operation that failed after all (its change could not
    /// be made durable); `None` for lines of deliveries, which have no failed form.
    pub fn as_failure(&self) -> Option<Event> {
        let alias = match self {
            Event::Register { alias, .. }
            | Event::Unregister { alias, .. }
            | Event::Connect { alias, .. }
            | Event::Disconnect { alias, .. } => alias.clone(),
            Event::ConnectedUsers { .. } => return Some(Event::ConnectedUsers { ok: false }),
            Event::Users { .. } => return Some(Event::Users { ok: false }),
            Event::Delivered { .. } | Event::Stored { .. } => return None,
        };
        Some(match self {
            Event::Register { .. } => Event::Register { alias, ok: false },
            Event::Unregister { .. } => Event::Unregister { alias, ok: false },
            Event::Connect { .. } => Event::Connect { alias, ok: false },
            _ => Event::Disconnect { alias, ok: false },
        })
    }
}

/// One change of durable state. Applying a driver's changes, in order, to an empty engine
/// with [`Engine::apply`] rebuilds its users, connections, mailboxes and id counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Registered {
        alias: Bytes,
        full_name: Bytes,
        birth_date: Option<Bytes>,
    },
    Unregistered {
        alias: Bytes,
    },
    Connected {
        alias: Bytes,
        addr: SocketAddr,
    },
    Disconnected {
        alias: Bytes,
    },
    /// A message entered `recipient`'s mailbox; `id` is also the sender's new last id.
    /// `file` is the attached file's name of a SENDATTACH message.
    Stored {
        recipient: Bytes,
        sender: Bytes,
        id: u32,
        body: Bytes,
        file: Option<Bytes>,
    },
    /// `recipient`'s oldest message, named by sender and id, was delivered and removed.
    Removed {
        recipient: Bytes,
        sender: Bytes,
        id: u32,
    },
    /// An acknowledgement of message `id` is owed to `sender` (its current registration,
    /// which is connected): it goes out after the user's earlier acknowledgements. A store
    /// keeps it until [`AckDone`](Change::AckDone), or until `sender` disconnects or
    /// unregisters (which drop every acknowledgement owed to it).
    AckOwed {
        sender: Bytes,
        id: u32,
        file: Option<Bytes>,
    },
    /// The oldest acknowledgement owed to `sender`, of message `id`, was pushed (or its push
    /// failed and it is given up): it is owed no more.
    AckDone {
        sender: Bytes,
        id: u32,
    },
}

/// Errors of the engine's own API (requests never fail: they get a reply code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("delivery {0:?} is not in flight (it already ended or timed out)")]
    UnknownDelivery(DeliveryId),
    #[error("change does not fit the engine's state: {0}")]
    InconsistentChange(&'static str),
}

/// The message-delivery server's state and rules, without I/O. See the module docs.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    registry: Registry,
    scheduler: Scheduler,
    events: VecDeque<Event>,
    changes: VecDeque<Change>,
    /// Sequence number of the last change recorded; changes are numbered from 1.
    change_seq: u64,
    /// The driver's mark: every change up to this one is durable.
    durable_seq: u64,
    /// Holds handed out by `handle_request_held` and not yet released.
    open_holds: HashSet<u64, foldhash::quality::RandomState>,
    /// The hold of the request being handled, if any.
    current_hold: Option<u64>,
    /// Users with work that may not go out yet (waiting for a hold or durability).
    blocked: Vec<(Bytes, u64)>,
}

/// A request's claim on the pushes it caused: they wait until it is
/// [released](Engine::release), which a driver does once the request's reply is sent.
#[must_use = "pushes caused by the request wait until the hold is released"]
#[derive(Debug, PartialEq, Eq)]
pub struct Hold(u64);

/// A user as a store keeps it, for [`Engine::restore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub alias: Bytes,
    pub full_name: Bytes,
    pub birth_date: Option<Bytes>,
    pub last_id: u32,
    /// Where the user listens, if connected.
    pub connection: Option<SocketAddr>,
    /// The registration's identity: a user unregistered and registered again under the same
    /// alias is another user, with another uid. Unique among a store's users; 0 asks
    /// [`Engine::restore`] for a fresh one.
    pub uid: u64,
    /// Acknowledgements owed to the user, oldest first: message ids, with the attached file's
    /// name for a SENDATTACH message. Kept only while the user is connected.
    pub acks: Vec<(u32, Option<Bytes>)>,
}

/// A pending message as a store keeps it, for [`Engine::restore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRecord {
    pub recipient: Bytes,
    pub sender: Bytes,
    pub id: u32,
    pub body: Bytes,
    /// The attached file's name, for a SENDATTACH message.
    pub file: Option<Bytes>,
    /// The uid of the registration that sent it: its acknowledgement goes to that user only,
    /// never to a newer user of the same alias (0: no known registration, no acknowledgement).
    pub sender_uid: u64,
}

impl Default for Engine {
    fn default() -> Self {
        Engine::new(EngineConfig::default())
    }
}

/// The id after `last` in a sender's sequence: 1, 2, ..., 4294967295, 1, ... (never 0).
pub fn next_message_id(last: u32) -> u32 {
    if last == u32::MAX {
        1
    } else {
        last + 1
    }
}

/// Whether `port` is a listening port as CONNECT sends it: decimal text of 1..=65535.
pub fn parse_port(port: &[u8]) -> Option<u16> {
    parse_u32(port).and_then(|p| u16::try_from(p).ok()).filter(|&p| p != 0)
}

/// Whether `date` is a real calendar date written `DD/MM/YYYY` or `DD-MM-YYYY` (SPEC 2.1).
pub fn is_valid_birth_date(date: &[u8]) -> bool {
    let [d1, d2, s1, m1, m2, s2, y @ ..] = date else { return false };
    if y.len() != 4 || s1 != s2 || !matches!(s1, b'/' | b'-') {
        return false;
    }
    let (Some(day), Some(month), Some(year)) = (parse_u32(&[*d1, *d2]), parse_u32(&[*m1, *m2]), parse_u32(y)) else {
        return false;
    };
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    year >= 1 && (1..=days).contains(&day)
}

impl Engine {
    pub fn new(config: EngineConfig) -> Self {
        Engine {
            config,
            registry: Registry::default(),
            scheduler: Scheduler::default(),
            events: VecDeque::new(),
            changes: VecDeque::new(),
            change_seq: 0,
            durable_seq: 0,
            open_holds: HashSet::default(),
            current_hold: None,
            blocked: Vec::new(),
        }
    }

    /// Rebuilds an engine from what a store kept: `users` with connected ones in the order
    /// they connected, `messages` in the order they were accepted. Users that were connected
    /// stay connected, and their pending messages are ready to go.
    pub fn restore(
        config: EngineConfig,
        users: impl IntoIterator<Item = UserRecord>,
        messages: impl IntoIterator<Item = MessageRecord>,
    ) -> Result<Engine, EngineError> {
        let mut engine = Engine::new(config);
        let users: Vec<UserRecord> = users.into_iter().collect();
        // Fresh uids (for records without one) never collide with kept ones.
        engine.registry.reserve_uid(users.iter().map(|u| u.uid).max().unwrap_or(0));
        let mut uids = HashSet::<u64>::new();
        for u in users {
            if engine.registry.contains(&u.alias) {
                return Err(EngineError::InconsistentChange("a user is stored twice"));
            }
            if u.uid != 0 && !uids.insert(u.uid) {
                return Err(EngineError::InconsistentChange("two users have the same uid"));
            }
            engine.registry.insert_with_uid(&u.alias, &u.full_name, u.birth_date.as_deref(), u.uid);
            if let Some(user) = engine.registry.get_mut(&u.alias) {
                user.last_id = u.last_id;
            }
            if let Some(addr) = u.connection {
                engine.registry.connect(&u.alias, addr, Gate::default());
                if let Some(user) = engine.registry.get_mut(&u.alias) {
                    user.acks.extend(u.acks);
                }
            }
        }
        for m in messages {
            if !engine.registry.contains(&m.recipient) {
                return Err(EngineError::InconsistentChange("a message is stored for an unknown user"));
            }
            // A sender may have unregistered since; its messages stay.
            let sender = engine.registry.key(&m.sender).cloned().unwrap_or_else(|| Bytes::copy_from_slice(&m.sender));
            engine.registry.store(
                &m.recipient,
                StoredMessage {
                    sender,
                    sender_uid: m.sender_uid,
                    id: m.id,
                    body: m.body,
                    file: m.file,
                    gate: Gate::default(),
                },
            );
        }
        let connected: Vec<Bytes> = engine.registry.connected().cloned().collect();
        for alias in connected {
            engine.wake(&alias);
        }
        Ok(engine)
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The users, their connections and mailboxes, read-only.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The delivery scheduler, read-only: users queued for a push, deliveries in flight.
    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    /// Deliveries started and not yet reported.
    pub fn in_flight(&self) -> usize {
        self.scheduler.in_flight_count()
    }

    /// Answers one request from a client whose connection comes from `peer`.
    pub fn handle_request(&mut self, peer: IpAddr, request: &Request) -> Reply {
        match request {
            Request::Register { full_name, alias, birth_date } => {
                Reply::Register(self.register(alias, full_name, birth_date.as_ref()))
            }
            Request::Unregister { alias } => Reply::Unregister(self.unregister(peer, alias)),
            Request::Connect { alias, port } => Reply::Connect(self.connect(peer, alias, port)),
            Request::Disconnect { alias } => Reply::Disconnect(self.disconnect(peer, alias)),
            Request::Send { sender, recipient, body } => Reply::Send(self.send(peer, sender, recipient, body, None)),
            Request::ConnectedUsers { alias } => Reply::ConnectedUsers(self.connected_users(peer, alias.as_ref())),
            Request::Users { alias } => Reply::Users(self.users(peer, alias.as_ref())),
            Request::SendAttach { sender, recipient, body, file } => {
                Reply::SendAttach(self.send(peer, sender, recipient, body, Some(file)))
            }
        }
    }

    /// [`handle_request`](Self::handle_request), with the pushes the request causes held
    /// back until `hold` is [released](Self::release): a driver releases it once the reply
    /// is sent, so that no push (an acknowledgement above all) overtakes its reply.
    pub fn handle_request_held(&mut self, peer: IpAddr, request: &Request) -> (Reply, Hold) {
        // Unique in the process, not per engine: a hold taken from an engine that was since
        // replaced (a store rebuilt after a failure) can never release one of the new engine's.
        static NEXT_HOLD: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let hold = NEXT_HOLD.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.open_holds.insert(hold);
        self.current_hold = Some(hold);
        let reply = self.handle_request(peer, request);
        self.current_hold = None;
        (reply, Hold(hold))
    }

    /// Lets the pushes held for a request go out.
    pub fn release(&mut self, hold: Hold) {
        if self.open_holds.remove(&hold.0) {
            self.unblock();
        }
    }

    /// The sequence number of the last change recorded (0 before the first). After draining
    /// [`poll_change`](Self::poll_change), the changes drained are the ones up to this number.
    pub fn change_seq(&self) -> u64 {
        self.change_seq
    }

    /// Tells the engine that every change up to `seq` is durable. With
    /// [`EngineConfig::record_changes`], pushes wait for the changes that made them (a
    /// stored message, a connection) to be durable.
    pub fn mark_durable(&mut self, seq: u64) {
        let seq = seq.min(self.change_seq);
        if seq > self.durable_seq {
            self.durable_seq = seq;
            self.unblock();
        }
    }

    fn register(&mut self, alias: &Bytes, full_name: &Bytes, birth_date: Option<&Bytes>) -> RegisterReply {
        let reply = if alias.is_empty() || alias.len() > MAX_FIELD_LEN {
            RegisterReply::Error
        } else if self.registry.contains(alias) {
            RegisterReply::AliasInUse
        } else if full_name.is_empty()
            || full_name.len() > MAX_FIELD_LEN
            || birth_date.is_some_and(|d| !is_valid_birth_date(d))
            || self.registry.len() >= self.config.max_users
        {
            RegisterReply::Error
        } else {
            self.registry.insert(alias, full_name, birth_date.map(|d| &d[..]));
            self.record_change(|| Change::Registered {
                alias: alias.clone(),
                full_name: full_name.clone(),
                birth_date: birth_date.cloned(),
            });
            RegisterReply::Ok
        };
        self.record_event(|| Event::Register { alias: alias.clone(), ok: reply == RegisterReply::Ok });
        reply
    }

    fn unregister(&mut self, peer: IpAddr, alias: &Bytes) -> UnregisterReply {
        let reply = match self.registry.get(alias) {
            None => UnregisterReply::NoSuchUser,
            Some(user) if user.connection.is_some_and(|c| c.addr.ip() != peer) => UnregisterReply::Error,
            Some(_) => {
                self.registry.remove(alias);
                self.record_change(|| Change::Unregistered { alias: alias.clone() });
                UnregisterReply::Ok
            }
        };
        self.record_event(|| Event::Unregister { alias: alias.clone(), ok: reply == UnregisterReply::Ok });
        reply
    }

    fn connect(&mut self, peer: IpAddr, alias: &Bytes, port: &Bytes) -> ConnectReply {
        let reply = match (self.registry.get(alias), parse_port(port)) {
            (None, _) => ConnectReply::NoSuchUser,
            (Some(user), _) if user.is_connected() => ConnectReply::AlreadyConnected,
            (Some(_), None) => ConnectReply::Error,
            (Some(_), Some(port)) => {
                let addr = SocketAddr::new(peer, port);
                self.record_change(|| Change::Connected { alias: alias.clone(), addr });
                self.registry.connect(alias, addr, self.gate());
                self.wake(alias);
                ConnectReply::Ok
            }
        };
        self.record_event(|| Event::Connect { alias: alias.clone(), ok: reply == ConnectReply::Ok });
        reply
    }

    fn disconnect(&mut self, peer: IpAddr, alias: &Bytes) -> DisconnectReply {
        let reply = match self.registry.get(alias).map(|u| u.connection) {
            None => DisconnectReply::NoSuchUser,
            Some(None) => DisconnectReply::NotConnected,
            Some(Some(conn)) if conn.addr.ip() != peer => DisconnectReply::Error,
            Some(Some(_)) => {
                self.mark_disconnected(alias);
                DisconnectReply::Ok
            }
        };
        self.record_event(|| Event::Disconnect { alias: alias.clone(), ok: reply == DisconnectReply::Ok });
        reply
    }

    /// SEND, and SENDATTACH when `file` is given (SPEC 8: the same rules and the same
    /// per-sender ids; an empty file name is "any other error").
    fn send(
        &mut self,
        peer: IpAddr,
        sender: &Bytes,
        recipient: &Bytes,
        body: &Bytes,
        file: Option<&Bytes>,
    ) -> SendReply {
        let (Some(from), Some(to)) = (self.registry.get(sender), self.registry.get(recipient)) else {
            return SendReply::NoSuchUser;
        };
        if body.len() > MAX_FIELD_LEN
            || file.is_some_and(|f| f.is_empty() || f.len() > MAX_FIELD_LEN)
            || from.connection.is_some_and(|c| c.addr.ip() != peer)
            || to.mailbox.len() >= self.config.max_pending_per_user
            || self.registry.pending_total() >= self.config.max_pending_total
        {
            return SendReply::Error;
        }
        let recipient_connected = to.is_connected();
        let id = next_message_id(from.last_id);
        let sender_uid = from.uid;
        let Some(sender_key) = self.registry.key(sender).cloned() else { return SendReply::Error };
        if let Some(from) = self.registry.get_mut(sender) {
            from.last_id = id;
        }
        let body = Bytes::copy_from_slice(body);
        let file = file.map(|f| Bytes::copy_from_slice(f));
        self.record_change(|| Change::Stored {
            recipient: recipient.clone(),
            sender: sender_key.clone(),
            id,
            body: body.clone(),
            file: file.clone(),
        });
        let gate = self.gate();
        let message = StoredMessage { sender: sender_key.clone(), sender_uid, id, body, file: file.clone(), gate };
        self.registry.store(recipient, message);
        if recipient_connected {
            self.wake(recipient);
        } else {
            self.record_event(|| Event::Stored { id, sender: sender_key, recipient: recipient.clone(), file });
        }
        SendReply::Ok { id }
    }

    /// SPEC 8's USERS: CONNECTEDUSERS' rules, each user listed with its listening address.
    fn users(&mut self, peer: IpAddr, alias: Option<&Bytes>) -> UsersReply {
        let reply = match self.may_list_users(peer, alias) {
            Ok(()) => UsersReply::Ok {
                users: self
                    .registry
                    .connected()
                    .filter_map(|name| {
                        let conn = self.registry.get(name)?.connection?;
                        Some(UserEntry { name: name.clone(), ip: conn.addr.ip(), port: conn.addr.port() })
                    })
                    .collect(),
            },
            Err(ConnectedUsersReply::NotConnected) => UsersReply::NotConnected,
            Err(_) => UsersReply::Error,
        };
        self.record_event(|| Event::Users { ok: matches!(reply, UsersReply::Ok { .. }) });
        reply
    }

    /// Whether the requester of CONNECTEDUSERS or USERS may have the list (SPEC 2.6).
    fn may_list_users(&self, peer: IpAddr, alias: Option<&Bytes>) -> Result<(), ConnectedUsersReply> {
        match alias {
            Some(alias) => match self.registry.get(alias) {
                None => Err(ConnectedUsersReply::Error),
                Some(user) if !user.is_connected() => Err(ConnectedUsersReply::NotConnected),
                Some(_) => Ok(()),
            },
            None if self.registry.has_connected_ip(peer) => Ok(()),
            None => Err(ConnectedUsersReply::NotConnected),
        }
    }

    fn connected_users(&mut self, peer: IpAddr, alias: Option<&Bytes>) -> ConnectedUsersReply {
        let reply = match self.may_list_users(peer, alias) {
            Ok(()) => ConnectedUsersReply::Ok { users: self.registry.connected().cloned().collect() },
            Err(reply) => reply,
        };
        self.record_event(|| Event::ConnectedUsers { ok: matches!(reply, ConnectedUsersReply::Ok { .. }) });
        reply
    }

    /// The next push to make, if any, with its deadline counted from `now`.
    pub fn poll_delivery(&mut self, now: Instant) -> Option<Delivery> {
        while let Some((alias, uid)) = self.scheduler.next_ready() {
            let Some(user) = self.registry.get(&alias).filter(|u| u.uid == uid) else { continue };
            let has_work = !user.acks.is_empty() || !user.mailbox.is_empty();
            if user.connection.is_some() && !user.busy && has_work && !self.sendable(user) {
                // Its work waits for a hold or for durability; it stays queued there.
                self.blocked.push((alias, uid));
                continue;
            }
            let Some(user) = self.registry.get_mut(&alias) else { continue };
            user.queued = false;
            let (Some(conn), false) = (user.connection, user.busy) else { continue };
            let (push, flight_push) = if let Some((id, file)) = user.acks.pop_front() {
                let push = match file {
                    None => Push::Ack { id },
                    Some(file) => Push::AttachAck { id, file },
                };
                (push, InFlightPush::Ack { id })
            } else if let Some(m) = user.mailbox.front() {
                let (sender, id, body) = (m.sender.clone(), m.id, m.body.clone());
                let push = match &m.file {
                    None => Push::Message { sender, id, body },
                    Some(file) => Push::AttachMessage { sender, id, body, file: file.clone() },
                };
                let flight = InFlightPush::Message {
                    sender: m.sender.clone(),
                    sender_uid: m.sender_uid,
                    id: m.id,
                    file: m.file.clone(),
                };
                (push, flight)
            } else {
                continue;
            };
            user.busy = true;
            let deadline = now + self.config.delivery_timeout;
            let flight = InFlight { to: alias.clone(), uid, conn_seq: conn.seq, push: flight_push, deadline };
            let id = self.scheduler.start(flight);
            return Some(Delivery { id, to: alias, addr: conn.addr, push, deadline });
        }
        None
    }

    /// Whether a DISCONNECT of `alias` from `peer` should wait before it is handled (SPEC
    /// 2.4): the user is connected from `peer` and a push to it is in flight, an
    /// acknowledgement waits for it, or a message it sent is in flight or waits in the mailbox
    /// of a connected user (its acknowledgement will be owed to it). The caller bounds the
    /// wait.
    pub fn disconnect_should_wait(&self, peer: IpAddr, alias: &[u8]) -> bool {
        let Some(user) = self.registry.get(alias) else { return false };
        if user.connection.is_none_or(|c| c.addr.ip() != peer) {
            return false;
        }
        if user.busy || !user.acks.is_empty() || self.scheduler.carries_message_from(alias, user.uid) {
            return true;
        }
        let uid = user.uid;
        self.registry
            .connected()
            .filter_map(|other| self.registry.get(other))
            .any(|other| other.mailbox.iter().any(|m| m.sender == alias && m.sender_uid == uid))
    }

    /// Takes the outcome of a delivery from [`poll_delivery`](Self::poll_delivery).
    ///
    /// A delivered message leaves the mailbox and, if its sender is connected, queues an
    /// acknowledgement to it. A failed push marks the user it went to disconnected (if it
    /// is still on the connection the push was made for) and keeps the message.
    pub fn handle_delivery_result(&mut self, id: DeliveryId, outcome: DeliveryOutcome) -> Result<(), EngineError> {
        let flight = self.scheduler.finish(id).ok_or(EngineError::UnknownDelivery(id))?;
        let current = self.registry.get_mut(&flight.to).filter(|u| u.uid == flight.uid);
        let on_same_connection =
            current.as_ref().is_some_and(|u| u.connection.is_some_and(|c| c.seq == flight.conn_seq));
        let still_registered = current.is_some();
        if let Some(user) = current {
            user.busy = false;
        }
        match (flight.push, outcome) {
            (InFlightPush::Message { sender, sender_uid, id, file }, DeliveryOutcome::Delivered) => {
                if still_registered && self.registry.remove_front(&flight.to, &sender, id) {
                    self.record_change(|| Change::Removed { recipient: flight.to.clone(), sender: sender.clone(), id });
                }
                self.record_event(|| Event::Delivered {
                    id,
                    sender: sender.clone(),
                    recipient: flight.to.clone(),
                    file: file.clone(),
                });
                self.acknowledge(&sender, sender_uid, id, file);
            }
            (InFlightPush::Message { sender, id, file, .. }, DeliveryOutcome::Failed) => {
                self.record_event(|| Event::Stored { id, sender, recipient: flight.to.clone(), file });
                if on_same_connection {
                    self.mark_disconnected(&flight.to);
                }
            }
            (InFlightPush::Ack { id }, outcome) => {
                // Pushed or given up: owed no more (a failure also disconnects the user,
                // which drops the rest).
                if still_registered {
                    self.record_change(|| Change::AckDone { sender: flight.to.clone(), id });
                }
                if outcome == DeliveryOutcome::Failed && on_same_connection {
                    self.mark_disconnected(&flight.to);
                }
            }
        }
        if still_registered {
            self.wake(&flight.to);
        }
        Ok(())
    }

    /// The deadline of the oldest delivery in flight: call
    /// [`handle_timeout`](Self::handle_timeout) then.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.scheduler.next_deadline()
    }

    /// Fails every delivery whose deadline is at or before `now`; returns how many. A
    /// result reported later for one of them is refused with
    /// [`EngineError::UnknownDelivery`].
    pub fn handle_timeout(&mut self, now: Instant) -> usize {
        let mut expired = 0;
        while let Some(id) = self.scheduler.expired(now) {
            // Cannot fail: the id was just found in flight.
            let _ = self.handle_delivery_result(id, DeliveryOutcome::Failed);
            expired += 1;
        }
        expired
    }

    /// The next console event, oldest first.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next change of durable state, oldest first.
    pub fn poll_change(&mut self) -> Option<Change> {
        self.changes.pop_front()
    }

    /// Replays one recorded change (for a store restoring the engine at start). Records no
    /// event and no change of its own.
    pub fn apply(&mut self, change: &Change) -> Result<(), EngineError> {
        match change {
            Change::Registered { alias, full_name, birth_date } => {
                if self.registry.contains(alias) {
                    return Err(EngineError::InconsistentChange("registering an alias in use"));
                }
                self.registry.insert(alias, full_name, birth_date.as_deref());
            }
            Change::Unregistered { alias } => {
                self.registry.remove(alias).ok_or(EngineError::InconsistentChange("unregistering an unknown user"))?;
            }
            Change::Connected { alias, addr } => {
                if !self.registry.connect(alias, *addr, Gate::default()) {
                    return Err(EngineError::InconsistentChange("connecting an unknown user"));
                }
                self.wake(alias);
            }
            Change::Disconnected { alias } => {
                self.registry.disconnect(alias);
            }
            Change::Stored { recipient, sender, id, body, file } => {
                let sender_key = self.registry.key(sender).cloned();
                let (Some(sender_key), true) = (sender_key, self.registry.contains(recipient)) else {
                    return Err(EngineError::InconsistentChange("storing a message between unknown users"));
                };
                let sender_uid = match self.registry.get_mut(sender) {
                    Some(user) => {
                        user.last_id = *id;
                        user.uid
                    }
                    None => 0,
                };
                let message = StoredMessage {
                    sender: sender_key,
                    sender_uid,
                    id: *id,
                    body: Bytes::copy_from_slice(body),
                    file: file.clone(),
                    gate: Gate::default(),
                };
                self.registry.store(recipient, message);
                self.wake(recipient);
            }
            Change::Removed { recipient, sender, id } => {
                if !self.registry.remove_front(recipient, sender, *id) {
                    return Err(EngineError::InconsistentChange("removing a message that is not the oldest"));
                }
            }
            Change::AckOwed { sender, id, file } => {
                let Some(user) = self.registry.get_mut(sender).filter(|u| u.is_connected()) else {
                    return Err(EngineError::InconsistentChange("an acknowledgement owed to a user not connected"));
                };
                user.acks.push_back((*id, file.clone()));
                self.wake(sender);
            }
            Change::AckDone { sender, id } => {
                let user = self.registry.get_mut(sender);
                match user {
                    Some(user) if user.acks.front().is_some_and(|(a, _)| a == id) => {
                        user.acks.pop_front();
                    }
                    _ => return Err(EngineError::InconsistentChange("ending an acknowledgement that is not owed")),
                }
            }
        }
        Ok(())
    }

    fn acknowledge(&mut self, sender: &[u8], sender_uid: u64, id: u32, file: Option<Bytes>) {
        let Some(user) = self.registry.get_mut(sender).filter(|u| u.uid == sender_uid) else { return };
        if user.is_connected() {
            user.acks.push_back((id, file.clone()));
            let sender = Bytes::copy_from_slice(sender);
            self.record_change(|| Change::AckOwed { sender: sender.clone(), id, file });
            self.wake(&sender);
        }
    }

    fn mark_disconnected(&mut self, alias: &Bytes) {
        if self.registry.disconnect(alias) {
            self.record_change(|| Change::Disconnected { alias: alias.clone() });
        }
    }

    /// Queues the user for delivery if it is connected, idle and has something to push; if
    /// that push may not go out yet, parks the user until a hold or durability frees it.
    fn wake(&mut self, alias: &[u8]) {
        let Some(user) = self.registry.get(alias) else { return };
        if !user.wants_queueing() {
            return;
        }
        let (uid, sendable) = (user.uid, self.sendable(user));
        let Some(key) = self.registry.key(alias).cloned() else { return };
        if let Some(user) = self.registry.get_mut(alias) {
            user.queued = true;
        }
        if sendable {
            self.scheduler.enqueue(key, uid);
        } else {
            self.blocked.push((key, uid));
        }
    }

    /// The gate of what the current request makes now.
    fn gate(&self) -> Gate {
        Gate { seq: self.change_seq, hold: self.current_hold }
    }

    fn is_open(&self, gate: Gate) -> bool {
        gate.seq <= self.durable_seq && gate.hold.is_none_or(|h| !self.open_holds.contains(&h))
    }

    /// Whether the user's next push may go out now.
    fn sendable(&self, user: &User) -> bool {
        user.connection.is_some_and(|c| self.is_open(c.gate))
            && (!user.acks.is_empty() || user.mailbox.front().is_some_and(|m| self.is_open(m.gate)))
    }

    /// Moves the parked users whose next push may now go out to the ready queue.
    fn unblock(&mut self) {
        for (alias, uid) in std::mem::take(&mut self.blocked) {
            let Some(user) = self.registry.get(&alias).filter(|u| u.uid == uid) else { continue };
            if user.busy || user.connection.is_none() || (user.acks.is_empty() && user.mailbox.is_empty()) {
                // Nothing to push now; a later wake queues it again.
                if let Some(user) = self.registry.get_mut(&alias) {
                    user.queued = false;
                }
            } else if self.sendable(user) {
                self.scheduler.enqueue(alias, uid);
            } else {
                self.blocked.push((alias, uid));
            }
        }
    }

    fn record_event(&mut self, event: impl FnOnce() -> Event) {
        if self.config.record_events {
            self.events.push_back(event());
        }
    }

    fn record_change(&mut self, change: impl FnOnce() -> Change) {
        if self.config.record_changes {
            self.change_seq += 1;
            self.changes.push_back(change());
        }
    }
}
