//! Abuse limits: request rates per key, and concurrent long-polls per key.
//!
//! Both are plain data under a mutex, driven with an explicit clock so tests
//! need no sleeps.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

/// Limits enforced by a [`SignalServer`](crate::SignalServer). A value of 0
/// turns that limit off.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Limits {
    /// Largest request body on the signaling endpoints (413 above it).
    pub max_body_bytes: usize,
    /// Largest SDP in an offer or answer (413 above it).
    pub max_sdp_bytes: usize,
    /// Messages one session may hold, both sides together (429 above it).
    pub max_messages_per_session: u32,
    /// Largest ICE candidate in a candidate message, as JSON (413 above
    /// it); a browser's are a few hundred bytes.
    pub max_candidate_bytes: usize,
    /// Messages one side of one session may post per minute (429 with
    /// `Retry-After`), so a flood is slowed long before the session's
    /// message cap and cannot crowd other sessions' offers.
    pub posts_per_session_per_minute: u32,
    /// Messages one browser identity (a user, or an anonymous client's
    /// address) may post per minute across all its sessions (429 with
    /// `Retry-After`), so opening more sessions buys no more flood.
    pub posts_per_identity_per_minute: u32,
    /// Sessions one identity may create per minute (429 with `Retry-After`).
    pub sessions_per_identity_per_minute: u32,
    /// Sessions one client address may create per minute (429 with
    /// `Retry-After`). Also bounds outcome reports per address.
    pub sessions_per_ip_per_minute: u32,
    /// Sessions one browser user may have live at once (created within the
    /// session lifetime; 429 with `Retry-After` until the oldest expires).
    pub max_live_sessions_per_identity: u32,
    /// Sessions one client address (IPv6 by /64) may have live at once.
    pub max_live_sessions_per_ip: u32,
    /// Long-polls one identity (a browser user or a home) may hold at once
    /// (429 with `Retry-After`).
    pub max_polls_per_identity: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: crate::MAX_BODY_BYTES,
            max_sdp_bytes: 32 * 1024,
            max_messages_per_session: 200,
            max_candidate_bytes: 2048,
            posts_per_session_per_minute: 120,
            posts_per_identity_per_minute: 1200,
            sessions_per_identity_per_minute: 20,
            sessions_per_ip_per_minute: 60,
            max_live_sessions_per_identity: 40,
            max_live_sessions_per_ip: 120,
            max_polls_per_identity: 16,
        }
    }
}

/// Most keys a limiter tracks. At the cap it forgets the idle keys; if that
/// frees too little, it evicts the tenth of the keys it heard from least
/// recently, in the same pass, so a flood of new keys costs one scan per
/// ten thousand keys rather than one per key, and memory stays bounded.
const MAX_TRACKED_KEYS: usize = 100_000;

