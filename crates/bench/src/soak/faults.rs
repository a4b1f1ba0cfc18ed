//! The faults `soak` applies: what each breaks, how it is healed, and the seeded schedule.
//!
//! Every fault is a pair of shell commands (break, heal) against the local topology, by default
//! through `cargo xtask`, so the same soak runs against any topology whose parts can be stopped
//! and started by a command.

use std::time::Duration;

/// A small, seeded random source (SplitMix64): the same seed gives the same schedule.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `[low, high]`.
    pub(crate) fn between(&mut self, low: f64, high: f64) -> f64 {
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        low + unit * (high - low).max(0.0)
    }

    /// An index below `len` (which must not be 0).
    pub(crate) fn below(&mut self, len: usize) -> usize {
        (self.next_u64() % len as u64) as usize
    }
}

/// What can be broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The broker stopped (SIGTERM), started again later.
    BrokerStopped,
    /// The broker stopped for longer than librdkafka's default message timeout (5 minutes).
    BrokerLongOutage,
    /// The broker SIGKILLed and started again at once.
    BrokerKilled,
    /// Redis stopped.
    RedisStopped,
    /// Redis frozen with SIGSTOP: it hangs instead of refusing.
    RedisHung,
    /// One delivery replica SIGKILLed, started again.
    DeliveryKilled,
    /// A messaging replica SIGKILLed (its relay with it), started again.
    MessagingKilled,
    /// Auth stopped, started again.
    AuthStopped,
    /// PostgreSQL restarted.
    PostgresRestarted,
    /// The gateway stopped with SIGTERM (its sockets closed with 1001), started again.
    GatewayRestarted,
}

impl Kind {
    /// Every kind the schedule picks from (the long broker outage is placed apart).
    pub(crate) const PICKED: [Kind; 9] = [
        Kind::BrokerStopped,
        Kind::BrokerKilled,
        Kind::RedisStopped,
        Kind::RedisHung,
        Kind::DeliveryKilled,
        Kind::MessagingKilled,
        Kind::AuthStopped,
        Kind::PostgresRestarted,
        Kind::GatewayRestarted,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::BrokerStopped => "broker stopped",
            Kind::BrokerLongOutage => "broker stopped > 5 min",
            Kind::BrokerKilled => "broker SIGKILLed",
            Kind::RedisStopped => "redis stopped",
            Kind::RedisHung => "redis hung (SIGSTOP)",
            Kind::DeliveryKilled => "delivery SIGKILLed",
            Kind::MessagingKilled => "messaging SIGKILLed",
            Kind::AuthStopped => "auth stopped",
            Kind::PostgresRestarted => "postgres restarted",
            Kind::GatewayRestarted => "gateway restarted",
        }
    }

    /// The part of the system it breaks: two faults at once never break the same part.
    fn part(self) -> &'static str {
        match self {
            Kind::BrokerStopped | Kind::BrokerLongOutage | Kind::BrokerKilled => "broker",
            Kind::RedisStopped | Kind::RedisHung => "redis",
            Kind::DeliveryKilled => "delivery",
            Kind::MessagingKilled => "messaging",
            Kind::AuthStopped => "auth",
            Kind::PostgresRestarted => "postgres",
            Kind::GatewayRestarted => "gateway",
        }
    }

    /// How long it lasts, in seconds, at least and at most.
    fn length(self) -> (f64, f64) {
        match self {
            Kind::BrokerStopped => (3.0, 40.0),
            Kind::BrokerLongOutage => (310.0, 330.0),
            Kind::BrokerKilled => (0.0, 6.0),
            Kind::RedisStopped => (3.0, 30.0),
            Kind::RedisHung => (3.0, 20.0),
            Kind::DeliveryKilled => (0.5, 10.0),
            Kind::MessagingKilled => (0.5, 10.0),
            Kind::AuthStopped => (3.0, 30.0),
            Kind::PostgresRestarted => (0.0, 0.0),
            Kind::GatewayRestarted => (0.0, 5.0),
        }
    }
}

