//! Getting events to sockets: the consumer of `realchat.messages.v1`, and the forwarding channel
//! between replicas.
//!
//! The replica that owns a partition handles its events in order ([`Fanout`]). For each event it
//! hands the push to its own sessions of the recipients, then looks up (in Redis) which other
//! replicas hold recipients and publishes one [`Forward`] to each. The receiving replica
//! ([`forwarding`]) hands the same push to its sessions. Only then is the offset stored, so a crash
//! before that redelivers the event (at least once; sessions drop what they already pushed).
//!
//! Redis may fail here. Local sessions still get everything this replica consumes; the forwards
//! that could not be published are missed live by the other replicas. If their subscriptions (on
//! the same Redis) dropped too, they tell every session to resync from history when theirs comes
//! back. If not (only this replica's calls failed or were too slow), this replica tells them to
//! resync once Redis answers it again (`Cluster::repair_skipped_forwards`, on the heartbeat). A gap
//! noticed any other way is filled by the session itself before it pushes the next message.

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::{FutureExt as _, StreamExt as _};
use prost::Message as _;
use realchat_events::consumer::{Event, Handler, HandlerError};
use realchat_proto::{
    delivery::v1::{Forward, forward::Item},
    events::v1::{Envelope, envelope::Payload},
};
use realchat_runtime::telemetry::propagation::{self, TraceContext};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::{
    cluster::{self, Cluster},
    hub::{Delivered, Hub, Push},
    metrics, protocol,
};

/// Who an event is for, and what they get.
#[derive(Debug)]
pub(crate) struct Routed {
    pub(crate) recipients: Vec<Uuid>,
    pub(crate) push: Push,
}

fn uuid(field: &str, value: &str) -> Result<Uuid, String> {
    value
        .parse()
        .map_err(|_| format!("{field} is not a UUID: {value:?}"))
}

fn uuids(field: &str, values: &[String]) -> Result<Vec<Uuid>, String> {
    values.iter().map(|v| uuid(field, v)).collect()
}

/// Turns an event into pushes, remembering the members it carries. `None` for events that are
/// not for sockets; an error for an event that can never be delivered (it is dead-lettered).
pub(crate) fn route(hub: &Hub, envelope: &Envelope) -> Result<Option<Routed>, String> {
    let Some(payload) = &envelope.payload else {
        return Err("envelope without a payload".into());
    };
    let routed = match payload {
        Payload::MessageCreated(m) => {
            let conversation = uuid("conversation_id", &m.conversation_id)?;
            let members = uuids("member_ids", &m.member_ids)?;
            if m.seq < 1 {
                return Err(format!("message.created with seq {}", m.seq));
            }
            hub.set_members(conversation, members.clone().into());
            Routed {
                push: Push::Message(Arc::new(Delivered {
                    conversation,
                    seq: m.seq,
                    committed_at_ms: m.created_at_ms,
                    frame: protocol::message_from_event(m),
                    trace: TraceContext::current(),
                })),
                recipients: members,
            }
        }
        Payload::ReadUpdated(r) => {
            let conversation = uuid("conversation_id", &r.conversation_id)?;
            uuid("user_id", &r.user_id)?;
            let members = uuids("member_ids", &r.member_ids)?;
            hub.set_members(conversation, members.clone().into());
            Routed {
                push: Push::Frame(
                    protocol::read(&r.conversation_id, &r.user_id, r.seq),
                    "read",
                ),
                recipients: members,
            }
        }
        Payload::MemberAdded(a) => {
            let conversation = uuid("conversation_id", &a.conversation_id)?;
            let added = if a.user_ids.is_empty() {
                vec![uuid("user_id", &a.user_id)?]
            } else {
                uuids("user_ids", &a.user_ids)?
            };
            hub.set_members(conversation, uuids("member_ids", &a.member_ids)?.into());
            Routed {
                push: Push::Joined {
                    conversation,
                    last_seq: a.last_seq,
                },
                recipients: added,
            }
        }
        Payload::MemberRemoved(r) => {
            let conversation = uuid("conversation_id", &r.conversation_id)?;
            let user = uuid("user_id", &r.user_id)?;
            hub.set_members(conversation, uuids("member_ids", &r.member_ids)?.into());
            Routed {
                push: Push::Left { conversation },
                recipients: vec![user],
            }
        }
        Payload::UserRegistered(_) => return Ok(None),
    };
    Ok(Some(routed))
}

/// One push, who it is for, and what other replicas are forwarded of it.
pub(crate) struct Spread<'a> {
    pub(crate) recipients: &'a [Uuid],
    pub(crate) push: &'a Push,
    /// Builds what is forwarded, once per replica that holds recipients.
    pub(crate) item: &'a (dyn Fn() -> Item + Sync),
}

