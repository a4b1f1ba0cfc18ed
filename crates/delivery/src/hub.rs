//! This replica's sessions, indexed by user, and what can be pushed to them.
//!
//! The hub never blocks and never waits for a socket: pushing is a `try_send` into each session's
//! bounded queue. A session whose queue is full is a reader that cannot keep up; it is told to go
//! (its `overflow` token is cancelled) and its client will reconnect and resume. That keeps the
//! hub's memory bounded and a slow socket from delaying anyone else.
//!
//! The hub also caches conversation members, learned from the events that carry them and from the
//! conversation lists sessions load, so typing notices and presence changes reach the right people
//! without asking messaging every time.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, Once, RwLock, Weak,
        atomic::{AtomicU64, Ordering},
    },
};

use axum::extract::ws::Utf8Bytes;
use realchat_runtime::telemetry::propagation::TraceContext;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::metrics;

/// A message ready for sockets, rendered once.
#[derive(Debug)]
pub(crate) struct Delivered {
    pub(crate) conversation: Uuid,
    pub(crate) seq: i64,
    /// When it committed, for the commit-to-socket histogram.
    pub(crate) committed_at_ms: i64,
    pub(crate) frame: Utf8Bytes,
    /// The trace its socket writes continue: the span that routed it on this replica.
    pub(crate) trace: TraceContext,
}

/// What a session can be handed.
#[derive(Debug, Clone)]
pub(crate) enum Push {
    /// A message: pushed in seq order per conversation, gaps filled from history.
    Message(Arc<Delivered>),
    /// A frame with no order to keep (read, typing, presence); `kind` labels metrics.
    Frame(Utf8Bytes, &'static str),
    /// The user joined a conversation whose newest seq was `last_seq`.
    Joined { conversation: Uuid, last_seq: i64 },
    /// The user left a conversation.
    Left { conversation: Uuid },
    /// Live pushes may have been missed (the forwarding channel was down): catch up from history.
    Resync,
    /// A session of the user may have been revoked: a socket of a revoked session closes.
    Revoked,
}

/// The hub's side of one session.
#[derive(Debug, Clone)]
struct Handle {
    id: u64,
    tx: mpsc::Sender<Push>,
    overflow: CancellationToken,
}

/// What a session gets when it registers.
#[derive(Debug)]
pub(crate) struct Registration {
    pub(crate) id: u64,
    pub(crate) rx: mpsc::Receiver<Push>,
    /// Cancelled when the session's queue overflowed.
    pub(crate) overflow: CancellationToken,
    /// This is the user's first session on this replica.
    pub(crate) first_here: bool,
}

/// The sessions of this replica.
#[derive(Debug)]
pub(crate) struct Hub {
    users: RwLock<HashMap<Uuid, Vec<Handle>>>,
    next_id: AtomicU64,
    queue: usize,
    members: Mutex<MemberCache>,
    /// Users whose route could not be claimed when their session opened.
    unrouted: Mutex<std::collections::HashSet<Uuid>>,
    /// Sockets being opened per user (admitted, the upgrade under way): counted with the open
    /// ones, so upgrades that race one another cannot all slip under the cap.
    opening: Mutex<HashMap<Uuid, u32>>,
}

/// A socket of `user` being opened; it stops counting as opening when dropped (by then the
/// session registered, or the upgrade failed).
#[derive(Debug)]
pub(crate) struct Opening {
    hub: Arc<Hub>,
    user: Uuid,
}

impl Drop for Opening {
    fn drop(&mut self) {
        let mut opening = self.hub.opening.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = opening.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                opening.remove(&self.user);
            }
        }
    }
}

/// Reports, at each scrape, the pushes queued in the sessions of `hub` and of every other hub of
/// the process ([`metrics::SEND_QUEUE`]). Counted then rather than on every push, which keeps the
/// fan-out free of shared counters. One gauge for all hubs: a replica has one, but tests run
/// several replicas in one process, and each setting the gauge would overwrite the others.
pub(crate) fn observe_queues(hub: &Arc<Hub>) {
    static HUBS: Mutex<Vec<Weak<Hub>>> = Mutex::new(Vec::new());
    static REGISTER: Once = Once::new();
    HUBS.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Arc::downgrade(hub));
    REGISTER.call_once(|| {
        realchat_runtime::collectors::register(|| {
            let hubs: Vec<Arc<Hub>> = {
                let mut hubs = HUBS.lock().unwrap_or_else(|p| p.into_inner());
                hubs.retain(|hub| hub.strong_count() > 0);
                hubs.iter().filter_map(Weak::upgrade).collect()
            };
            let queued: usize = hubs.iter().map(|hub| hub.queued()).sum();
            ::metrics::gauge!(metrics::SEND_QUEUE).set(queued as f64);
        });
    });
}

