//! Group commit of sends, against a real PostgreSQL: a batch gives every send its own outcome,
//! seqs stay gapless per conversation however sends are batched, concurrent batches never
//! deadlock, and a batch that fails as a whole fails no send that could succeed alone.

#![allow(clippy::unwrap_used)]

use std::{collections::HashMap, time::Duration};

use prost::Message as _;
use realchat_messaging::{
    domain::{Body, ClientMsgId, Kind},
    error::Error,
    sends::Sends,
    store::{self, NewMessage},
};
use realchat_proto::events::v1::{Envelope, envelope::Payload};
use sqlx::PgPool;
use test_support::TestDatabase;
use time::OffsetDateTime;
use uuid::Uuid;

/// A migrated database and a pool on it.
async fn database() -> (TestDatabase, PgPool) {
    let db = TestDatabase::new("messaging");
    realchat_messaging::migrate(db.url()).await.unwrap();
    let pool = PgPool::connect(db.url()).await.unwrap();
    (db, pool)
}

async fn users(pool: &PgPool, n: usize) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for i in 0..n {
        let id = Uuid::now_v7();
        store::remember_user(pool, id, &format!("user{i}"), OffsetDateTime::now_utc())
            .await
            .unwrap();
        ids.push(id);
    }
    ids
}

async fn group(pool: &PgPool, members: &[Uuid]) -> Uuid {
    let (conversation, _) = store::create(pool, members[0], Kind::Group, members, None)
        .await
        .unwrap();
    conversation.row.id
}

fn message(caller: Uuid, conversation: Uuid, client_msg_id: &str) -> NewMessage {
    NewMessage {
        caller,
        conversation,
        client_msg_id: ClientMsgId::parse(client_msg_id.to_owned()).unwrap(),
        body: Body::parse(format!("body of {client_msg_id}")).unwrap(),
        traceparent: String::new(),
    }
}

/// Per conversation, the seqs stored, ascending.
async fn stored_seqs(pool: &PgPool) -> HashMap<Uuid, Vec<i64>> {
    let rows: Vec<(Uuid, i64)> =
        sqlx::query_as("SELECT conversation_id, seq FROM messages ORDER BY conversation_id, seq")
            .fetch_all(pool)
            .await
            .unwrap();
    let mut seqs: HashMap<Uuid, Vec<i64>> = HashMap::new();
    for (conversation, seq) in rows {
        seqs.entry(conversation).or_default().push(seq);
    }
    seqs
}

/// A connection holding `conversation`'s row lock in an open transaction (`COMMIT` releases it):
/// a writer that reaches the conversation waits, and what is queued behind it forms one batch.
async fn hold_lock(db: &TestDatabase, conversation: Uuid) -> sqlx::PgConnection {
    let mut blocker = db.connect().await;
    sqlx::query("BEGIN").execute(&mut blocker).await.unwrap();
    sqlx::query("SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE")
        .bind(conversation)
        .execute(&mut blocker)
        .await
        .unwrap();
    blocker
}

