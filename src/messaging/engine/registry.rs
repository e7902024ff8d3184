//! Users, their connections and their mailboxes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;

type FastMap<K, V> = HashMap<K, V, foldhash::quality::RandomState>;

/// When something the engine made may be pushed: once the change that made it is durable
/// (`seq` at most the driver's durable mark) and the request that made it has had its reply
/// sent (`hold` released). See [`Engine::handle_request_held`](super::Engine::handle_request_held).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Gate {
    pub seq: u64,
    pub hold: Option<u64>,
}

/// A message waiting in its recipient's mailbox. Two are equal when sender, id and body
/// are (the rest is the engine's bookkeeping).
#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub sender: Bytes,
    /// Which registration of `sender` sent it: an acknowledgement never reaches a newer
    /// user who took the same alias.
    pub(crate) sender_uid: u64,
    pub id: u32,
    pub body: Bytes,
    /// The attached file's name, for a SENDATTACH message (SPEC 8).
    pub file: Option<Bytes>,
    pub(crate) gate: Gate,
}

impl StoredMessage {
    /// The uid of the registration that sent it (see [`User::uid`]).
    pub fn sender_uid(&self) -> u64 {
        self.sender_uid
    }
}

impl PartialEq for StoredMessage {
    fn eq(&self, other: &Self) -> bool {
        self.sender == other.sender && self.id == other.id && self.body == other.body && self.file == other.file
    }
}

impl Eq for StoredMessage {}

/// Pending messages of one user, oldest first.
#[derive(Debug, Default, Clone)]
pub struct Mailbox {
    messages: VecDeque<StoredMessage>,
}

impl Mailbox {
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    pub fn front(&self) -> Option<&StoredMessage> {
        self.messages.front()
    }

    pub fn iter(&self) -> impl Iterator<Item = &StoredMessage> {
        self.messages.iter()
    }

    pub(crate) fn push(&mut self, message: StoredMessage) {
        self.messages.push_back(message);
    }

    /// Removes the oldest message if it is the one named.
    pub(crate) fn remove_front(&mut self, sender: &[u8], id: u32) -> bool {
        match self.messages.front() {
            Some(m) if m.id == id && m.sender == sender => {
                self.messages.pop_front();
                true
            }
            _ => false,
        }
    }
}

/// Where a connected user listens, and when it connected (for CONNECTEDUSERS' order and to
/// tell one connection of a user from its next one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connection {
    pub addr: SocketAddr,
    pub seq: u64,
    /// Pushes to this connection wait for the CONNECT to be durable and answered.
    pub(crate) gate: Gate,
}

/// One registered user.
#[derive(Debug, Clone)]
pub struct User {
    /// Unique per registration: a user unregistered and registered again is a new user.
    pub(crate) uid: u64,
    pub full_name: Bytes,
    pub birth_date: Option<Bytes>,
    /// The id of the last message this user sent (0 before the first).
    pub last_id: u32,
    pub connection: Option<Connection>,
    pub mailbox: Mailbox,
    /// Acknowledgements waiting to be pushed to this user: message ids, with the attached
    /// file's name for a SENDATTACH message.
    pub(crate) acks: VecDeque<(u32, Option<Bytes>)>,
    /// A delivery to this user is in flight.
    pub(crate) busy: bool,
    /// This user is in the scheduler's ready queue.
    pub(crate) queued: bool,
}

impl User {
    /// The registration's identity (see [`UserRecord::uid`](super::UserRecord::uid)).
    pub fn uid(&self) -> u64 {
        self.uid
    }

    /// Acknowledgements owed to this user and not yet pushed, oldest first.
    pub fn acks(&self) -> impl Iterator<Item = &(u32, Option<Bytes>)> {
        self.acks.iter()
    }

    pub fn is_connected(&self) -> bool {
        self.connection.is_some()
    }

    fn has_work(&self) -> bool {
        !self.acks.is_empty() || !self.mailbox.is_empty()
    }

    /// Whether the scheduler should queue this user now.
    pub(crate) fn wants_queueing(&self) -> bool {
        self.connection.is_some() && !self.busy && !self.queued && self.has_work()
    }
}

/// Every registered user, by alias, with the indexes the operations need.
#[derive(Debug, Default)]
pub struct Registry {
    users: FastMap<Bytes, User>,
    /// Connected users by connection sequence: iteration order is connection order.
    connected: BTreeMap<u64, Bytes>,
    /// How many connected users listen at each IP (CONNECTEDUSERS without an alias).
    connected_ips: FastMap<IpAddr, u32>,
    pending_total: usize,
    next_uid: u64,
    next_seq: u64,
}

impl Registry {
    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    pub fn get(&self, alias: &[u8]) -> Option<&User> {
        self.users.get(alias)
    }

