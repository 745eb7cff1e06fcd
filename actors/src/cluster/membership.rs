//! The membership view: who is in the cluster, who is up, whom to dial, and who owns what.
//!
//! Pure and IO-free: time comes in as milliseconds, events come in as values, and every answer is
//! computed from the view alone, so every node that sees the same members computes the same
//! owners. The node's transport feeds it (a peer answered, a session dropped, a tick) and acts on
//! what it returns (dial these addresses, drop that session, start and stop these partitions).

use std::collections::BTreeMap;

use crate::routing::replicated_by;

/// First redial delay after a failure; doubles up to [`REDIAL_MAX_MS`].
pub const REDIAL_MIN_MS: u64 = 100;
/// Longest delay between two dials of one address.
pub const REDIAL_MAX_MS: u64 = 5_000;

/// Where a node is in its life: only active members own partitions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub enum Phase {
    /// Owns partitions.
    #[default]
    Active,
    /// Being decommissioned: owns nothing, hands its partitions over, copies its data out.
    Leaving,
    /// Decommissioned: its data lives on the other members; once silent, it is forgotten.
    Left,
}

impl Phase {
    /// `active`, `leaving` or `left`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Active => "active",
            Phase::Leaving => "leaving",
            Phase::Left => "left",
        }
    }
}

/// What a node says about itself (in its hello and every pong).
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct NodeInfo {
    /// Unique node name (a StatefulSet pod name).
    pub name: String,
    /// host:port peers dial for the cluster transport.
    pub cluster_addr: String,
    /// host:port of its REST API.
    pub http_addr: String,
    /// Where it is in its life.
    pub phase: Phase,
    /// Copies of every partition the cluster keeps (`--replication-factor`); a peer that says
    /// another number is refused: the members would place replicas differently.
    pub replication_factor: u32,
    /// True while its store may miss data it should hold (it started and has not finished its
    /// repair): its answers are merged but do not make an answer complete.
    pub syncing: bool,
}

/// Whether a peer answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Answered within the liveness timeout.
    Up,
    /// Silent for longer than the liveness timeout, or its session dropped.
    Down,
}

impl Status {
    /// `up` or `down`, as the REST API shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Up => "up",
            Status::Down => "down",
        }
    }
}

/// A peer as the view knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// What it said about itself.
    pub info: NodeInfo,
    /// Up or down.
    pub status: Status,
    /// When it last answered (ms).
    pub last_seen: u64,
}

/// A dial target with its backoff.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    next_dial: u64,
    delay: u64,
}

/// Something that happened to the cluster, as the transport reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A peer answered a hello or a ping at `at`.
    Heard {
        /// What it said about itself.
        from: NodeInfo,
        /// When (ms).
        at: u64,
    },
    /// The session to a peer dropped.
    Disconnected {
        /// Its name.
        name: String,
    },
    /// Time passed; peers silent for longer than the liveness timeout go down.
    Tick {
        /// Now (ms).
        now: u64,
    },
    /// A peer named the cluster addresses it sees up (gossip, when nodes dial the mesh
    /// themselves): unknown ones become dial targets.
    Learned {
        /// Cluster addresses.
        addrs: Vec<String>,
        /// When (ms).
        at: u64,
    },
    /// A dial of an address failed (or gave nothing) at `at`; back off before the next.
    DialFailed {
        /// The address.
        addr: String,
        /// When (ms).
        at: u64,
    },
}

/// What an event changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    /// Peers that came up.
    pub up: Vec<String>,
    /// Peers that went down (their sessions should be dropped).
    pub down: Vec<String>,
    /// Peers whose phase changed (they started or finished leaving).
    pub phase: Vec<String>,
    /// Decommissioned peers that went away and are forgotten.
    pub forgotten: Vec<String>,
    /// Peers that started or finished repairing (the view must show it; ownership is unchanged).
    pub syncing: Vec<String>,
    /// Peers heard for the first time with another replication factor: (name, theirs). They
    /// are not members; the transport logs each once.
    pub refused: Vec<(String, u32)>,
}

impl Change {
    /// True when the members or their phases changed, so ownership must be recomputed.
    pub fn members_changed(&self) -> bool {
        !self.up.is_empty()
            || !self.down.is_empty()
            || !self.phase.is_empty()
            || !self.forgotten.is_empty()
    }
}

