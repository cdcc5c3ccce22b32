//! In-process wake-ups of held long-polls.
//!
//! A poll subscribes to the [`Topic`] it waits on *before* it reads the
//! store; a post announces its topics *after* its row is committed. So a
//! message committed between a poll's read and its wait still wakes it, and
//! nothing ever polls the database on a timer. Only the polls of the topic
//! are woken, not every waiter.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Instant,
};

use tokio::sync::watch;

use crate::store::Side;

/// What a held poll waits for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Topic {
    /// Messages written by `from` in one session.
    Session { id: Arc<str>, from: Side },
    /// Browser messages of any session addressed to this home.
    Home(Arc<str>),
}

/// The wake-up channels of the topics someone is waiting on.
#[derive(Debug, Default)]
pub(crate) struct Wakeups {
    /// Each value is the instant of the latest announcement, so a woken poll
    /// can tell how long its wake-up took.
    topics: Arc<Mutex<HashMap<Topic, watch::Sender<Option<Instant>>>>>,
}

impl Wakeups {
    fn lock(&self) -> MutexGuard<'_, HashMap<Topic, watch::Sender<Option<Instant>>>> {
        self.topics.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts listening to `topic`; later announcements wake the subscriber.
    pub(crate) fn subscribe(&self, topic: Topic) -> Subscription {
        let receiver = self
            .lock()
            .entry(topic.clone())
            .or_insert_with(|| watch::Sender::new(None))
            .subscribe();
        Subscription {
            topic,
            receiver: Some(receiver),
            topics: self.topics.clone(),
        }
    }

    /// Wakes every subscriber of `topic`, stamped `at`.
    pub(crate) fn announce(&self, topic: &Topic, at: Instant) {
        if let Some(sender) = self.lock().get(topic) {
            sender.send_replace(Some(at));
        }
    }

    /// Wakes every subscriber of every topic (announcements may have been
    /// missed), stamped `at`.
    pub(crate) fn announce_all(&self, at: Instant) {
        for sender in self.lock().values() {
            sender.send_replace(Some(at));
        }
    }

    #[cfg(test)]
    fn topics(&self) -> usize {
        self.lock().len()
    }
}

/// A poll's interest in one topic; unsubscribes when dropped.
#[derive(Debug)]
pub(crate) struct Subscription {
    topic: Topic,
    receiver: Option<watch::Receiver<Option<Instant>>>,
    topics: Arc<Mutex<HashMap<Topic, watch::Sender<Option<Instant>>>>>,
}

impl Subscription {
    /// Resolves at the next announcement after the last one seen, with its
    /// instant.
    pub(crate) async fn announced(&mut self) -> Option<Instant> {
        let receiver = self.receiver.as_mut()?;
        // The sender lives in the map at least as long as this receiver.
        receiver.changed().await.ok()?;
        *receiver.borrow_and_update()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // Drop the receiver first, then remove the topic under the lock if
        // nobody else listens; `subscribe` takes the same lock, so a new
        // subscriber cannot slip in between.
        drop(self.receiver.take());
        let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        if topics
            .get(&self.topic)
            .is_some_and(|sender| sender.receiver_count() == 0)
        {
            topics.remove(&self.topic);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home(name: &str) -> Topic {
        Topic::Home(name.into())
    }

    #[tokio::test]
    async fn announcement_after_subscribe_wakes_and_before_does_not() {
        let wakeups = Wakeups::default();
        wakeups.announce(&home("h"), Instant::now()); // nobody listens: dropped
        let mut sub = wakeups.subscribe(home("h"));
        let at = Instant::now();
        wakeups.announce(&home("other"), at);
        wakeups.announce(&home("h"), at);
        assert_eq!(sub.announced().await, Some(at));
        // Nothing new: still pending.
        let pending =
            tokio::time::timeout(std::time::Duration::from_millis(20), sub.announced()).await;
        assert!(pending.is_err());
    }

    #[test]
    fn topics_are_removed_with_their_last_subscriber() {
        let wakeups = Wakeups::default();
        let a = wakeups.subscribe(home("h"));
        let b = wakeups.subscribe(home("h"));
        assert_eq!(wakeups.topics(), 1);
        drop(a);
        assert_eq!(wakeups.topics(), 1);
        drop(b);
        assert_eq!(wakeups.topics(), 0);
    }
}