/// How to reach the parts of the topology.
#[derive(Debug, Clone)]
pub(crate) struct Commands {
    /// Prefix of the topology commands (`<xtask> stop kafka`, …).
    pub(crate) xtask: String,
    /// Restarts PostgreSQL.
    pub(crate) postgres_restart: String,
    /// Delivery replicas, `delivery-1..N`.
    pub(crate) delivery_replicas: usize,
    /// Messaging replicas, `messaging-1..N`.
    pub(crate) messaging_replicas: usize,
}

/// One fault as scheduled: what, when (seconds into the soak), for how long, and the commands.
#[derive(Debug, Clone)]
pub(crate) struct Fault {
    pub(crate) kind: Kind,
    /// The component it names, e.g. `delivery-2`.
    pub(crate) target: String,
    pub(crate) at: f64,
    pub(crate) length: f64,
    pub(crate) break_command: String,
    /// Empty for faults that heal themselves (a restart).
    pub(crate) heal_command: String,
}

impl Fault {
    fn new(kind: Kind, at: f64, rng: &mut Rng, commands: &Commands) -> Self {
        let (low, high) = kind.length();
        let length = rng.between(low, high);
        let x = &commands.xtask;
        let pick = |rng: &mut Rng, name: &str, count: usize| {
            format!("{name}-{}", 1 + rng.below(count.max(1)))
        };
        let (target, break_command, heal_command) = match kind {
            Kind::BrokerStopped | Kind::BrokerLongOutage => (
                "kafka".to_owned(),
                format!("{x} stop kafka"),
                format!("{x} start kafka"),
            ),
            Kind::BrokerKilled => (
                "kafka".to_owned(),
                format!("{x} stop --kill kafka"),
                format!("{x} start kafka"),
            ),
            Kind::RedisStopped => (
                "redis".to_owned(),
                format!("{x} stop redis"),
                format!("{x} start redis"),
            ),
            Kind::RedisHung => (
                "redis".to_owned(),
                format!("{x} pause redis"),
                format!("{x} resume redis"),
            ),
            Kind::DeliveryKilled => {
                let target = pick(rng, "delivery", commands.delivery_replicas);
                (
                    target.clone(),
                    format!("{x} stop --kill {target}"),
                    format!("{x} start {target}"),
                )
            }
            Kind::MessagingKilled => {
                let target = pick(rng, "messaging", commands.messaging_replicas);
                (
                    target.clone(),
                    format!("{x} stop --kill {target}"),
                    format!("{x} start {target}"),
                )
            }
            Kind::AuthStopped => (
                "auth".to_owned(),
                format!("{x} stop auth"),
                format!("{x} start auth"),
            ),
            Kind::PostgresRestarted => (
                "postgres".to_owned(),
                commands.postgres_restart.clone(),
                String::new(),
            ),
            Kind::GatewayRestarted => (
                "gateway".to_owned(),
                format!("{x} stop gateway"),
                format!("{x} start gateway"),
            ),
        };
        Self {
            kind,
            target,
            at,
            length,
            break_command,
            heal_command,
        }
    }

    /// When it is healed, in seconds into the soak.
    pub(crate) fn until(&self) -> f64 {
        self.at + self.length
    }
}