/// The membership view of one node.
#[derive(Debug, Clone)]
pub struct Membership {
    me: NodeInfo,
    liveness_timeout: u64,
    peers: BTreeMap<String, Peer>,
    /// Addresses to keep connected: seeds and every peer learned, by address.
    targets: BTreeMap<String, Target>,
    /// The configured seeds (never dropped from the targets).
    seeds: Vec<String>,
    /// Peers refused for another replication factor, with theirs (logged once each).
    mismatched: BTreeMap<String, u32>,
}

impl Membership {
    /// A view with only this node, which will dial `seeds`.
    pub fn new(me: NodeInfo, seeds: &[String], liveness_timeout_ms: u64) -> Self {
        let targets = seeds
            .iter()
            .filter(|s| **s != me.cluster_addr)
            .map(|s| {
                (
                    s.clone(),
                    Target {
                        next_dial: 0,
                        delay: REDIAL_MIN_MS,
                    },
                )
            })
            .collect();
        Self {
            seeds: seeds.to_vec(),
            me,
            liveness_timeout: liveness_timeout_ms,
            peers: BTreeMap::new(),
            targets,
            mismatched: BTreeMap::new(),
        }
    }

    /// This node.
    pub fn me(&self) -> &NodeInfo {
        &self.me
    }

    /// Every peer ever heard of, by name.
    pub fn peers(&self) -> impl Iterator<Item = &Peer> {
        self.peers.values()
    }

    /// Applies an event.
    pub fn apply(&mut self, event: Event) -> Change {
        let mut change = Change::default();
        match event {
            Event::Heard { from, at } => self.heard(from, at, &mut change),
            Event::Disconnected { name } => {
                if let Some(p) = self.peers.get_mut(&name) {
                    if p.status == Status::Up {
                        p.status = Status::Down;
                        change.down.push(name);
                    }
                }
            }
            Event::Tick { now } => self.tick(now, &mut change),
            Event::Learned { addrs, at } => {
                for addr in addrs {
                    if addr != self.me.cluster_addr {
                        self.targets.entry(addr).or_insert(Target {
                            next_dial: at,
                            delay: REDIAL_MIN_MS,
                        });
                    }
                }
            }
            Event::DialFailed { addr, at } => self.dial_failed(addr, at),
        }
        change
    }

    /// A peer answered: it is up (again), its address is dialled at the shortest backoff.
    fn heard(&mut self, from: NodeInfo, at: u64, change: &mut Change) {
        if from.name == self.me.name {
            return;
        }
        if from.replication_factor != self.me.replication_factor {
            if self
                .mismatched
                .insert(from.name.clone(), from.replication_factor)
                != Some(from.replication_factor)
            {
                change.refused.push((from.name, from.replication_factor));
            }
            return;
        }
        self.mismatched.remove(&from.name);
        self.targets
            .entry(from.cluster_addr.clone())
            .and_modify(|t| t.delay = REDIAL_MIN_MS)
            .or_insert(Target {
                next_dial: at,
                delay: REDIAL_MIN_MS,
            });
        let name = from.name.clone();
        match self.peers.get_mut(&name) {
            Some(p) => {
                if p.status == Status::Down {
                    change.up.push(name.clone());
                } else if p.info.phase != from.phase {
                    change.phase.push(name.clone());
                }
                if p.info.syncing != from.syncing {
                    change.syncing.push(name);
                }
                p.status = Status::Up;
                p.last_seen = p.last_seen.max(at);
                p.info = from;
            }
            None => {
                change.up.push(name.clone());
                let peer = Peer {
                    info: from,
                    status: Status::Up,
                    last_seen: at,
                };
                self.peers.insert(name, peer);
            }
        }
    }

    /// Peers silent past the liveness timeout go down; a decommissioned member that went away
    /// was scaled down: it is forgotten, so answers are not partial for want of it and nobody
    /// redials it.
    fn tick(&mut self, now: u64, change: &mut Change) {
        for (name, p) in self.peers.iter_mut() {
            if p.status == Status::Up && now.saturating_sub(p.last_seen) > self.liveness_timeout {
                p.status = Status::Down;
                change.down.push(name.clone());
            }
        }
        let gone: Vec<NodeInfo> = self
            .peers
            .values()
            .filter(|p| p.status == Status::Down && p.info.phase == Phase::Left)
            .map(|p| p.info.clone())
            .collect();
        for info in gone {
            self.peers.remove(&info.name);
            self.targets.remove(&info.cluster_addr);
            change.forgotten.push(info.name);
        }
    }