/// Hands `push` to local sessions and forwards it to the replicas holding the other recipients.
/// `item` builds what is forwarded. Redis failures are counted and logged by the cluster, not
/// returned: what the other replicas miss live they repair (see the module docs).
pub(crate) async fn spread(
    hub: &Hub,
    cluster: &Cluster,
    recipients: &[Uuid],
    push: &Push,
    item: impl Fn() -> Item + Sync,
) {
    let one = Spread {
        recipients,
        push,
        item: &item,
    };
    spread_all(hub, cluster, &[one], Instant::now()).await;
}

/// [`spread`] for several pushes at once, in order: local sessions get them back to back
/// ([`Hub::deliver_all`]), one Redis round trip finds every recipient's replicas, and one more
/// publishes every forward, in push order per replica. `received` is when their events came.
pub(crate) async fn spread_all(
    hub: &Hub,
    cluster: &Cluster,
    spreads: &[Spread<'_>],
    received: Instant,
) {
    let local = deliver_locally(
        hub,
        spreads.iter().map(|s| (s.recipients, s.push)),
        received,
    );
    let union;
    let users = match spreads {
        [one] => one.recipients,
        _ => {
            let mut all: Vec<Uuid> = spreads
                .iter()
                .flat_map(|s| s.recipients.iter().copied())
                .collect();
            all.sort_unstable();
            all.dedup();
            union = all;
            &union[..]
        }
    };
    let Ok(by_replica) = cluster.routes(users).await else {
        // Whoever else should have had it gets it by a resync (see `repair_skipped_forwards`).
        cluster.skipped_forwards();
        return;
    };
    tracing::debug!(local, replicas = by_replica.len(), "spreading");
    if by_replica.is_empty() {
        return;
    }
    let forwards: Vec<(String, Forward)> = match spreads {
        [one] => by_replica
            .into_iter()
            .map(|(replica, user_ids)| {
                let user_ids = user_ids.iter().map(Uuid::to_string).collect();
                let item = Some((one.item)());
                (replica, Forward { user_ids, item })
            })
            .collect(),
        _ => {
            let mut replicas_of: HashMap<Uuid, Vec<&str>> = HashMap::new();
            for (replica, user_ids) in &by_replica {
                for user in user_ids {
                    replicas_of.entry(*user).or_default().push(replica);
                }
            }
            let mut forwards = Vec::new();
            for spread in spreads {
                let mut to: BTreeMap<&str, Vec<String>> = BTreeMap::new();
                for user in spread.recipients {
                    for replica in replicas_of.get(user).into_iter().flatten() {
                        to.entry(replica).or_default().push(user.to_string());
                    }
                }
                for (replica, user_ids) in to {
                    let item = Some((spread.item)());
                    forwards.push((replica.to_owned(), Forward { user_ids, item }));
                }
            }
            forwards
        }
    };
    let count_forward = |replica: &str, outcome: &'static str| {
        let target = cluster::node_of(replica).to_owned();
        ::metrics::counter!(metrics::FORWARDS, "target" => target, "outcome" => outcome)
            .increment(1);
    };
    match cluster.forward_all(&forwards).await {
        Ok(listened) => {
            for ((replica, _), listened) in forwards.iter().zip(listened) {
                // Nobody listening: the replica is gone; its clients reconnect elsewhere and resume.
                count_forward(replica, if listened { "sent" } else { "no_listener" });
            }
        }
        Err(_) => {
            cluster.skipped_forwards();
            for (replica, _) in &forwards {
                count_forward(replica, "failed");
            }
        }
    }
}

/// Hands each push to this replica's sessions of its users ([`Hub::deliver_all`]) and records
/// each one's fan-out: the sockets it reached, and the time since its event was `received`.
/// Returns how many pushes were handed over in all.
fn deliver_locally<'a>(
    hub: &Hub,
    pushes: impl IntoIterator<Item = (&'a [Uuid], &'a Push)>,
    received: Instant,
) -> usize {
    let handed = hub.deliver_all(pushes);
    let seconds = received.elapsed().as_secs_f64();
    let (sockets_histogram, seconds_histogram) = (
        ::metrics::histogram!(metrics::FANOUT_SOCKETS),
        ::metrics::histogram!(metrics::FANOUT_SECONDS),
    );
    for sockets in &handed {
        sockets_histogram.record(*sockets as f64);
        seconds_histogram.record(seconds);
    }
    handed.iter().sum()
}

/// The consumer's handler: the partition owner's side of the fan-out.
#[derive(Debug, Clone)]
pub(crate) struct Fanout {
    pub(crate) hub: Arc<Hub>,
    pub(crate) cluster: Cluster,
}