/// Conversations whose members the hub remembers, at most; past it the cache starts over.
const MAX_CACHED_CONVERSATIONS: usize = 200_000;
/// Member ids the hub remembers in all, at most (16 bytes each: 64 MiB); past it the cache starts
/// over. What bounds the memory is the ids, not the conversations: a group holds up to 1,000.
const MAX_CACHED_MEMBER_IDS: usize = 4_000_000;

/// Conversations' members, and how many ids that is.
#[derive(Debug, Default)]
struct MemberCache {
    by_conversation: HashMap<Uuid, Arc<[Uuid]>>,
    ids: usize,
}

impl Hub {
    /// A hub whose sessions queue at most `queue` pushes each.
    pub(crate) fn new(queue: usize) -> Self {
        Self {
            users: RwLock::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            queue: queue.max(1),
            members: Mutex::new(MemberCache::default()),
            unrouted: Mutex::new(std::collections::HashSet::new()),
            opening: Mutex::new(HashMap::new()),
        }
    }

    /// Adds a session of `user`.
    pub(crate) fn register(&self, user: Uuid) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(self.queue);
        let overflow = CancellationToken::new();
        let mut users = self.users.write().unwrap_or_else(|p| p.into_inner());
        let sessions = users.entry(user).or_default();
        let first_here = sessions.is_empty();
        sessions.push(Handle {
            id,
            tx,
            overflow: overflow.clone(),
        });
        ::metrics::gauge!(metrics::SESSIONS).increment(1.0);
        Registration {
            id,
            rx,
            overflow,
            first_here,
        }
    }

    /// Removes a session; true when it was the user's last one on this replica.
    pub(crate) fn unregister(&self, user: Uuid, id: u64) -> bool {
        let mut users = self.users.write().unwrap_or_else(|p| p.into_inner());
        let Some(sessions) = users.get_mut(&user) else {
            return false;
        };
        let before = sessions.len();
        sessions.retain(|h| h.id != id);
        if sessions.len() < before {
            ::metrics::gauge!(metrics::SESSIONS).decrement(1.0);
        }
        if sessions.is_empty() {
            users.remove(&user);
            return true;
        }
        false
    }

    /// Hands `push` to every session of `users` on this replica; returns how many got it.
    pub(crate) fn deliver<'a>(
        &self,
        users: impl IntoIterator<Item = &'a Uuid>,
        push: &Push,
    ) -> usize {
        let sessions = self.users.read().unwrap_or_else(|p| p.into_inner());
        let mut delivered = 0;
        for user in users {
            for handle in sessions.get(user).into_iter().flatten() {
                if Self::offer(handle, push.clone()) {
                    delivered += 1;
                }
            }
        }
        delivered
    }

    /// Hands each push to every session of its users on this replica, keeping the order of
    /// `pushes` for each session; returns how many sessions each push was handed to.
    ///
    /// A user's pushes are queued back to back (user by user, not push by push), so a session
    /// woken by the first one finds the others already waiting and writes them to its socket
    /// in one go: for a big group, one system call per member for a whole batch of messages
    /// instead of one per message.
    pub(crate) fn deliver_all<'a>(
        &self,
        pushes: impl IntoIterator<Item = (&'a [Uuid], &'a Push)>,
    ) -> Vec<usize> {
        let pushes: Vec<(&[Uuid], &Push)> = pushes.into_iter().collect();
        if let [(users, push)] = pushes[..] {
            return vec![self.deliver(users, push)];
        }
        // (user, push index) pairs; a stable sort groups them by user in push order.
        let mut pairs: Vec<(Uuid, usize)> = pushes
            .iter()
            .enumerate()
            .flat_map(|(i, (users, _))| users.iter().map(move |user| (*user, i)))
            .collect();
        pairs.sort_by_key(|(user, _)| *user);
        let sessions = self.users.read().unwrap_or_else(|p| p.into_inner());
        let mut delivered = vec![0; pushes.len()];
        for run in pairs.chunk_by(|a, b| a.0 == b.0) {
            for handle in sessions.get(&run[0].0).into_iter().flatten() {
                for (_, i) in run {
                    if Self::offer(handle, pushes[*i].1.clone()) {
                        delivered[*i] += 1;
                    }
                }
            }
        }
        delivered
    }

    /// Hands `push` to every session on this replica.
    pub(crate) fn broadcast(&self, push: &Push) {
        let sessions = self.users.read().unwrap_or_else(|p| p.into_inner());
        for handle in sessions.values().flatten() {
            Self::offer(handle, push.clone());
        }
    }

    fn offer(handle: &Handle, push: Push) -> bool {
        match handle.tx.try_send(push) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                // The reader is too slow: it goes, and resumes when it reconnects.
                handle.overflow.cancel();
                false
            }
            // The session is closing.
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Pushes waiting in the sessions' queues: handed over, not yet taken by their sessions.
    fn queued(&self) -> usize {
        let sessions = self.users.read().unwrap_or_else(|p| p.into_inner());
        sessions
            .values()
            .flatten()
            // A queue's free slots come back as its session takes pushes (all of them when the
            // session drops the queue), so the missing ones are the pushes waiting.
            .map(|h| h.tx.max_capacity() - h.tx.capacity())
            .sum()
    }

    /// Whether `user` has a session here.
    #[cfg(test)]
    pub(crate) fn is_here(&self, user: &Uuid) -> bool {
        self.users
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(user)
    }

    /// Counts a socket of `user` as opening; returns it with the user's sockets here, this one
    /// included.
    pub(crate) fn open(self: &Arc<Self>, user: Uuid) -> (Opening, u32) {
        let mut opening = self.opening.lock().unwrap_or_else(|p| p.into_inner());
        let count = opening.entry(user).or_insert(0);
        *count += 1;
        let here = *count + self.sessions_of(&user);
        drop(opening);
        (
            Opening {
                hub: Arc::clone(self),
                user,
            },
            here,
        )
    }

    /// The sockets of `user` here: open, or being opened.
    pub(crate) fn sockets_of(&self, user: &Uuid) -> u32 {
        let opening = self
            .opening
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(user)
            .copied()
            .unwrap_or(0);
        opening + self.sessions_of(user)
    }

    fn sessions_of(&self, user: &Uuid) -> u32 {
        let users = self.users.read().unwrap_or_else(|p| p.into_inner());
        users.get(user).map_or(0, |sessions| {
            u32::try_from(sessions.len()).unwrap_or(u32::MAX)
        })
    }

    /// Every user with a session here.
    pub(crate) fn users(&self) -> Vec<Uuid> {
        self.users
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect()
    }

    /// Number of sessions here.
    #[cfg(test)]
    pub(crate) fn session_count(&self) -> usize {
        self.users
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(Vec::len)
            .sum()
    }

    /// Notes that `user`'s route is not in Redis (it could not be claimed).
    pub(crate) fn mark_unrouted(&self, user: Uuid) {
        self.unrouted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(user);
    }

    /// Takes the users noted as unrouted (to claim them, then have them resync).
    pub(crate) fn take_unrouted(&self) -> Vec<Uuid> {
        self.unrouted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect()
    }

    /// Remembers a conversation's members.
    pub(crate) fn set_members(&self, conversation: Uuid, members: Arc<[Uuid]>) {
        let mut cache = self.members.lock().unwrap_or_else(|p| p.into_inner());
        let replaced = cache
            .by_conversation
            .get(&conversation)
            .map_or(0, |m| m.len());
        let new_conversation = replaced == 0 && !cache.by_conversation.contains_key(&conversation);
        if (new_conversation && cache.by_conversation.len() >= MAX_CACHED_CONVERSATIONS)
            || cache.ids - replaced + members.len() > MAX_CACHED_MEMBER_IDS
        {
            cache.by_conversation.clear();
            cache.ids = 0;
        }
        let replaced = cache
            .by_conversation
            .get(&conversation)
            .map_or(0, |m| m.len());
        cache.ids = cache.ids - replaced + members.len();
        cache.by_conversation.insert(conversation, members);
    }

    /// A conversation's members, if known.
    pub(crate) fn members(&self, conversation: &Uuid) -> Option<Arc<[Uuid]>> {
        self.members
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_conversation
            .get(conversation)
            .cloned()
    }

    /// Member ids remembered in all.
    #[cfg(test)]
    fn cached_member_ids(&self) -> usize {
        self.members.lock().unwrap_or_else(|p| p.into_inner()).ids
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_cancels_only_that_session() {
        let hub = Hub::new(2);
        let (slow, fast) = (Uuid::now_v7(), Uuid::now_v7());
        let slow_session = hub.register(slow);
        let mut fast_session = hub.register(fast);
        assert!(slow_session.first_here && fast_session.first_here);
        let push = Push::Frame(Utf8Bytes::from_static("{}"), "test");
        for _ in 0..3 {
            hub.deliver([&slow, &fast], &push);
            fast_session.rx.try_recv().unwrap();
        }
        assert!(slow_session.overflow.is_cancelled());
        assert!(!fast_session.overflow.is_cancelled());
    }

    fn frames(rx: &mut mpsc::Receiver<Push>) -> Vec<String> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .map(|push| match push {
                Push::Frame(frame, _) => frame.to_string(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn pushes_handed_over_together_reach_each_session_in_their_order() {
        let hub = Hub::new(8);
        let (a, b, absent) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let mut a1 = hub.register(a);
        let mut a2 = hub.register(a);
        let mut b1 = hub.register(b);
        let push = |text: &'static str| Push::Frame(Utf8Bytes::from_static(text), "test");
        let (one, two, three) = (push("1"), push("2"), push("3"));
        let both = [b, a, absent];
        let only_a = [a];

        let handed = hub.deliver_all([(&both[..], &one), (&only_a[..], &two), (&both[..], &three)]);

        assert_eq!(handed, [3, 2, 3]);
        assert_eq!(frames(&mut a1.rx), ["1", "2", "3"]);
        assert_eq!(frames(&mut a2.rx), ["1", "2", "3"]);
        assert_eq!(frames(&mut b1.rx), ["1", "3"]);
    }

    #[test]
    fn queued_pushes_are_those_handed_over_and_not_yet_taken() {
        let hub = Hub::new(8);
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let mut a1 = hub.register(a);
        let b1 = hub.register(b);
        let push = Push::Frame(Utf8Bytes::from_static("{}"), "test");
        hub.deliver([&a, &b], &push);
        hub.deliver([&a], &push);
        assert_eq!(hub.queued(), 3);
        a1.rx.try_recv().unwrap();
        assert_eq!(hub.queued(), 2);
        // A session that ends takes its queue with it.
        drop(b1);
        assert_eq!(hub.queued(), 1);
    }

    #[test]
    fn the_last_session_of_a_user_is_reported() {
        let hub = Hub::new(4);
        let user = Uuid::now_v7();
        let first = hub.register(user);
        let second = hub.register(user);
        assert!(!second.first_here);
        assert!(!hub.unregister(user, first.id));
        assert!(hub.is_here(&user));
        assert!(hub.unregister(user, second.id));
        assert!(!hub.is_here(&user));
        assert_eq!(hub.session_count(), 0);
    }

    #[test]
    fn the_member_cache_is_bounded_by_ids_not_conversations() {
        let hub = Hub::new(8);
        let group: Arc<[Uuid]> = (0..1000).map(|_| Uuid::new_v4()).collect::<Vec<_>>().into();
        let fill = MAX_CACHED_MEMBER_IDS / 1000;
        for _ in 0..fill {
            hub.set_members(Uuid::new_v4(), Arc::clone(&group));
        }
        assert_eq!(hub.cached_member_ids(), MAX_CACHED_MEMBER_IDS);
        // Replacing one counts its ids once.
        let known = Uuid::new_v4();
        hub.set_members(known, Arc::from(vec![Uuid::new_v4()]));
        assert_eq!(
            hub.cached_member_ids(),
            1,
            "past the bound the cache started over"
        );
        hub.set_members(known, Arc::from(vec![Uuid::new_v4(), Uuid::new_v4()]));
        assert_eq!(hub.cached_member_ids(), 2);
        assert_eq!(hub.members(&known).unwrap().len(), 2);
    }
}
