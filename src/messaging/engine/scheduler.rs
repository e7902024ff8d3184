//! Which pushes go out next, and which are in flight.
//!
//! Per user the scheduler is in one of three states: idle (nothing to push, or not
//! connected: waiting for its next CONNECT), queued (in the ready queue), or delivering (one
//! push in flight; never two at once to one user). The ready queue holds users, not
//! messages, so a user with a thousand pending messages costs one entry, and the mailbox
//! itself is the per-user FIFO.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use bytes::Bytes;

/// Names one delivery from [`Engine::poll_delivery`](super::Engine::poll_delivery) until
/// its outcome is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryId(pub u64);

/// What an in-flight delivery carries, as the engine needs it when the outcome comes back.
#[derive(Debug, Clone)]
pub(crate) enum InFlightPush {
    Message {
        sender: Bytes,
        sender_uid: u64,
        id: u32,
        file: Option<Bytes>,
    },
    /// An acknowledgement of message `id` (SPEC 3).
    Ack {
        id: u32,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct InFlight {
    /// The user the push goes to, and which registration and connection of it.
    pub to: Bytes,
    pub uid: u64,
    pub conn_seq: u64,
    pub push: InFlightPush,
    pub deadline: Instant,
}

/// The delivery scheduler of an [`Engine`](super::Engine), read through
/// [`Engine::scheduler`](super::Engine::scheduler): which users wait for their next push and
/// which pushes are in flight. Only the engine changes it.
#[derive(Debug, Default)]
pub struct Scheduler {
    /// Users with work to push, by alias and registration (a stale entry is skipped).
    ready: VecDeque<(Bytes, u64)>,
    /// Ids grow with time and every delivery has the same timeout, so the first entry is
    /// also the first to expire (`now` never goes backwards).
    in_flight: BTreeMap<DeliveryId, InFlight>,
    next_id: u64,
}

impl Scheduler {
    pub(crate) fn enqueue(&mut self, alias: Bytes, uid: u64) {
        self.ready.push_back((alias, uid));
    }

    pub(crate) fn next_ready(&mut self) -> Option<(Bytes, u64)> {
        self.ready.pop_front()
    }

    pub(crate) fn start(&mut self, flight: InFlight) -> DeliveryId {
        self.next_id += 1;
        let id = DeliveryId(self.next_id);
        self.in_flight.insert(id, flight);
        id
    }

    pub(crate) fn finish(&mut self, id: DeliveryId) -> Option<InFlight> {
        self.in_flight.remove(&id)
    }

    pub fn in_flight_count(&self) -> usize {
        self.in_flight.len()
    }

    /// The earliest deadline of a delivery in flight.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.in_flight.first_key_value().map(|(_, f)| f.deadline)
    }

    /// Users queued for their next push (a user with many pending messages counts once).
    pub fn queued(&self) -> usize {
        self.ready.len()
    }

    /// The deliveries in flight, oldest first, with the alias each goes to.
    pub fn in_flight(&self) -> impl Iterator<Item = (DeliveryId, &Bytes)> {
        self.in_flight.iter().map(|(id, flight)| (*id, &flight.to))
    }

    /// Whether a message of `sender` (this registration of it) is being pushed.
    pub(crate) fn carries_message_from(&self, sender: &[u8], sender_uid: u64) -> bool {
        self.in_flight.values().any(|f| {
            matches!(&f.push, InFlightPush::Message { sender: s, sender_uid: u, .. } if s == sender && *u == sender_uid)
        })
    }

    /// The oldest in-flight delivery if its deadline is at or before `now`.
    pub(crate) fn expired(&self, now: Instant) -> Option<DeliveryId> {
        self.in_flight.first_key_value().filter(|(_, f)| f.deadline <= now).map(|(id, _)| *id)
    }
}