#[tokio::test]
async fn a_batch_answers_each_send_on_its_own_and_writes_one_event_per_new_message_in_seq_order() {
    let (_db, pool) = database().await;
    let [alice, bob, carol] = users(&pool, 3).await[..] else {
        unreachable!()
    };
    let ab = group(&pool, &[alice, bob]).await;
    let bc = group(&pool, &[bob, carol]).await;

    let outcomes = store::send_all(
        &pool,
        &[
            message(alice, ab, "a1"),
            message(bob, bc, "b1"),
            message(bob, ab, "b2"),
            // Carol is not a member of ab: her send alone is refused.
            message(carol, ab, "c1"),
            // A retry inside the same batch finds the original.
            message(alice, ab, "a1"),
        ],
    )
    .await
    .unwrap();

    let summary: Vec<Option<(Uuid, i64, bool)>> = outcomes
        .iter()
        .map(|outcome| {
            outcome
                .as_ref()
                .ok()
                .map(|(row, created)| (row.conversation_id, row.seq, *created))
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            Some((ab, 1, true)),
            Some((bc, 1, true)),
            Some((ab, 2, true)),
            None,
            Some((ab, 1, false)),
        ]
    );
    assert!(matches!(outcomes[3], Err(Error::NotFound)));
    let (first, _) = outcomes[0].as_ref().unwrap();
    let (retry, _) = outcomes[4].as_ref().unwrap();
    assert_eq!(first.id, retry.id, "the retry answers with the original");

    // One event per new message, written in the order the seqs were taken.
    let events: Vec<(String, String)> =
        sqlx::query_as("SELECT key, event_type FROM outbox ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    let created: Vec<String> = events
        .into_iter()
        .filter(|(_, kind)| kind == "message.created")
        .map(|(key, _)| key)
        .collect();
    assert_eq!(
        created,
        vec![ab.to_string(), bc.to_string(), ab.to_string()]
    );
}

#[tokio::test]
async fn a_batch_mixing_stored_retries_and_new_sends_numbers_only_the_new_ones_and_names_every_member()
 {
    let (_db, pool) = database().await;
    let [alice, bob, carol] = users(&pool, 3).await[..] else {
        unreachable!()
    };
    let abc = group(&pool, &[alice, bob, carol]).await;
    let ab = group(&pool, &[alice, bob]).await;
    store::send(&pool, message(alice, abc, "first"))
        .await
        .unwrap();

    let outcomes = store::send_all(
        &pool,
        &[
            message(bob, abc, "b1"),
            // Stored by an earlier transaction: answered with the original, takes no seq.
            message(alice, abc, "first"),
            message(alice, ab, "a1"),
            message(carol, abc, "c1"),
            message(bob, abc, "b2"),
            // The same key from another sender is another message.
            message(carol, abc, "b1"),
        ],
    )
    .await
    .unwrap();
    let summary: Vec<(Uuid, i64, bool)> = outcomes
        .iter()
        .map(|outcome| {
            let (row, created) = outcome.as_ref().unwrap();
            (row.conversation_id, row.seq, *created)
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (abc, 2, true),
            (abc, 1, false),
            (ab, 1, true),
            (abc, 3, true),
            (abc, 4, true),
            (abc, 5, true),
        ]
    );
    let (first, _) = outcomes[1].as_ref().unwrap();
    assert_eq!(
        first.body, "body of first",
        "the retry answers with the original"
    );

    let last_seq: i64 = sqlx::query_scalar("SELECT last_seq FROM conversations WHERE id = $1")
        .bind(abc)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(last_seq, 5);
    // Each sender has read up to their newest message.
    let read: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT user_id, read_seq FROM members WHERE conversation_id = $1 ORDER BY user_id",
    )
    .bind(abc)
    .fetch_all(&pool)
    .await
    .unwrap();
    let read: HashMap<Uuid, i64> = read.into_iter().collect();
    assert_eq!(read, HashMap::from([(alice, 1), (bob, 4), (carol, 5)]));

    // Every new message's event names its conversation's members, not another's.
    let payloads: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT payload FROM outbox WHERE event_type = 'message.created' ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let events: Vec<(String, i64, Vec<String>)> = payloads
        .iter()
        .map(
            |payload| match Envelope::decode(payload.as_slice()).unwrap().payload {
                Some(Payload::MessageCreated(created)) => {
                    (created.conversation_id, created.seq, created.member_ids)
                }
                other => panic!("not a message.created: {other:?}"),
            },
        )
        .collect();
    let names = |members: &[Uuid]| {
        let mut ids: Vec<String> = members.iter().map(Uuid::to_string).collect();
        ids.sort();
        ids
    };
    let (everyone, pair) = (names(&[alice, bob, carol]), names(&[alice, bob]));
    assert_eq!(
        events,
        vec![
            (abc.to_string(), 1, everyone.clone()),
            (abc.to_string(), 2, everyone.clone()),
            (ab.to_string(), 1, pair),
            (abc.to_string(), 3, everyone.clone()),
            (abc.to_string(), 4, everyone.clone()),
            (abc.to_string(), 5, everyone),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_sends_are_committed_together_with_gapless_seqs_and_no_deadlock() {
    let (_db, pool) = database().await;
    let people = users(&pool, 6).await;
    // Three conversations that overlap in members, so batches lock them in every combination.
    let conversations = [
        group(&pool, &people[0..4]).await,
        group(&pool, &people[2..6]).await,
        group(&pool, &people).await,
    ];
    let (sends, writers) = Sends::new(pool.clone(), 4);
    let writers: Vec<_> = writers.into_iter().map(tokio::spawn).collect();

    let mut tasks = Vec::new();
    for i in 0..600 {
        let conversation = conversations[i % 3];
        let sender = match i % 3 {
            0 => people[i % 4],
            1 => people[2 + i % 4],
            _ => people[i % 6],
        };
        let sends = sends.clone();
        tasks.push(tokio::spawn(async move {
            sends
                .send(message(sender, conversation, &format!("m{i}")))
                .await
        }));
    }
    for task in tasks {
        let (_, created) = task.await.unwrap().unwrap();
        assert!(created);
    }
    drop(sends);
    for writer in writers {
        tokio::time::timeout(Duration::from_secs(5), writer)
            .await
            .expect("writers stop once the queue is dropped")
            .unwrap()
            .unwrap();
    }

    let seqs = stored_seqs(&pool).await;
    for conversation in conversations {
        assert_eq!(seqs[&conversation], (1..=200).collect::<Vec<i64>>());
    }
    // Rows written by one transaction share its id: fewer transactions than messages means sends
    // were committed together.
    let transactions: i64 = sqlx::query_scalar("SELECT count(DISTINCT xmin::text) FROM messages")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(
        transactions < 600,
        "600 concurrent sends took {transactions} transactions"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_fails_as_a_whole_is_retried_one_send_at_a_time() {
    let (db, pool) = database().await;
    let people = users(&pool, 2).await;
    let conversation = group(&pool, &people).await;
    let [first_sender, sender] = people[..] else {
        unreachable!()
    };
    // A body the database refuses, standing in for any error that aborts a transaction.
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.body = 'body of poison' THEN RAISE EXCEPTION 'poison'; END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER refuse_poison BEFORE INSERT ON messages
             FOR EACH ROW EXECUTE FUNCTION refuse_poison();",
    )
    .execute(&pool)
    .await
    .unwrap();
    let (sends, writers) = Sends::new(pool.clone(), 1);
    let writers: Vec<_> = writers.into_iter().map(tokio::spawn).collect();

    // Hold the conversation's lock so that the one writer is stuck on a first send while the
    // others queue up behind it; they then form one batch.
    let mut blocker = hold_lock(&db, conversation).await;
    let first = {
        let sends = sends.clone();
        tokio::spawn(async move {
            sends
                .send(message(first_sender, conversation, "first"))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut queued = Vec::new();
    for name in ["q1", "q2", "poison", "q3", "q4"] {
        let sends = sends.clone();
        queued.push((
            name,
            tokio::spawn(async move { sends.send(message(sender, conversation, name)).await }),
        ));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sqlx::query("COMMIT").execute(&mut blocker).await.unwrap();

    assert_eq!(first.await.unwrap().unwrap().0.seq, 1);
    let mut seqs = Vec::new();
    for (name, task) in queued {
        match (name, task.await.unwrap()) {
            ("poison", Err(Error::Internal(_))) => {}
            ("poison", other) => panic!("the poison send must fail, got {other:?}"),
            (_, Ok((row, true))) => seqs.push(row.seq),
            (name, other) => panic!("{name} must be stored, got {other:?}"),
        }
    }
    assert_eq!(
        seqs,
        vec![2, 3, 4, 5],
        "the good sends, in order, without a gap"
    );
    assert_eq!(stored_seqs(&pool).await[&conversation], vec![1, 2, 3, 4, 5]);
    drop(sends);
    for writer in writers {
        writer.await.unwrap().unwrap();
    }
}

/// The sessions of `db` waiting for a lock (the writer's), ended when `end` (as a database restart
/// would end them); returns how many there were.
async fn waiting_sessions(db: &TestDatabase, end: bool) -> usize {
    let mut admin = db.connect().await;
    let pids: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity
         WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    if end {
        for pid in &pids {
            sqlx::query("SELECT pg_terminate_backend($1)")
                .bind(pid)
                .execute(&mut admin)
                .await
                .unwrap();
        }
    }
    pids.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_database_goes_away_every_send_of_a_batch_is_unavailable_at_once() {
    let (db, pool) = database().await;
    let people = users(&pool, 2).await;
    let conversation = group(&pool, &people).await;
    let (sends, writers) = Sends::new(pool.clone(), 1);
    let writers: Vec<_> = writers.into_iter().map(tokio::spawn).collect();

    // The one writer waits on the conversation's lock with a first send while five queue up.
    let mut blocker = hold_lock(&db, conversation).await;
    let send = |name: String| {
        let sends = sends.clone();
        let sender = people[1];
        tokio::spawn(async move { sends.send(message(sender, conversation, &name)).await })
    };
    let first = send("first".into());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let queued: Vec<_> = (0..5).map(|i| send(format!("q{i}"))).collect();
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Its connection dies: the first send fails; the five then form a batch that waits on the
    // lock too, and its connection dies as well.
    assert_eq!(waiting_sessions(&db, true).await, 1);
    assert!(matches!(first.await.unwrap(), Err(Error::Unavailable(_))));
    let database = &db;
    test_support::eventually(
        "the batch to wait on the lock",
        Duration::from_secs(5),
        || async move { (waiting_sessions(database, false).await == 1).then_some(()) },
    )
    .await;
    assert_eq!(waiting_sessions(&db, true).await, 1);

    // All five answer now, while the lock is still held: none was retried on its own (a retry
    // would wait on the lock again).
    for task in queued {
        let outcome = tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("every send of the batch answers at once")
            .unwrap();
        assert!(matches!(outcome, Err(Error::Unavailable(_))), "{outcome:?}");
    }
    sqlx::query("COMMIT").execute(&mut blocker).await.unwrap();
    assert!(stored_seqs(&pool).await.is_empty(), "nothing was stored");
    drop(sends);
    for writer in writers {
        writer.await.unwrap().unwrap();
    }
}