/// The key a client address is limited under: an IPv4 address as it is,
/// an IPv6 address by its /64 (one customer's usual allocation, within
/// which rotating addresses is free). IPv4-mapped IPv6 counts as IPv4.
pub(crate) fn address_key(ip: std::net::IpAddr) -> String {
    match ip.to_canonical() {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

/// Sessions per key created within the last `window` (a session's
/// lifetime), at most `cap` of them: a bound on the peer connections one
/// user or address can make the home run, which a rate alone is not.
#[derive(Debug)]
pub(crate) struct LiveSessions {
    cap: u32,
    window: Duration,
    keys: Mutex<HashMap<String, std::collections::VecDeque<Instant>>>,
}

impl LiveSessions {
    pub(crate) fn new(cap: u32, window: Duration) -> Self {
        Self {
            cap,
            window,
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a new session for `key`, or says how long until its oldest
    /// live session expires.
    pub(crate) fn admit(&self, key: &str, now: Instant) -> Result<(), Duration> {
        if self.cap == 0 {
            return Ok(());
        }
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if keys.len() >= MAX_TRACKED_KEYS && !keys.contains_key(key) {
            self.prune(&mut keys, now);
            if keys.len() >= MAX_TRACKED_KEYS * 9 / 10 {
                // The tenth whose newest session is oldest.
                let mut newest: Vec<(Instant, String)> = keys
                    .iter()
                    .filter_map(|(k, q)| q.back().map(|t| (*t, k.clone())))
                    .collect();
                newest.sort_unstable();
                for (_, k) in newest.into_iter().take(MAX_TRACKED_KEYS / 10) {
                    keys.remove(&k);
                }
            }
        }
        let times = keys.entry(key.to_owned()).or_default();
        while times
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= self.window)
        {
            times.pop_front();
        }
        if times.len() >= self.cap as usize {
            let oldest = *times.front().expect("at the cap, so not empty");
            return Err((oldest + self.window).saturating_duration_since(now));
        }
        times.push_back(now);
        Ok(())
    }

    /// Forgets sessions past their lifetime, and keys with none left.
    pub(crate) fn sweep(&self, now: Instant) {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        self.prune(&mut keys, now);
    }

    fn prune(&self, keys: &mut HashMap<String, std::collections::VecDeque<Instant>>, now: Instant) {
        keys.retain(|_, times| {
            while times
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) >= self.window)
            {
                times.pop_front();
            }
            !times.is_empty()
        });
    }
}

/// A token bucket per key: `per_minute` requests in a burst, refilled evenly
/// over a minute.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    pub(crate) fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Bucket>> {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn refill_per_sec(&self) -> f64 {
        f64::from(self.per_minute) / 60.0
    }

    fn refilled(&self, bucket: Bucket, now: Instant) -> Bucket {
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        Bucket {
            tokens: (bucket.tokens + elapsed * self.refill_per_sec())
                .min(f64::from(self.per_minute)),
            updated: now,
        }
    }

    /// Takes one request's worth for `key`, or says how long until one is
    /// available.
    pub(crate) fn acquire(&self, key: &str, now: Instant) -> Result<(), Duration> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let mut buckets = self.lock();
        if buckets.len() >= MAX_TRACKED_KEYS && !buckets.contains_key(key) {
            self.forget_idle(&mut buckets, now);
            if buckets.len() >= MAX_TRACKED_KEYS * 9 / 10 {
                evict_stalest(&mut buckets, MAX_TRACKED_KEYS / 10);
            }
        }
        let full = Bucket {
            tokens: f64::from(self.per_minute),
            updated: now,
        };
        let bucket = buckets.entry(key.to_owned()).or_insert(full);
        *bucket = self.refilled(*bucket, now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / self.refill_per_sec();
            Err(Duration::from_secs_f64(wait))
        }
    }

    /// Gives back what [`acquire`](Self::acquire) took, when a later check
    /// refused the request after all.
    pub(crate) fn release(&self, key: &str) {
        if let Some(bucket) = self.lock().get_mut(key) {
            bucket.tokens = (bucket.tokens + 1.0).min(f64::from(self.per_minute));
        }
    }

    /// Drops keys whose bucket has refilled completely (they behave exactly
    /// like unknown keys).
    pub(crate) fn sweep(&self, now: Instant) {
        let mut buckets = self.lock();
        self.forget_idle(&mut buckets, now);
    }

    fn forget_idle(&self, buckets: &mut HashMap<String, Bucket>, now: Instant) {
        let max = f64::from(self.per_minute);
        buckets.retain(|_, bucket| self.refilled(*bucket, now).tokens < max);
    }

    #[cfg(test)]
    pub(crate) fn tracked(&self) -> usize {
        self.lock().len()
    }
}

/// Removes the `n` keys updated longest ago.
fn evict_stalest(buckets: &mut HashMap<String, Bucket>, n: usize) {
    let mut ages: Vec<Instant> = buckets.values().map(|b| b.updated).collect();
    if n == 0 || ages.is_empty() {
        return;
    }
    let nth = n.min(ages.len()) - 1;
    let (_, cutoff, _) = ages.select_nth_unstable(nth);
    let cutoff = *cutoff;
    let mut left = n;
    buckets.retain(|_, b| {
        if left > 0 && b.updated <= cutoff {
            left -= 1;
            false
        } else {
            true
        }
    });
}

/// Counts long-polls held per key.
#[derive(Debug)]
pub(crate) struct PollSlots {
    max: u32,
    held: Arc<Mutex<HashMap<String, u32>>>,
}

/// One held long-poll; its slot is freed when dropped.
#[derive(Debug)]
pub(crate) struct PollSlot {
    key: String,
    held: Arc<Mutex<HashMap<String, u32>>>,
}

