//! Group commit of one instance's posts.
//!
//! Every post on PostgreSQL is a transaction whose commit waits for a WAL
//! flush, and on a busy server most of a post's cost is that statement and
//! that commit rather than its row. So the posts an instance receives at the
//! same moment are written together: [`GroupCommit::append`] queues a post,
//! a single task gathers what is queued into a batch, and one call of
//! `beeline_append_batch` (migration 3) writes the batch in one statement
//! and one transaction. Each post is answered only once that transaction
//! has committed. The same statement announces the batch's posts to the
//! other instances (`pg_notify`, delivered by PostgreSQL at the commit and
//! only then), so announcing costs no transaction of its own. (PostgreSQL
//! commits announcing transactions one at a time, holding its notification
//! lock through the WAL flush; a separate announcing transaction per batch
//! took that lock as often, and a flush of its own besides.)
//!
//! One batch is written at a time ([`BATCHES_IN_FLIGHT`]); posts arriving
//! meanwhile wait in the queue and join the next batch, so batches grow
//! with the load and a lone post is written at once. Most of a batch's cost
//! in PostgreSQL is per statement (executor start-up, planning, commit),
//! not per row: with two batches in flight each was half as large, and the
//! bench's three instances posted about a fifth less per second.
//!
//! A batch the database refuses as a whole for anything but a lost
//! connection (a value it will not store, say) is written again one post at
//! a time, so that one bad post fails alone.

use std::{sync::Arc, time::Duration};

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::{classify, pooled, WAKE_CHANNEL};
use crate::store::{to_sql_int, Access, NewMessage, Side, StoreError};

/// Most batches one instance writes at once. Each holds a connection of
/// its own while it is written.
pub(super) const BATCHES_IN_FLIGHT: usize = 1;

/// Most posts in one batch.
const MAX_BATCH: usize = 256;

/// Posts waiting for a batch before [`GroupCommit::append`] waits for room.
const QUEUE: usize = 4096;

/// The statement that writes a batch; its rows answer the posts in order.
///
/// It also announces the accepted posts on the wake channel (`$12`): one
/// line `instance|side|session|home` per post (`$11` is this instance),
/// lines joined into payloads under PostgreSQL's 8,000-byte limit. A
/// payload takes the lines whose running length stays within one multiple
/// of 7,000 bytes, so it is shorter than 7,000 bytes plus one line, and no
/// line over 900 bytes is announced (home names have at most 64 characters
/// and session ids are ours, so none is that long; if one were, waiters on
/// other instances would find its post at the end of their hold).
const APPEND_BATCH: &str = "WITH appended AS (
     SELECT b.r_status, b.r_seq, b.r_home, b.n
     FROM beeline_append_batch(
         $1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
         $6::text[], $7::text[], $8::bigint[], $9::integer[], $10::bigint[])
         WITH ORDINALITY AS b(r_status, r_seq, r_home, n)
 ), line AS (
     SELECT a.n, $11::text || '|' || p.side || '|' || p.session_id || '|' || a.r_home AS text
     FROM appended a
     JOIN unnest($1::text[], $2::text[]) WITH ORDINALITY AS p(session_id, side, n) ON p.n = a.n
     WHERE a.r_status = 'ok'
 ), chunked AS (
     SELECT n, text, sum(octet_length(text) + 1) OVER (ORDER BY n) / 7000 AS chunk
     FROM line WHERE octet_length(text) <= 900
 ), announced AS (
     SELECT count(pg_notify($12::text, payload)) AS payloads
     FROM (SELECT string_agg(text, E'\\n' ORDER BY n) AS payload FROM chunked GROUP BY chunk) c
 )
 SELECT a.r_status, a.r_seq, a.r_home FROM appended a, announced ORDER BY a.n";

/// What a post comes to: its sequence number and its session's home.
pub(super) type Appended = Result<(u64, String), StoreError>;

/// One queued post, owned so that it can wait for its batch.
struct Post {
    session_id: String,
    side: Side,
    kind: &'static str,
    sdp: Option<String>,
    candidate_json: Option<String>,
    owner: Option<String>,
    home: Option<String>,
    live_since: i64,
    max: i32,
    now: i64,
    answer: oneshot::Sender<Appended>,
}

/// The queue of one instance's posts and the task that writes them.
#[derive(Debug)]
pub(super) struct GroupCommit {
    queue: mpsc::Sender<Post>,
}

impl GroupCommit {
    /// Starts the writing task, which ends when this is dropped. Each batch
    /// may take `timeout` from taking a connection to its commit.
    pub(super) fn start(pool: Pool, timeout: Duration, instance: Arc<str>) -> Self {
        let (queue, posts) = mpsc::channel(QUEUE);
        tokio::spawn(gather(pool, posts, timeout, instance));
        Self { queue }
    }