impl Handler for Fanout {
    fn handle<'a>(
        &'a self,
        event: &'a Event,
    ) -> Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send + 'a>> {
        // Under the consumer's span, so in the event's trace; what it forwards carries it on.
        let span = tracing::info_span!("fanout");
        let handled = async move {
            let received = Instant::now();
            let routed = route(&self.hub, &event.envelope)
                .map_err(|reason| HandlerError::Reject(anyhow::anyhow!(reason)))?;
            if let Some(Routed { recipients, push }) = routed {
                let item = || Item::Event(forwarded(&event.envelope));
                let one = Spread {
                    recipients: &recipients,
                    push: &push,
                    item: &item,
                };
                spread_all(&self.hub, &self.cluster, &[one], received).await;
            }
            Ok(())
        };
        Box::pin(handled.instrument(span))
    }

    /// Routes the leading events that route, then spreads them together, so each session
    /// writes their frames at once and Redis is asked once for all their recipients. The first
    /// event that cannot be routed is left to [`Handler::handle`] (which dead-letters it).
    fn handle_batch<'a>(
        &'a self,
        events: &'a [Event],
    ) -> Pin<Box<dyn Future<Output = usize> + Send + 'a>> {
        let span = tracing::info_span!("fanout", messaging.batch.message_count = events.len());
        let handled = async move {
            let received = Instant::now();
            let mut routed = Vec::with_capacity(events.len());
            for event in events {
                match route(&self.hub, &event.envelope) {
                    Ok(found) => routed.push((event, found)),
                    Err(_) => break,
                }
            }
            let routed_count = routed.len();
            let routed: Vec<(&Event, Routed)> = routed
                .into_iter()
                .filter_map(|(event, found)| Some((event, found?)))
                .collect();
            let items: Vec<_> = routed
                .iter()
                .map(|(event, _)| move || Item::Event(forwarded(&event.envelope)))
                .collect();
            let spreads: Vec<Spread<'_>> = routed
                .iter()
                .zip(&items)
                .map(|((_, found), item)| Spread {
                    recipients: &found.recipients,
                    push: &found.push,
                    item,
                })
                .collect();
            spread_all(&self.hub, &self.cluster, &spreads, received).await;
            routed_count
        };
        Box::pin(handled.instrument(span))
    }
}

/// `envelope` as forwarded to another replica: with the current span's trace context (the
/// fan-out's) in place of the producer's, so the receiving replica's work continues the fan-out.
fn forwarded(envelope: &Envelope) -> Envelope {
    let mut envelope = envelope.clone();
    let traceparent = propagation::current_traceparent();
    if !traceparent.is_empty() {
        envelope.traceparent = traceparent;
    }
    envelope
}

/// Tries to claim this replica's users when a subscription comes back, before they resync.
const CLAIM_ATTEMPTS: u32 = 5;

