//! The rise/fall state machine of one health-check target: pure, no clock,
//! no I/O — the checker feeds it one probe result at a time.

use std::fmt;

/// Whether a target passes its health check, ordered from best to worst.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Health {
    /// Takes new flows.
    Up,
    /// No probe has answered yet: out of the table, and its VIP is not
    /// announced for it, until its first probe passes.
    Pending,
    /// Failed `fall` probes in a row (or its first one): out of the table
    /// until `rise` probes in a row pass.
    Down,
}

impl Health {
    /// `up`, `pending` or `down`, as the admin API's `health` field spells
    /// it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Pending => "pending",
            Self::Down => "down",
        }
    }

    /// True for [`Health::Up`]: the only health that takes traffic.
    pub const fn is_up(self) -> bool {
        matches!(self, Self::Up)
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The health of one target and the run of identical probe results that
/// led to it.
///
/// Guarantees: a `Pending` target takes the verdict of its first probe
/// (`Up` if it passed, `Down` if not) and is never `Pending` again; an `Up`
/// target turns `Down` exactly when its last `fall` probes failed, a `Down`
/// target turns `Up` exactly when its last `rise` probes passed, and nothing
/// else changes its health. At most one of the two consecutive counts is
/// non-zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthState {
    health: Health,
    rise: u32,
    fall: u32,
    successes: u32,
    failures: u32,
}

impl HealthState {
    /// A target no probe has checked yet: [`Health::Pending`], out of the
    /// table until its first probe passes.
    ///
    /// A backend nobody has seen answer is not known to serve: putting it in
    /// the table at once (and announcing its VIP for it) sends clients to
    /// what may be a dead address for `fall` probes. So it starts out, as a
    /// real server does in keepalived's `alpha` mode, or an Envoy host
    /// added to a cluster with active health checks.
    ///
    /// The first probe alone decides, as in Envoy (a single success marks a
    /// new host healthy, whatever its healthy threshold): `rise` is how
    /// many passes it takes to trust a backend again after it failed, not
    /// to meet one. The first probe starts at once, so a live backend is in
    /// within one round trip, a dead one `down` within one probe timeout.
    ///
    /// A threshold of 0 would flip on nothing; validation rejects it, and the
    /// state machine treats it as 1.
    pub fn new(rise: u32, fall: u32) -> Self {
        Self::starting(Health::Pending, rise, fall)
    }

    /// A target that starts in `health`, with no probe recorded yet: how a
    /// target keeps the verdict of an earlier check of the same backend, or
    /// of the agent that ran before this one.
    pub fn starting(health: Health, rise: u32, fall: u32) -> Self {
        Self {
            health,
            rise: rise.max(1),
            fall: fall.max(1),
            successes: 0,
            failures: 0,
        }
    }

    /// Current health.
    pub const fn health(&self) -> Health {
        self.health
    }

    /// Probes passed in a row since the last failure.
    pub const fn consecutive_successes(&self) -> u32 {
        self.successes
    }

    /// Probes failed in a row since the last success.
    pub const fn consecutive_failures(&self) -> u32 {
        self.failures
    }

