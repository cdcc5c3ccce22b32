//! The clock driving two `rtc-sctp` associations in virtual time, over a
//! link that can delay and drop datagrams.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use rtc_sctp::{
    ClientConfig, DatagramEvent, Endpoint, EndpointConfig, Event, Payload,
    PayloadProtocolIdentifier as Ppi, ServerConfig, StreamEvent, TransportConfig,
};
use rtc_shared::TransportProtocol;

use super::*;

#[test]
fn wall_and_association_time_differ_by_what_was_skipped() {
    let now = Instant::now();
    let mut clock = SctpClock::default();
    assert_eq!(clock.at(now), now);
    clock.skipped = Duration::from_secs(20);
    assert_eq!(clock.at(now), now + Duration::from_secs(20));
    assert_eq!(clock.wall(clock.at(now)), now);
}

#[test]
fn a_timer_runs_a_fraction_of_its_length_on_a_short_path() {
    let ms = Duration::from_millis;
    assert_eq!(early(ms(1000), Some(ms(0))), ms(200));
    assert_eq!(early(ms(2000), Some(ms(1))), ms(408));
    assert_eq!(early(ms(1000), Some(ms(50))), ms(400));
    // Nothing measured yet.
    assert_eq!(early(ms(1000), None), ms(1000));
    // A round trip of 200 ms or more: rtc-sctp's own timer.
    assert_eq!(early(ms(1000), Some(ms(200))), ms(1000));
    assert_eq!(early(ms(60_000), Some(ms(900))), ms(60_000));
}

const STREAM: u16 = 1;

/// One end of a simulated association: an `rtc-sctp` endpoint driven
/// through an [`SctpClock`], as the driver drives it.
struct End {
    addr: SocketAddr,
    endpoint: Endpoint,
    association: Option<Association>,
    clock: SctpClock,
}

impl End {
    fn new(port: u16, server: bool) -> Self {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let server = server.then(|| Arc::new(ServerConfig::new(TransportConfig::default())));
        Self {
            addr,
            endpoint: Endpoint::new(
                addr,
                TransportProtocol::UDP,
                Arc::new(EndpointConfig::new()),
                server,
            ),
            association: None,
            clock: SctpClock::default(),
        }
    }
}

/// Two associations joined by a link with a one-way delay, in virtual
/// time, that can drop the next datagrams from client to server.
struct Sim {
    now: Instant,
    client: End,
    server: End,
    one_way: Duration,
    /// `(arrival, to the server, datagram)`.
    in_flight: VecDeque<(Instant, bool, Bytes)>,
    drop_to_server: usize,
    /// When each message reached the server's reader.
    received: Vec<Instant>,
}

impl Sim {
    fn connected(one_way: Duration) -> Self {
        let now = Instant::now();
        let mut client = End::new(5001, false);
        let server = End::new(5002, true);
        let (_, association) = client
            .endpoint
            .connect(
                now,
                ClientConfig::new(TransportConfig::default()),
                server.addr,
            )
            .expect("connect");
        client.association = Some(association);
        let mut sim = Self {
            now,
            client,
            server,
            one_way,
            in_flight: VecDeque::new(),
            drop_to_server: 0,
            received: Vec::new(),
        };
        sim.run_until(Duration::from_secs(5), |sim| {
            sim.server.association.is_some()
                && !sim
                    .client
                    .association
                    .as_ref()
                    .expect("client")
                    .is_handshaking()
        });
        sim.client
            .association
            .as_mut()
            .expect("client")
            .open_stream(STREAM, Ppi::Binary)
            .expect("open stream");
        sim
    }

    fn send(&mut self, message: &'static [u8]) {
        let at = self.client.clock.at(self.now);
        self.client
            .association
            .as_mut()
            .expect("client")
            .stream(STREAM)
            .and_then(|mut s| s.write_sctp(at, &Bytes::from_static(message), Ppi::Binary))
            .expect("write");
    }

    /// Runs until `done` or `limit` of virtual time; false on the limit.
    fn run_until(&mut self, limit: Duration, done: impl Fn(&Self) -> bool) -> bool {
        let end = self.now + limit;
        loop {
            self.transmit();
            if done(self) {
                return true;
            }
            let mut next = self.in_flight.iter().map(|(at, ..)| *at).min();
            for end in [&mut self.client, &mut self.server] {
                if let Some(association) = &end.association {
                    let deadline = end.clock.deadline(association, self.now);
                    next = next.into_iter().chain(deadline).min();
                }
            }
            let Some(next) = next.filter(|&n| n <= end) else {
                return false;
            };
            self.now = self.now.max(next);
            self.deliver();
            for end in [&mut self.client, &mut self.server] {
                if let Some(association) = &mut end.association {
                    end.clock.handle_timeout(association, self.now);
                }
            }
            self.read();
        }
    }