    /// A dial failed: its backoff doubles. A gossiped address that never answered is dropped
    /// once its backoff is at the maximum; seeds and members ever heard are redialled forever.
    fn dial_failed(&mut self, addr: String, at: u64) {
        if let Some(t) = self.targets.get_mut(&addr) {
            t.next_dial = at + t.delay;
            t.delay = (t.delay * 2).min(REDIAL_MAX_MS);
            let known = self.seeds.contains(&addr)
                || self.peers.values().any(|p| p.info.cluster_addr == addr);
            if t.delay == REDIAL_MAX_MS && !known {
                self.targets.remove(&addr);
            }
        }
    }

    /// Addresses to dial now: targets with no live peer behind them whose backoff has expired.
    /// The caller reports each failure with [`Event::DialFailed`].
    pub fn to_dial(&mut self, now: u64) -> Vec<String> {
        let live: Vec<&str> = self
            .peers
            .values()
            .filter(|p| p.status == Status::Up)
            .map(|p| p.info.cluster_addr.as_str())
            .collect();
        let mut out = Vec::new();
        for (addr, t) in self.targets.iter_mut() {
            if live.contains(&addr.as_str()) || t.next_dial > now {
                continue;
            }
            // Until it answers, the next attempt waits its backoff.
            t.next_dial = now + t.delay;
            t.delay = (t.delay * 2).min(REDIAL_MAX_MS);
            out.push(addr.clone());
        }
        out
    }

    /// Names of the live, active members (this node included when active), sorted: the members
    /// that own partitions.
    pub fn live(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .peers
            .values()
            .filter(|p| p.status == Status::Up && p.info.phase == Phase::Active)
            .map(|p| p.info.name.clone())
            .chain((self.me.phase == Phase::Active).then(|| self.me.name.clone()))
            .collect();
        v.sort();
        v
    }

    /// Moves this node to `phase` (its next pongs say so); true if it changed.
    pub fn set_phase(&mut self, phase: Phase) -> bool {
        let changed = self.me.phase != phase;
        self.me.phase = phase;
        changed
    }

    /// The peer of a live member, if it is one.
    pub fn live_peer(&self, name: &str) -> Option<&Peer> {
        self.peers.get(name).filter(|p| p.status == Status::Up)
    }

    /// The partitions this node holds a replica of among the live members.
    pub fn owned(&self, partitions: u32) -> Vec<u32> {
        let n = self.me.replication_factor.max(1) as usize;
        replicated_by(&self.me.name, partitions, &self.live(), n)
    }
}