    /// Queues a post and waits until the batch holding it has committed.
    pub(super) async fn append(
        &self,
        msg: &NewMessage<'_>,
        access: Access<'_>,
        live_since_ms: u64,
        max_messages: u32,
        now_ms: u64,
    ) -> Appended {
        let (owner, home) = match access {
            Access::Owner(owner) => (Some(owner.to_owned()), None),
            Access::Home(home) => (None, Some(home.to_owned())),
        };
        let (answer, answered) = oneshot::channel();
        let post = Post {
            session_id: msg.session_id.to_owned(),
            side: msg.side,
            kind: msg.kind.as_str(),
            sdp: msg.sdp.map(str::to_owned),
            candidate_json: msg.candidate_json.map(str::to_owned),
            owner,
            home,
            live_since: to_sql_int(live_since_ms),
            max: i32::try_from(max_messages).unwrap_or(i32::MAX),
            now: to_sql_int(now_ms),
            answer,
        };
        let stopped = || StoreError::Unavailable("the store is shutting down".into());
        self.queue.send(post).await.map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

/// Takes what is queued into batches, one batch per free slot, until the
/// queue closes.
async fn gather(
    pool: Pool,
    mut posts: mpsc::Receiver<Post>,
    timeout: Duration,
    instance: Arc<str>,
) {
    let slots = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT));
    loop {
        // A slot first: while every slot is busy, posts pile up in the
        // queue and leave together.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = posts.recv().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match posts.try_recv() {
                Ok(post) => batch.push(post),
                Err(_) => break,
            }
        }
        // A post whose caller stopped waiting (its time ran out, or its
        // client left) was not acknowledged and is not written.
        batch.retain(|post| !post.answer.is_closed());
        if batch.is_empty() {
            continue;
        }
        let pool = pool.clone();
        let instance = instance.clone();
        tokio::spawn(async move {
            commit(&pool, &instance, batch, timeout).await;
            drop(slot);
        });
    }
}

/// Writes `batch` and answers each post; a batch refused as a whole is
/// written again post by post.
async fn commit(pool: &Pool, instance: &str, batch: Vec<Post>, timeout: Duration) {
    let outcome = write(pool, instance, &batch, timeout).await;
    match outcome {
        Ok(results) => answer(batch, results),
        Err(StoreError::Unavailable(error)) => {
            // Nothing of the batch was committed, or its commit was not
            // confirmed: no post of it is acknowledged.
            let error: Arc<dyn std::error::Error + Send + Sync> = Arc::from(error);
            for post in batch {
                let _ = post
                    .answer
                    .send(Err(StoreError::Unavailable(Box::new(error.clone()))));
            }
        }
        Err(error) if batch.len() == 1 => {
            if let Some(post) = batch.into_iter().next() {
                let _ = post.answer.send(Err(error));
            }
        }
        Err(error) => {
            tracing::debug!(error = %error, posts = batch.len(), "a batch of posts was refused; writing them one at a time");
            for post in batch {
                let single = [post];
                let outcome = write(pool, instance, &single, timeout).await;
                let [post] = single;
                match outcome {
                    Ok(results) => answer(vec![post], results),
                    Err(error) => {
                        let _ = post.answer.send(Err(error));
                    }
                }
            }
        }
    }
}

fn answer(batch: Vec<Post>, results: Vec<Appended>) {
    for (post, result) in batch.into_iter().zip(results) {
        let _ = post.answer.send(result);
    }
}

/// One call of `beeline_append_batch`: one round trip, one transaction.
/// Returns each post's outcome, in order.
async fn write(
    pool: &Pool,
    instance: &str,
    batch: &[Post],
    timeout: Duration,
) -> Result<Vec<Appended>, StoreError> {
    let work = async {
        let client = pooled(pool).await?;
        let statement = client
            .prepare_cached(APPEND_BATCH)
            .await
            .map_err(classify)?;
        let column = |field: fn(&Post) -> Option<&str>| -> Vec<Option<&str>> {
            batch.iter().map(field).collect()
        };
        let sessions: Vec<&str> = batch.iter().map(|p| p.session_id.as_str()).collect();
        let sides: Vec<&str> = batch.iter().map(|p| p.side.as_str()).collect();
        let kinds: Vec<&str> = batch.iter().map(|p| p.kind).collect();
        let sdps = column(|p| p.sdp.as_deref());
        let candidates = column(|p| p.candidate_json.as_deref());
        let owners = column(|p| p.owner.as_deref());
        let homes = column(|p| p.home.as_deref());
        let live_since: Vec<i64> = batch.iter().map(|p| p.live_since).collect();
        let max: Vec<i32> = batch.iter().map(|p| p.max).collect();
        let now: Vec<i64> = batch.iter().map(|p| p.now).collect();
        client
            .query(
                &statement,
                &[
                    &sessions,
                    &sides,
                    &kinds,
                    &sdps,
                    &candidates,
                    &owners,
                    &homes,
                    &live_since,
                    &max,
                    &now,
                    &instance,
                    &WAKE_CHANNEL,
                ],
            )
            .await
            .map_err(classify)
    };
    let rows = match tokio::time::timeout(timeout, work).await {
        Ok(rows) => rows?,
        Err(_) => {
            return Err(StoreError::Unavailable(
                format!("no answer within {} s", timeout.as_secs_f32()).into(),
            ))
        }
    };
    if rows.len() != batch.len() {
        return Err(StoreError::Corrupt(format!(
            "{} answers to a batch of {} posts",
            rows.len(),
            batch.len()
        )));
    }
    Ok(batch
        .iter()
        .zip(rows)
        .map(|(post, row)| {
            let status: &str = row.get(0);
            match status {
                "ok" => Ok((
                    u64::try_from(row.get::<_, i64>(1)).unwrap_or_default(),
                    row.get(2),
                )),
                "expired" => Err(StoreError::ExpiredSession),
                "full" => Err(StoreError::SessionFull {
                    limit: u32::try_from(post.max).unwrap_or(u32::MAX),
                }),
                _ => Err(StoreError::UnknownSession),
            }
        })
        .collect())
}