impl PollSlots {
    pub(crate) fn new(max: u32) -> Self {
        Self {
            max,
            held: Arc::default(),
        }
    }

    /// A slot for `key`, or `None` when `key` already holds the maximum.
    pub(crate) fn acquire(&self, key: &str) -> Option<PollSlot> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let count = held.entry(key.to_owned()).or_insert(0);
        if self.max != 0 && *count >= self.max {
            return None;
        }
        *count += 1;
        Some(PollSlot {
            key: key.to_owned(),
            held: self.held.clone(),
        })
    }
}

impl Drop for PollSlot {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = held.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_refills_evenly() {
        let limiter = RateLimiter::new(3);
        let t0 = Instant::now();
        for _ in 0..3 {
            limiter.acquire("a", t0).unwrap();
        }
        let wait = limiter.acquire("a", t0).unwrap_err();
        assert!(
            (Duration::from_millis(19_900)..=Duration::from_secs(20)).contains(&wait),
            "{wait:?}"
        );
        // Another key is unaffected.
        limiter.acquire("b", t0).unwrap();
        // One token back after 20 s.
        limiter.acquire("a", t0 + Duration::from_secs(20)).unwrap();
        assert!(limiter.acquire("a", t0 + Duration::from_secs(20)).is_err());
        // Released tokens come back at once.
        limiter.release("a");
        limiter.acquire("a", t0 + Duration::from_secs(20)).unwrap();
    }

    #[test]
    fn refilled_keys_are_forgotten() {
        let limiter = RateLimiter::new(60);
        let t0 = Instant::now();
        limiter.acquire("a", t0).unwrap();
        limiter.sweep(t0);
        assert_eq!(limiter.tracked(), 1);
        limiter.sweep(t0 + Duration::from_secs(2));
        assert_eq!(limiter.tracked(), 0);
    }

    #[test]
    fn ipv6_addresses_share_their_64_and_ipv4_stays_whole() {
        let a: std::net::IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: std::net::IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap();
        let c: std::net::IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        let v4: std::net::IpAddr = "203.0.113.7".parse().unwrap();
        let mapped: std::net::IpAddr = "::ffff:203.0.113.7".parse().unwrap();
        assert_eq!(address_key(v4), "203.0.113.7");
        assert_eq!(address_key(mapped), "203.0.113.7");
        // Rotating within one /64 shares one budget.
        let limiter = RateLimiter::new(3);
        let now = Instant::now();
        let rotated: Vec<Result<(), Duration>> = (0..5u16)
            .map(|i| {
                let ip =
                    std::net::IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 2, i, i, i, i));
                limiter.acquire(&address_key(ip), now)
            })
            .collect();
        assert_eq!(rotated.iter().filter(|r| r.is_ok()).count(), 3);
    }

    #[test]
    fn the_key_map_stays_bounded_under_a_flood_of_busy_keys() {
        let limiter = RateLimiter::new(1);
        let start = Instant::now();
        // Every key spends its only token, so none is idle to forget.
        let started = std::time::Instant::now();
        for i in 0..(MAX_TRACKED_KEYS + 25_000) {
            let now = start + Duration::from_micros(i as u64);
            assert!(limiter.acquire(&format!("k{i}"), now).is_ok());
            assert!(limiter.tracked() <= MAX_TRACKED_KEYS);
        }
        // A handful of full scans, not one per key past the cap.
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "took {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn zero_means_unlimited() {
        let limiter = RateLimiter::new(0);
        for _ in 0..1000 {
            limiter.acquire("a", Instant::now()).unwrap();
        }
        let slots = PollSlots::new(0);
        let held: Vec<_> = (0..100).map(|_| slots.acquire("a").unwrap()).collect();
        assert_eq!(held.len(), 100);
    }

    #[test]
    fn poll_slots_are_counted_and_freed() {
        let slots = PollSlots::new(2);
        let a = slots.acquire("u").unwrap();
        let _b = slots.acquire("u").unwrap();
        assert!(slots.acquire("u").is_none());
        assert!(slots.acquire("v").is_some());
        drop(a);
        assert!(slots.acquire("u").is_some());
    }
}