    fn transmit(&mut self) {
        for (to_server, end) in [(true, &mut self.client), (false, &mut self.server)] {
            let Some(association) = &mut end.association else {
                continue;
            };
            while let Some(t) = association.poll_transmit(end.clock.at(self.now)) {
                let Payload::RawEncode(raw) = t.message else {
                    continue;
                };
                for datagram in raw {
                    if to_server && self.drop_to_server > 0 {
                        self.drop_to_server -= 1;
                        continue;
                    }
                    self.in_flight
                        .push_back((self.now + self.one_way, to_server, datagram));
                }
            }
        }
    }

    fn deliver(&mut self) {
        while let Some(i) = self.in_flight.iter().position(|(at, ..)| *at <= self.now) {
            let (_, to_server, datagram) = self.in_flight.remove(i).expect("present");
            let (end, from) = if to_server {
                (&mut self.server, self.client.addr)
            } else {
                (&mut self.client, self.server.addr)
            };
            let at = end.clock.at(self.now);
            match end.endpoint.handle(at, from, None, datagram) {
                Some((_, DatagramEvent::NewAssociation(a))) => end.association = Some(a),
                Some((_, DatagramEvent::AssociationEvent(e))) => {
                    if let Some(association) = &mut end.association {
                        association.handle_event(e);
                    }
                }
                _ => {}
            }
        }
    }

    fn read(&mut self) {
        for end in [&mut self.client, &mut self.server] {
            let Some(association) = &mut end.association else {
                continue;
            };
            let mut readable = false;
            while let Some(event) = association.poll() {
                readable |= matches!(event, Event::Stream(StreamEvent::Readable { .. }));
            }
            while association.accept_stream().is_some() {}
            while readable {
                match association.stream(STREAM).and_then(|mut s| s.read_sctp()) {
                    Ok(Some(_)) => self.received.push(self.now),
                    _ => readable = false,
                }
            }
        }
    }

    /// A bulk exchange, so that the round trip is measured without a
    /// delayed SACK: two packets back to back are acknowledged at once.
    fn warm_up(&mut self) {
        // Too large to share a packet.
        self.send(&[1; 1000]);
        self.send(&[2; 1000]);
        assert!(self.run_until(Duration::from_secs(10), self.delivered(2)));
        // The SACK reaches the client and its timer stops.
        assert!(!self.run_until(Duration::from_secs(1), |_| false));
        let client = self.client.association.as_ref().expect("client");
        assert!(srtt(client).is_some());
    }

    /// Sends a message whose first `lost` datagrams are dropped, and
    /// returns how long it took to reach the server's reader.
    fn send_losing(&mut self, lost: usize) -> Duration {
        let sent = self.now;
        let before = self.received.len();
        self.drop_to_server = lost;
        self.send(b"lost");
        assert!(self.run_until(Duration::from_secs(10), self.delivered(before + 1)));
        self.received[before] - sent
    }

    fn delivered(&self, n: usize) -> impl Fn(&Self) -> bool {
        move |sim| sim.received.len() >= n
    }
}

#[test]
fn a_lost_message_is_retransmitted_after_200_ms_then_400_ms() {
    let mut sim = Sim::connected(Duration::ZERO);
    sim.warm_up();
    let took = sim.send_losing(2);
    // rtc-sctp alone: 1 s, then 2 s more (3 s).
    assert!(
        took >= Duration::from_millis(590) && took <= Duration::from_millis(610),
        "{took:?}"
    );
}

#[test]
fn before_any_acknowledgement_the_whole_timer_runs() {
    let mut sim = Sim::connected(Duration::ZERO);
    let took = sim.send_losing(1);
    assert!(took >= Duration::from_secs(1), "{took:?}");
}

#[test]
fn a_long_path_keeps_rtc_sctps_own_timer() {
    // 150 ms each way: a round trip of 300 ms.
    let one_way = Duration::from_millis(150);
    let mut sim = Sim::connected(one_way);
    sim.warm_up();
    let took = sim.send_losing(1);
    assert!(took >= Duration::from_secs(1) + one_way, "{took:?}");
}
