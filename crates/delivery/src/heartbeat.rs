//! The replica's heartbeat: it renews its claims in Redis, repairs what a Redis outage skipped,
//! and sweeps up after replicas that died (their users offline, their partitions moved).

use std::{sync::Arc, time::Duration};

use futures::StreamExt as _;
use realchat_proto::messaging::v1::ListConversationsRequest;
use realchat_runtime::clients::MessagingClient;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    hub, metrics,
    session::{self, Shared},
};

/// How long after finding a replica dead (its claims expired) the consumer group is asked to
/// rebalance. The dead replica has been silent since at least its last renewal, one heartbeat
/// before its claims' `ttl` ran out: so it has already been silent for `ttl - heartbeat`, and
/// only what is left of the broker's session timeout (and a margin) needs waiting. Every second
/// here is a second its partitions' messages wait: in a soak, waiting a whole session timeout
/// after the sweep made a killed replica's conversations wait about 30 s.
fn rejoin_delay(ttl: Duration, heartbeat: Duration) -> Duration {
    let silent = ttl.saturating_sub(heartbeat);
    (realchat_events::kafka::CONSUMER_SESSION_TIMEOUT + Duration::from_secs(2))
        .saturating_sub(silent)
}

/// Users gone offline with a dead replica whose contacts are looked up and told at once, at most.
const OFFLINE_ANNOUNCEMENTS_AT_ONCE: usize = 8;

/// Renews this replica's claims, and sweeps up after replicas that died.
pub(crate) async fn heartbeat(
    shared: Arc<Shared>,
    every: Duration,
    rejoin: Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut claimed = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        // Taken before the claims are renewed, so each of them is among the users renewed.
        let unrouted = shared.hub.take_unrouted();
        let users = shared.hub.users();
        if shared.cluster.heartbeat(&users).await.is_err() {
            // Claims that may expire before the next heartbeat gets through leave every user
            // here unrouted meanwhile: the other replicas find no route and forward nothing to
            // them. So all of them resync once they are claimed again.
            let lapsing = claimed.elapsed() + every >= shared.cluster.ttl();
            let missed = if lapsing { users } else { unrouted };
            for user in missed {
                shared.hub.mark_unrouted(user);
            }
            continue;
        }
        claimed = tokio::time::Instant::now();
        // Routed again: what was forwarded while they were not may have missed them.
        shared.hub.deliver(&unrouted, &hub::Push::Resync);
        // Redis answers again: the replicas this one could not forward to catch up.
        if let Ok(told) = shared.cluster.repair_skipped_forwards().await
            && told > 0
        {
            tracing::info!(
                replicas = told,
                "told the other replicas to resync after skipped forwards"
            );
        }
        let Ok(swept) = shared.cluster.sweep().await else {
            continue;
        };
        ::metrics::counter!(metrics::PRESENCE_SWEEPS).increment(1);
        ::metrics::counter!(metrics::PRESENCE_SWEPT_USERS).increment(swept.offline.len() as u64);
        if swept.found_dead {
            // Make sure the dead replica's partitions move. A broker drops a member that went
            // silent for the session timeout, but only rebalances when a live member asks: so,
            // once the timeout has certainly passed, this replica asks by rejoining. (Asking
            // sooner would have the dead member assigned partitions again.)
            let rejoin = Arc::clone(&rejoin);
            let wait = rejoin_delay(shared.cluster.ttl(), every);
            let shutdown = shutdown.clone();
            let scheduled = shared.background.spawn(async move {
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = tokio::time::sleep(wait) => {
                        tracing::info!("a delivery replica died; rebalancing the consumer group");
                        rejoin.notify_one();
                    }
                }
            });
            if !scheduled {
                tracing::warn!("a delivery replica died but its rebalance could not be scheduled");
            }
        }
        if !swept.offline.is_empty() {
            // Those who went offline with a dead replica, told to their contacts a few at a
            // time: a dead replica may have held thousands of users.
            let (users, announcer) = (swept.offline.len(), Arc::clone(&shared));
            let scheduled = shared.background.spawn(async move {
                futures::stream::iter(swept.offline)
                    .for_each_concurrent(OFFLINE_ANNOUNCEMENTS_AT_ONCE, |user| {
                        let shared = Arc::clone(&announcer);
                        async move {
                            let most = shared.options.presence_max_members;
                            let contacts = contacts_of(&shared.messaging, user, most).await;
                            session::announce(&shared, user, false, contacts).await;
                        }
                    })
                    .await;
            });
            if !scheduled {
                tracing::warn!(users, "cannot announce the swept users offline now");
            }
        }
    }
    // Leaving lets the others know at once; the sessions release their users as they close.
    let _ = shared.cluster.leave().await;
    Ok(())
}

/// Everyone who shares a conversation of at most `most` members with `user`, asked of messaging.
async fn contacts_of(messaging: &MessagingClient, user: Uuid, most: usize) -> Vec<Uuid> {
    let mut messaging = messaging.clone();
    let Ok(response) = messaging
        .list_conversations(ListConversationsRequest {
            caller_id: user.to_string(),
        })
        .await
    else {
        return Vec::new();
    };
    let mut contacts: Vec<Uuid> = response
        .into_inner()
        .conversations
        .into_iter()
        .filter_map(|s| s.conversation)
        .filter(|c| c.member_ids.len() <= most)
        .flat_map(|c| c.member_ids)
        .filter_map(|m| m.parse().ok())
        .filter(|m| *m != user)
        .collect();
    contacts.sort_unstable();
    contacts.dedup();
    contacts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rebalance_waits_only_for_what_is_left_of_the_session_timeout() {
        // Defaults: claims last three 5 s heartbeats, so a replica found dead has been silent
        // for 10 s already; the broker's 10 s session timeout and a 2 s margin leave 2 s.
        assert_eq!(
            rejoin_delay(Duration::from_secs(15), Duration::from_secs(5)),
            Duration::from_secs(2)
        );
        // Short claims (tests use 1 s heartbeats) leave most of the timeout to wait.
        assert_eq!(
            rejoin_delay(Duration::from_secs(3), Duration::from_secs(1)),
            Duration::from_secs(10)
        );
        // Claims far longer than the timeout: no wait at all.
        assert_eq!(
            rejoin_delay(Duration::from_secs(60), Duration::from_secs(5)),
            Duration::ZERO
        );
    }
}