    pub(crate) fn get_mut(&mut self, alias: &[u8]) -> Option<&mut User> {
        self.users.get_mut(alias)
    }

    /// The registry's own copy of `alias`, shared by everything that names the user.
    pub(crate) fn key(&self, alias: &[u8]) -> Option<&Bytes> {
        self.users.get_key_value(alias).map(|(k, _)| k)
    }

    pub fn contains(&self, alias: &[u8]) -> bool {
        self.users.contains_key(alias)
    }

    /// Pending messages over all mailboxes.
    pub fn pending_total(&self) -> usize {
        self.pending_total
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Bytes, &User)> {
        self.users.iter()
    }

    /// Aliases of the connected users, oldest connection first.
    pub fn connected(&self) -> impl Iterator<Item = &Bytes> {
        self.connected.values()
    }

    pub fn connected_count(&self) -> usize {
        self.connected.len()
    }

    /// Whether some connected user listens at `ip`.
    pub fn has_connected_ip(&self, ip: IpAddr) -> bool {
        self.connected_ips.contains_key(&ip)
    }

    /// Adds a user; the caller has checked that the alias is free. Copies the fields so that
    /// the registry never keeps a connection's read buffer alive.
    pub(crate) fn insert(&mut self, alias: &[u8], full_name: &[u8], birth_date: Option<&[u8]>) {
        self.insert_with_uid(alias, full_name, birth_date, 0);
    }

    /// [`insert`](Self::insert) with the registration identity a store kept (0: a fresh
    /// one). Later users get uids above every uid seen.
    pub(crate) fn insert_with_uid(&mut self, alias: &[u8], full_name: &[u8], birth_date: Option<&[u8]>, uid: u64) {
        let uid = if uid == 0 {
            self.next_uid += 1;
            self.next_uid
        } else {
            self.next_uid = self.next_uid.max(uid);
            uid
        };
        let user = User {
            uid,
            full_name: Bytes::copy_from_slice(full_name),
            birth_date: birth_date.map(Bytes::copy_from_slice),
            last_id: 0,
            connection: None,
            mailbox: Mailbox::default(),
            acks: VecDeque::new(),
            busy: false,
            queued: false,
        };
        self.users.insert(Bytes::copy_from_slice(alias), user);
    }

    /// Fresh uids are above `uid` from now on.
    pub(crate) fn reserve_uid(&mut self, uid: u64) {
        self.next_uid = self.next_uid.max(uid);
    }

    pub(crate) fn remove(&mut self, alias: &[u8]) -> Option<User> {
        self.disconnect(alias);
        let user = self.users.remove(alias)?;
        self.pending_total -= user.mailbox.len();
        Some(user)
    }

    /// Marks the user connected at `addr`; returns false if it is not registered.
    pub(crate) fn connect(&mut self, alias: &[u8], addr: SocketAddr, gate: Gate) -> bool {
        let Some(user) = self.users.get_mut(alias) else { return false };
        let previous = user.connection.take();
        self.next_seq += 1;
        user.connection = Some(Connection { addr, seq: self.next_seq, gate });
        self.disconnect_user_indexes(previous);
        // The registry's own key (a reference count), not the request's bytes.
        if let Some(key) = self.key(alias).cloned() {
            self.connected.insert(self.next_seq, key);
        }
        *self.connected_ips.entry(addr.ip()).or_insert(0) += 1;
        true
    }

    /// Marks the user disconnected and drops the acknowledgements it was still owed.
    /// Returns whether it was connected.
    pub(crate) fn disconnect(&mut self, alias: &[u8]) -> bool {
        let Some(user) = self.users.get_mut(alias) else { return false };
        let Some(conn) = user.connection.take() else { return false };
        user.acks.clear();
        self.disconnect_user_indexes(Some(conn));
        true
    }

    fn disconnect_user_indexes(&mut self, conn: Option<Connection>) {
        let Some(conn) = conn else { return };
        self.connected.remove(&conn.seq);
        let ip = conn.addr.ip();
        if let Some(count) = self.connected_ips.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                self.connected_ips.remove(&ip);
            }
        }
    }

    /// Appends a message to `recipient`'s mailbox; the caller has checked the limits.
    pub(crate) fn store(&mut self, recipient: &[u8], message: StoredMessage) {
        if let Some(user) = self.users.get_mut(recipient) {
            user.mailbox.push(message);
            self.pending_total += 1;
        }
    }

    /// Removes `recipient`'s oldest message if it is the one named.
    pub(crate) fn remove_front(&mut self, recipient: &[u8], sender: &[u8], id: u32) -> bool {
        let removed = self.users.get_mut(recipient).is_some_and(|u| u.mailbox.remove_front(sender, id));
        if removed {
            self.pending_total -= 1;
        }
        removed
    }
}