/// Partitions to start (owned now, not before) and to stop (owned before, not now).
pub fn ownership_diff(before: &[u32], after: &[u32]) -> (Vec<u32>, Vec<u32>) {
    let start = after
        .iter()
        .filter(|p| !before.contains(p))
        .copied()
        .collect();
    let stop = before
        .iter()
        .filter(|p| !after.contains(p))
        .copied()
        .collect();
    (start, stop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::owned_by;

    fn info(n: u32) -> NodeInfo {
        NodeInfo {
            name: format!("telemetry-{n}"),
            cluster_addr: format!("10.0.0.{n}:4697"),
            http_addr: format!("10.0.0.{n}:8080"),
            phase: Phase::Active,
            replication_factor: 1,
            syncing: false,
        }
    }

    /// A peer answered at `at`.
    fn heard(m: &mut Membership, from: NodeInfo, at: u64) -> Change {
        m.apply(Event::Heard { from, at })
    }

    fn in_phase(n: u32, phase: Phase) -> NodeInfo {
        NodeInfo { phase, ..info(n) }
    }

    #[test]
    fn a_peer_with_another_replication_factor_is_refused_and_reported_once() {
        let mut m = view();
        let other = NodeInfo {
            replication_factor: 2,
            ..info(1)
        };
        let c = heard(&mut m, other.clone(), 0);
        assert_eq!(c.refused, [("telemetry-1".to_string(), 2)]);
        assert!(c.up.is_empty() && !c.members_changed());
        assert!(
            heard(&mut m, other, 500).refused.is_empty(),
            "reported once"
        );
        assert_eq!(m.live(), ["telemetry-0"]);
        // Restarted with the cluster's factor, it joins.
        let c = heard(&mut m, info(1), 1000);
        assert_eq!(c.up, ["telemetry-1"]);
        assert_eq!(m.live(), ["telemetry-0", "telemetry-1"]);
        // Its repair state changing is news for the view, not for ownership.
        let repairing = NodeInfo {
            syncing: true,
            ..info(1)
        };
        let c = heard(&mut m, repairing, 1500);
        assert_eq!(c.syncing, ["telemetry-1"]);
        assert!(!c.members_changed());
        assert!(heard(&mut m, info(1), 2000).syncing == ["telemetry-1"]);
    }

    #[test]
    fn with_two_replicas_every_partition_is_held_twice() {
        let two = |n| NodeInfo {
            replication_factor: 2,
            ..info(n)
        };
        let mut views: Vec<Membership> =
            (0..3).map(|n| Membership::new(two(n), &[], 3000)).collect();
        for (i, v) in views.iter_mut().enumerate() {
            for n in (0..3).filter(|n| *n != i as u32) {
                heard(v, two(n), 0);
            }
        }
        for p in 0..64 {
            let holders = views.iter().filter(|v| v.owned(64).contains(&p)).count();
            assert_eq!(holders, 2, "partition {p}");
        }
    }

    #[test]
    fn leaving_members_own_nothing_and_left_ones_are_forgotten_once_gone() {
        let mut m = view();
        heard(&mut m, info(1), 0);
        heard(&mut m, info(2), 0);
        assert_eq!(m.live().len(), 3);
        // telemetry-2 starts leaving: it stays up, but owns nothing.
        let c = m.apply(Event::Heard {
            from: in_phase(2, Phase::Leaving),
            at: 100,
        });
        assert!(c.members_changed());
        assert_eq!(m.live(), ["telemetry-0", "telemetry-1"]);
        assert!(
            m.live_peer("telemetry-2").is_some(),
            "still asked for reads"
        );
        assert!(owned_by("telemetry-2", 64, &m.live()).is_empty());
        // It finishes, then is scaled down: forgotten, not redialled.
        m.apply(Event::Heard {
            from: in_phase(2, Phase::Left),
            at: 200,
        });
        let c = m.apply(Event::Tick { now: 5000 });
        assert_eq!(c.down, ["telemetry-1", "telemetry-2"]);
        assert_eq!(c.forgotten, ["telemetry-2"]);
        assert!(m.peers().all(|p| p.info.name != "telemetry-2"));
        assert!(!m.to_dial(100_000).contains(&"10.0.0.2:4697".to_string()));
        // This node leaving owns nothing either.
        assert!(m.set_phase(Phase::Leaving));
        assert!(m.owned(64).is_empty());
        assert!(!m.set_phase(Phase::Leaving));
    }

    #[test]
    fn gossiped_addresses_are_dialled_and_dropped_if_they_never_answer() {
        let mut m = view();
        let (seed, peer2, ghost) = ("10.0.0.1:4697", "10.0.0.2:4697", "10.0.0.9:4697");
        assert_eq!(m.to_dial(0), [seed]);
        m.apply(Event::Learned {
            addrs: vec![peer2.into(), ghost.into(), "10.0.0.0:4697".into()],
            at: 10,
        });
        // Learned addresses are dialled; this node's own address is not.
        assert_eq!(m.to_dial(10), [peer2, ghost]);
        heard(&mut m, info(2), 20);
        // The seed and the ghost fail until their backoff is at its maximum.
        let mut now = 20;
        for _ in 0..8 {
            now += REDIAL_MAX_MS;
            for addr in m.to_dial(now) {
                m.apply(Event::DialFailed { addr, at: now });
            }
            heard(&mut m, info(2), now);
        }
        now += REDIAL_MAX_MS;
        // The seed stays a target, the ghost is gone, the live peer is not redialled.
        assert_eq!(m.to_dial(now), [seed]);
        // Gossip brings the ghost back as a target, once more.
        m.apply(Event::Learned {
            addrs: vec![ghost.into()],
            at: now,
        });
        assert_eq!(m.to_dial(now), [ghost]);
    }

    fn view() -> Membership {
        Membership::new(
            info(0),
            &["10.0.0.0:4697".into(), "10.0.0.1:4697".into()],
            3000,
        )
    }

    /// An event, the peers it brings up, the peers it takes down, the live members after it.
    type Row = (
        Event,
        &'static [&'static str],
        &'static [&'static str],
        &'static [&'static str],
    );

    #[test]
    fn events_move_peers_up_and_down() {
        let mut m = view();
        let table: Vec<Row> = vec![
            (
                Event::Heard {
                    from: info(1),
                    at: 0,
                },
                &["telemetry-1"],
                &[],
                &["telemetry-0", "telemetry-1"],
            ),
            (
                Event::Heard {
                    from: info(2),
                    at: 500,
                },
                &["telemetry-2"],
                &[],
                &["telemetry-0", "telemetry-1", "telemetry-2"],
            ),
            (
                Event::Heard {
                    from: info(1),
                    at: 1000,
                },
                &[],
                &[],
                &["telemetry-0", "telemetry-1", "telemetry-2"],
            ),
            // 3,000 ms of silence is tolerated, a moment more is not.
            (
                Event::Tick { now: 3500 },
                &[],
                &[],
                &["telemetry-0", "telemetry-1", "telemetry-2"],
            ),
            (
                Event::Tick { now: 3501 },
                &[],
                &["telemetry-2"],
                &["telemetry-0", "telemetry-1"],
            ),
            (
                Event::Tick { now: 9000 },
                &[],
                &["telemetry-1"],
                &["telemetry-0"],
            ),
            (
                Event::Heard {
                    from: info(2),
                    at: 9100,
                },
                &["telemetry-2"],
                &[],
                &["telemetry-0", "telemetry-2"],
            ),
            (
                Event::Disconnected {
                    name: "telemetry-2".into(),
                },
                &[],
                &["telemetry-2"],
                &["telemetry-0"],
            ),
            (
                Event::Disconnected {
                    name: "telemetry-2".into(),
                },
                &[],
                &[],
                &["telemetry-0"],
            ),
            // This node's own hello (a seed list that names it) is not a peer.
            (
                Event::Heard {
                    from: info(0),
                    at: 9200,
                },
                &[],
                &[],
                &["telemetry-0"],
            ),
        ];
        for (i, (event, up, down, live)) in table.into_iter().enumerate() {
            let c = m.apply(event);
            assert_eq!(c.up, up, "row {i}");
            assert_eq!(c.down, down, "row {i}");
            assert_eq!(m.live(), live, "row {i}");
        }
    }

    #[test]
    fn dials_seeds_and_learned_peers_with_backoff() {
        let mut m = view();
        // The seed list names this node too: it is not dialled.
        assert_eq!(m.to_dial(0), ["10.0.0.1:4697"]);
        assert!(m.to_dial(50).is_empty(), "backoff");
        assert_eq!(m.to_dial(100), ["10.0.0.1:4697"]);
        m.apply(Event::DialFailed {
            addr: "10.0.0.1:4697".into(),
            at: 100,
        });
        assert!(m.to_dial(399).is_empty());
        assert_eq!(m.to_dial(500), ["10.0.0.1:4697"]);
        // A peer learned through another is dialled too; a live one is not.
        heard(&mut m, info(1), 600);
        heard(&mut m, info(2), 600);
        assert!(m.to_dial(10_000).is_empty());
        m.apply(Event::Disconnected {
            name: "telemetry-2".into(),
        });
        assert_eq!(m.to_dial(10_000), ["10.0.0.2:4697"]);
        // Backoff is capped.
        for t in 0..20 {
            m.apply(Event::DialFailed {
                addr: "10.0.0.2:4697".into(),
                at: 10_000 + t,
            });
        }
        assert!(m.to_dial(10_019 + REDIAL_MAX_MS - 1).is_empty());
        assert_eq!(m.to_dial(10_019 + REDIAL_MAX_MS), ["10.0.0.2:4697"]);
    }

    #[test]
    fn ownership_follows_live_members_and_moves_about_one_nth() {
        let mut m = view();
        let alone = m.owned(64);
        assert_eq!(alone.len(), 64);
        heard(&mut m, info(1), 0);
        heard(&mut m, info(2), 0);
        let three = m.owned(64);
        let (start, stop) = ownership_diff(&alone, &three);
        assert!(start.is_empty());
        assert!((14..=30).contains(&three.len()), "{}", three.len());
        assert_eq!(stop.len(), 64 - three.len());
        // A fourth member takes only partitions from the others, about a quarter.
        heard(&mut m, info(3), 0);
        let four = m.owned(64);
        let (start, stop) = ownership_diff(&three, &four);
        assert!(
            start.is_empty(),
            "a join never gives an old member new partitions"
        );
        assert!(stop.len() <= three.len());
        let joiner = owned_by("telemetry-3", 64, &m.live());
        assert!((8..=24).contains(&joiner.len()), "{}", joiner.len());
        // Every node computes the same owners from the same members.
        let mut all: Vec<u32> = m
            .live()
            .iter()
            .flat_map(|n| owned_by(n, 64, &m.live()))
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..64).collect::<Vec<_>>());
    }
}