/// The faults of a soak of `duration` seconds: every `every.0..every.1` seconds (seeded), one or
/// two faults of different parts, each healed before the next round starts. With `long_outage`,
/// one round (in the first half, so the backlog drains before the end) is a broker outage longer
/// than five minutes. The last `quiet` seconds have no faults: time to settle before the check.
pub(crate) fn schedule(
    rng: &mut Rng,
    duration: f64,
    every: (f64, f64),
    quiet: f64,
    long_outage: bool,
    commands: &Commands,
) -> Vec<Fault> {
    let mut faults = Vec::new();
    let mut at = rng.between(every.0, every.1).min(every.0.max(5.0));
    let mut long_outage_pending = long_outage;
    let end = duration - quiet;
    while at < end {
        let mut round = Vec::new();
        if long_outage_pending && at > duration / 10.0 {
            long_outage_pending = false;
            round.push(Fault::new(Kind::BrokerLongOutage, at, rng, commands));
        } else {
            let first = Kind::PICKED[rng.below(Kind::PICKED.len())];
            round.push(Fault::new(first, at, rng, commands));
            // One round in three breaks a second, different part at the same time.
            if rng.below(3) == 0 {
                let second = Kind::PICKED[rng.below(Kind::PICKED.len())];
                if second.part() != first.part() {
                    let offset = rng.between(0.0, 3.0);
                    round.push(Fault::new(second, at + offset, rng, commands));
                }
            }
        }
        // A fault that would outlast the faulty part of the run is cut short.
        for fault in &mut round {
            fault.length = fault.length.min((end - fault.at).max(0.0));
        }
        let healed = round.iter().map(Fault::until).fold(at, f64::max);
        faults.extend(round);
        at = healed + rng.between(every.0, every.1);
    }
    faults
}

/// How long after the last fault was healed the run waits before it checks everything: the
/// consumer-group rebalances and the presence sweep take their time.
pub(crate) fn settle_time(faults: &[Fault]) -> Duration {
    let long = faults.iter().any(|f| f.kind == Kind::BrokerLongOutage);
    Duration::from_secs(if long { 180 } else { 60 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commands() -> Commands {
        Commands {
            xtask: "cargo xtask".into(),
            postgres_restart: "pg restart".into(),
            delivery_replicas: 2,
            messaging_replicas: 2,
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        let a = schedule(
            &mut Rng::new(7),
            600.0,
            (20.0, 60.0),
            30.0,
            false,
            &commands(),
        );
        let b = schedule(
            &mut Rng::new(7),
            600.0,
            (20.0, 60.0),
            30.0,
            false,
            &commands(),
        );
        let c = schedule(
            &mut Rng::new(8),
            600.0,
            (20.0, 60.0),
            30.0,
            false,
            &commands(),
        );
        let key = |f: &Vec<Fault>| {
            f.iter()
                .map(|f| (f.break_command.clone(), f.at.to_bits(), f.length.to_bits()))
                .collect::<Vec<_>>()
        };
        assert_eq!(key(&a), key(&b));
        assert_ne!(key(&a), key(&c));
    }

    #[test]
    fn faults_are_spaced_healed_in_time_and_never_break_one_part_twice_at_once() {
        for seed in 0..50 {
            let faults = schedule(
                &mut Rng::new(seed),
                1800.0,
                (20.0, 60.0),
                60.0,
                true,
                &commands(),
            );
            assert!(!faults.is_empty());
            assert!(faults.iter().all(|f| f.until() <= 1740.0 + 1e-9), "{seed}");
            assert_eq!(
                faults
                    .iter()
                    .filter(|f| f.kind == Kind::BrokerLongOutage)
                    .count(),
                1
            );
            for (i, a) in faults.iter().enumerate() {
                for b in &faults[i + 1..] {
                    let overlap = a.at < b.until() && b.at < a.until();
                    if overlap {
                        assert_ne!(a.kind.part(), b.kind.part(), "seed {seed}: {a:?} {b:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn commands_name_the_component_and_its_replica() {
        let mut rng = Rng::new(3);
        let fault = Fault::new(Kind::DeliveryKilled, 1.0, &mut rng, &commands());
        assert!(fault.target.starts_with("delivery-"));
        assert_eq!(
            fault.break_command,
            format!("cargo xtask stop --kill {}", fault.target)
        );
        assert_eq!(
            fault.heal_command,
            format!("cargo xtask start {}", fault.target)
        );
        let hung = Fault::new(Kind::RedisHung, 1.0, &mut rng, &commands());
        assert_eq!(hung.break_command, "cargo xtask pause redis");
    }
}