/// Receives this replica's forwards until `shutdown`, resubscribing after Redis trouble.
///
/// Whenever a subscription becomes active, every session is told to resync: anything forwarded
/// while there was none was missed live, and the sessions fetch it from history.
pub(crate) async fn forwarding(
    hub: Arc<Hub>,
    cluster: Cluster,
    subscribed: Arc<std::sync::atomic::AtomicBool>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let channel = cluster.channel(cluster.replica());
    let mut attempt = 0u32;
    loop {
        let attempted = tokio::time::timeout(Duration::from_secs(2), async {
            let mut pubsub = cluster.client().get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            pubsub.subscribe(cluster.everyone_channel()).await?;
            Ok::<_, redis::RedisError>(pubsub)
        })
        .await;
        let pubsub = match attempted {
            Ok(Ok(pubsub)) => pubsub,
            Ok(Err(_)) | Err(_) => {
                attempt += 1;
                if attempt == 1 {
                    tracing::warn!("cannot subscribe to the forwarding channel; retrying");
                }
                let wait = Duration::from_millis(100 * 2u64.pow(attempt.min(5)))
                    .min(Duration::from_secs(2));
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    () = tokio::time::sleep(wait) => continue,
                }
            }
        };
        attempt = 0;
        subscribed.store(true, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(channel = %channel, "forwarding channel subscribed");
        // Claim every user here before they resync: a Redis that came back empty lost their
        // routes, and until the next heartbeat the other replicas would forward nothing to them,
        // so a message sent just after the resync would be missed with nothing to repair it.
        // The command connection may still be reconnecting (or its breaker open), so this tries
        // for a few seconds; if the claims still fail, the heartbeat makes them and has the users
        // resync again.
        let users = hub.users();
        let mut claimed = false;
        for attempt in 0..CLAIM_ATTEMPTS {
            if cluster.heartbeat(&users).await.is_ok() {
                claimed = true;
                break;
            }
            let wait = Duration::from_millis(250 << attempt).min(Duration::from_secs(2));
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(wait) => {}
            }
        }
        if !claimed {
            for user in users {
                hub.mark_unrouted(user);
            }
        }
        ::metrics::counter!(metrics::RESYNCS).increment(1);
        hub.broadcast(&Push::Resync);

        let (mut sink, mut stream) = pubsub.split();
        let mut ping = tokio::time::interval(Duration::from_secs(3));
        ping.reset();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                message = stream.next() => {
                    let Some(message) = message else { break };
                    // Forwards published together arrive together; delivered together, each
                    // session writes them at once.
                    let mut messages = vec![message];
                    let mut ended = false;
                    while messages.len() < RECEIVE_BATCH {
                        match stream.next().now_or_never() {
                            Some(Some(message)) => messages.push(message),
                            Some(None) => {
                                ended = true;
                                break;
                            }
                            None => break,
                        }
                    }
                    receive(&hub, cluster.replica(), messages.iter().map(|m| m.get_payload_bytes()));
                    if ended {
                        break;
                    }
                }
                _ = ping.tick() => {
                    // A dead connection may not say so: a ping that goes unanswered ends it.
                    // (In subscribed mode the answer is `["pong", ""]`, not `PONG`: any answer will do.)
                    let pong = tokio::time::timeout(Duration::from_secs(2), sink.ping::<redis::Value>()).await;
                    if !matches!(pong, Ok(Ok(_))) {
                        break;
                    }
                }
            }
        }
        tracing::warn!(channel = %channel, "lost the forwarding channel; sessions will resync once it is back");
    }
}

/// Forwards taken off the channel together, at most.
const RECEIVE_BATCH: usize = 256;

/// Hands what `payloads` forward to this replica's sessions, in order.
fn receive<'a>(hub: &Hub, replica: &str, payloads: impl IntoIterator<Item = &'a [u8]>) {
    let received = Instant::now();
    let mut pending: Vec<(Vec<Uuid>, Push)> = Vec::new();
    for payload in payloads {
        match decode_forward(hub, replica, payload) {
            Some(Received::Push(users, push)) => pending.push((users, push)),
            Some(Received::Resync) => {
                // What came before it first, then every session catches up.
                deliver_locally(hub, pending.iter().map(|(u, p)| (&u[..], p)), received);
                pending.clear();
                hub.broadcast(&Push::Resync);
            }
            None => {}
        }
    }
    deliver_locally(hub, pending.iter().map(|(u, p)| (&u[..], p)), received);
}

enum Received {
    Push(Vec<Uuid>, Push),
    Resync,
}

fn decode_forward(hub: &Hub, replica: &str, payload: &[u8]) -> Option<Received> {
    ::metrics::counter!(metrics::FORWARDS_RECEIVED).increment(1);
    let forward = match Forward::decode(payload) {
        Ok(forward) => forward,
        Err(error) => {
            tracing::warn!(%error, "ignoring an undecodable forward");
            return None;
        }
    };
    let users: Vec<Uuid> = forward
        .user_ids
        .iter()
        .filter_map(|u| u.parse().ok())
        .collect();
    let push = match forward.item {
        Some(Item::Event(envelope)) => {
            // The forwarding replica's fan-out, continued here (the pushes carry it to the
            // sockets).
            let span = tracing::info_span!(parent: None, "forward", otel.kind = "consumer");
            propagation::adopt_traceparent(&span, &envelope.traceparent);
            match span.in_scope(|| route(hub, &envelope)) {
                Ok(Some(routed)) => routed.push,
                Ok(None) => return None,
                Err(reason) => {
                    tracing::warn!(reason, "ignoring a forwarded event");
                    return None;
                }
            }
        }
        Some(Item::Typing(t)) => {
            Push::Frame(protocol::typing(&t.conversation_id, &t.user_id), "typing")
        }
        Some(Item::Presence(p)) => {
            Push::Frame(protocol::presence(&p.user_id, p.online), "presence")
        }
        Some(Item::Resync(resync)) => {
            if resync.from_replica == replica {
                return None; // its own sessions got everything it consumed
            }
            // The sender skipped forwards to this replica: every session catches up.
            tracing::info!("another replica skipped forwards to this one; resyncing every session");
            ::metrics::counter!(metrics::RESYNCS).increment(1);
            return Some(Received::Resync);
        }
        None => return None,
    };
    Some(Received::Push(users, push))
}