    /// Records one probe result; returns the new health when it changed.
    pub fn record(&mut self, success: bool) -> Option<Health> {
        // The counts saturate rather than wrap: a backend down for years
        // must not look like it just started failing.
        if success {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
        }
        let next = match self.health {
            Health::Pending if success => Health::Up,
            Health::Pending => Health::Down,
            Health::Up if self.failures >= self.fall => Health::Down,
            Health::Down if self.successes >= self.rise => Health::Up,
            unchanged => unchanged,
        };
        (next != self.health).then(|| {
            self.health = next;
            next
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn starts_pending_and_the_first_pass_brings_it_up() {
        let mut state = HealthState::new(3, 3);
        assert_eq!(state.health(), Health::Pending);
        assert!(!state.health().is_up(), "pending takes no traffic");
        assert_eq!(state.record(true), Some(Health::Up), "one pass, not `rise`");
        assert_eq!(state.consecutive_successes(), 1);
    }

    #[test]
    fn a_pending_target_whose_first_probe_fails_is_down_and_needs_rise() {
        let mut state = HealthState::new(2, 3);
        assert_eq!(
            state.record(false),
            Some(Health::Down),
            "one failure, not `fall`"
        );
        assert_eq!(state.consecutive_failures(), 1);
        assert_eq!(state.record(true), None, "back only after `rise` passes");
        assert_eq!(state.record(true), Some(Health::Up));
    }

    #[test]
    fn starting_up_falls_after_fall_failures() {
        let mut state = HealthState::starting(Health::Up, 2, 3);
        assert_eq!(state.health(), Health::Up);
        assert_eq!(state.record(false), None);
        assert_eq!(state.record(false), None);
        assert_eq!(state.record(false), Some(Health::Down));
        assert_eq!(state.consecutive_failures(), 3);
        assert_eq!(state.record(false), None, "already down");
        assert_eq!(state.consecutive_failures(), 4);
    }

    #[test]
    fn a_success_resets_the_failure_run() {
        let mut state = HealthState::starting(Health::Up, 2, 3);
        for success in [false, false, true, false, false] {
            assert_eq!(state.record(success), None);
        }
        assert_eq!(state.health(), Health::Up);
        assert_eq!(state.record(false), Some(Health::Down));
    }

    #[test]
    fn rises_after_rise_successes() {
        let mut state = HealthState::starting(Health::Down, 2, 3);
        assert_eq!(state.record(true), None);
        assert_eq!(state.record(false), None, "a failure restarts the run");
        assert_eq!(state.record(true), None);
        assert_eq!(state.record(true), Some(Health::Up));
        assert_eq!(state.consecutive_successes(), 2);
        assert_eq!(state.consecutive_failures(), 0);
    }

    #[test]
    fn zero_thresholds_act_as_one() {
        let mut state = HealthState::starting(Health::Up, 0, 0);
        assert_eq!(state.record(true), None);
        assert_eq!(state.record(false), Some(Health::Down));
        assert_eq!(state.record(true), Some(Health::Up));
    }

    fn any_health() -> impl Strategy<Value = Health> {
        prop_oneof![Just(Health::Up), Just(Health::Pending), Just(Health::Down)]
    }

    proptest! {
        /// Checks every step against the definition: the first probe
        /// settles a pending target, and from then on the health after a
        /// step follows from the trailing run of identical results, and
        /// `record` reports exactly the steps where it changed.
        #[test]
        fn flips_only_when_a_threshold_is_reached(
            rise in 1u32..6,
            fall in 1u32..6,
            start in any_health(),
            results in proptest::collection::vec(any::<bool>(), 0..64),
        ) {
            let mut state = HealthState::starting(start, rise, fall);
            let mut history = Vec::new();
            for success in results {
                let before = state.health();
                let change = state.record(success);
                history.push(success);

                let run = history.iter().rev().take_while(|&&r| r == success).count();
                let run = u32::try_from(run).unwrap_or(u32::MAX);
                if success {
                    prop_assert_eq!(state.consecutive_successes(), run);
                    prop_assert_eq!(state.consecutive_failures(), 0);
                } else {
                    prop_assert_eq!(state.consecutive_failures(), run);
                    prop_assert_eq!(state.consecutive_successes(), 0);
                }

                let expected = match (before, success) {
                    (Health::Pending, true) => Health::Up,
                    (Health::Pending, false) => Health::Down,
                    (Health::Up, false) if run >= fall => Health::Down,
                    (Health::Down, true) if run >= rise => Health::Up,
                    _ => before,
                };
                prop_assert_eq!(state.health(), expected);
                prop_assert_eq!(change, (expected != before).then_some(expected));
                prop_assert_ne!(state.health(), Health::Pending, "one probe settles it");
                // Whatever came before, a full run decides the health.
                if success && run >= rise {
                    prop_assert_eq!(state.health(), Health::Up);
                }
                if !success && run >= fall {
                    prop_assert_eq!(state.health(), Health::Down);
                }
            }
        }
    }
}
