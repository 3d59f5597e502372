//! The health checker: one probing task per (backend address, check, probe
//! path), the rise/fall state each task keeps, and the transitions it
//! reports.

use std::{
    borrow::Cow,
    collections::HashMap,
    fmt,
    future::Future,
    mem::{self, Discriminant},
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use tokio::{
    sync::mpsc,
    task::JoinHandle,
    time::{self, MissedTickBehavior},
};
use tracing::{debug, info, trace, warn};

use super::{
    pinned::PinnedTables,
    probe::{self, ProbeError, ProbeTo},
    state::{Health, HealthState},
    tunnel::{NoTunnel, ProbePath},
};
use crate::model::{Frontend, HealthCheck};

/// `tokio::time::interval` panics on a zero period; validation rejects a
/// zero interval, and the checker probes at most this often regardless.
const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// A backend to check, by its address (the address traffic goes to, not
/// necessarily the one probed: see [`Target::probe_addr`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target {
    pub addr: SocketAddr,
}

impl Target {
    /// Where `check` probes this backend: its IP, on `check.port` if set,
    /// else on the backend's own port.
    pub fn probe_addr(self, check: &HealthCheck) -> SocketAddr {
        SocketAddr::new(self.addr.ip(), check.port.unwrap_or(self.addr.port()))
    }

    /// Where `check` probes this backend by `path`: its own address
    /// ([`probe_addr`](Self::probe_addr)), or through the DSR tunnel the
    /// VIP on the same port, from a socket with the backend's mark; why not,
    /// for a backend no probe can be wrapped for.
    pub fn probe_to(self, check: &HealthCheck, path: ProbePath) -> Result<ProbeTo, NoTunnel> {
        let direct = self.probe_addr(check);
        match path {
            ProbePath::Direct => Ok(direct.into()),
            ProbePath::Tunnel { vip, mark } => Ok(ProbeTo {
                addr: SocketAddr::new(vip, direct.port()),
                mark: Some(mark),
            }),
            ProbePath::Unwrappable(reason) => Err(reason),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.addr.fmt(f)
    }
}

/// One backend of one service that has a health check, as
/// [`super::targets`] lists them for [`HealthChecker::set_targets`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceTarget<'m> {
    pub target: Target,
    pub check: Cow<'m, HealthCheck>,
    /// The frontends of the service that lists it: where a restarted agent
    /// looks for it in the pinned tables ([`PinnedTables::served`]).
    pub frontends: &'m [Frontend],
    /// How its probes reach it (through the DSR tunnel for a `dsr`
    /// service's backend).
    pub path: ProbePath,
}

/// A target of no service in particular, probed directly: no pinned table
/// names it.
impl From<(Target, HealthCheck)> for ServiceTarget<'static> {
    fn from((target, check): (Target, HealthCheck)) -> Self {
        Self {
            target,
            check: Cow::Owned(check),
            frontends: &[],
            path: ProbePath::Direct,
        }
    }
}

/// A target's health changed. Sent once per transition, never for a probe
/// that leaves the health as it was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthChange {
    pub target: Target,
    pub check: HealthCheck,
    /// The path of the probes that changed it: the services whose traffic
    /// takes it are the ones it changes for.
    pub path: ProbePath,
    pub healthy: bool,
    /// Why the last probe failed, when the target went down.
    pub reason: Option<String>,
}

/// What status shows of one checked target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetStatus {
    pub target: Target,
    pub check: HealthCheck,
    /// How it is probed.
    pub path: ProbePath,
    /// The address probed: [`Target::probe_addr`], or the VIP through the
    /// tunnel ([`Target::probe_to`]); the backend's own address when no
    /// probe can go through the tunnel to it.
    pub probe_addr: SocketAddr,
    pub health: Health,
    pub consecutive_successes: u32,
    pub consecutive_failures: u32,
    /// Why the most recent failed probe failed; kept after a recovery so
    /// status can say what went wrong last.
    pub last_error: Option<String>,
}

/// Runs one probe. [`NetProber`] is the real one; tests of code that
/// drives a [`HealthChecker`] can script results with their own.
pub trait Prober: Send + Sync + 'static {
    /// Probes `to` as `check` says, within `check.timeout`.
    fn probe(
        &self,
        to: ProbeTo,
        check: &HealthCheck,
    ) -> impl Future<Output = Result<(), ProbeError>> + Send;
}

/// Probes over the network: [`probe::probe`].
#[derive(Clone, Copy, Debug, Default)]
pub struct NetProber;

impl Prober for NetProber {
    fn probe(
        &self,
        to: ProbeTo,
        check: &HealthCheck,
    ) -> impl Future<Output = Result<(), ProbeError>> + Send {
        probe::probe(&check.probe, to, check.timeout)
    }
}

/// Active health checks of a set of targets, each probed by its own task
/// on the Tokio runtime that called [`HealthChecker::set_targets`].
///
/// A target is checked per (address, check, path): a backend listed by
/// several services with the same check and probe path is probed once, and
/// one checked differently by two services is probed once per check and
/// path, each with its own verdict. [`HealthChecker::is_healthy`] answers
/// for the check a service asks about, on the path its traffic takes: a
/// backend in a `dsr` and a NAT service under one check is probed through
/// the tunnel for the first and directly for the second, and a stopped
/// decapsulation takes it out of the `dsr` service only.
///
/// Transitions arrive on the channel returned by [`HealthChecker::new`].
/// Treat one as a prompt to recompute from [`HealthChecker::is_healthy`],
/// which is always current: a change sent just before a
/// [`set_targets`](HealthChecker::set_targets) may still be queued for a
/// target that is gone.
///
/// Dropping the checker aborts every task; once they are gone the channel
/// reports closed.
#[derive(Debug)]
pub struct HealthChecker<P = NetProber> {
    prober: Arc<P>,
    changes: mpsc::UnboundedSender<HealthChange>,
    /// Per backend address, its (check, path)s in the order they were
    /// first set.
    targets: HashMap<Target, Vec<Checked>>,
    /// What an earlier agent served, for the next
    /// [`set_targets`](Self::set_targets) (see [`Self::recover`]).
    pinned: Option<PinnedTables>,
}

/// One check of one target: probed by its task, or, on a path no probe can
/// take ([`ProbePath::Unwrappable`]), held down with why and no task.
#[derive(Debug)]
struct Checked {
    check: HealthCheck,
    path: ProbePath,
    shared: Arc<Mutex<Shared>>,
    _task: Option<AbortOnDrop>,
}

/// What a check's task updates and the checker reads. The lock is held
/// for a field update or a copy, never across an await.
#[derive(Debug)]
struct Shared {
    state: HealthState,
    last_error: Option<String>,
}

/// Aborts the task when dropped, so that no probing task outlives the
/// target (or the checker) it belongs to.
#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl HealthChecker {
    /// A checker probing over the network, with no target yet, and the
    /// receiving end of its transitions. The channel is unbounded: it
    /// carries transitions only, at most one per target per `interval`.
    pub fn new() -> (Self, mpsc::UnboundedReceiver<HealthChange>) {
        Self::with_prober(NetProber)
    }
}

impl<P: Prober> HealthChecker<P> {
    /// A checker that runs its probes through `prober`.
    pub fn with_prober(prober: P) -> (Self, mpsc::UnboundedReceiver<HealthChange>) {
        let (changes, receiver) = mpsc::unbounded_channel();
        let checker = Self {
            prober: Arc::new(prober),
            changes,
            targets: HashMap::new(),
            pinned: None,
        };
        (checker, receiver)
    }

    /// Checks exactly `targets` from now on; call it on every reload,
    /// before reading [`is_healthy`](Self::is_healthy) for the new model.
    ///
    /// - A (target, check, path) that stays keeps its state and its task: a
    ///   reload neither resets counts nor delays the next probe.
    /// - A removed one's task is aborted at once.
    /// - A new one is probed at once. It starts [`Health::Pending`] (out of
    ///   the table until its first probe passes), except:
    ///   - when the same call removes checks of the same address on the
    ///     same kind of path (direct, or through the tunnel whatever its VIP
    ///     and mark), it takes the worst of their verdicts: a reload that
    ///     only edits a check (its interval, say) neither pulls a live
    ///     backend out nor lets a dead one in. A direct probe's verdict says
    ///     nothing of the tunnel, nor the reverse, so a service that changes
    ///     mode waits for its first probe;
    ///   - on the first call after [`recover`](Self::recover), it starts
    ///     [`Health::Up`] when the earlier agent served it for one of the
    ///     services listing it with that check ([`PinnedTables::served`]);
    ///   - on a path no probe can take ([`ProbePath::Unwrappable`]), it is
    ///     [`Health::Down`] with why, and not probed: it stays so until a
    ///     call gives it another path.
    /// - Duplicates are checked once.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime, when a new target's task cannot be spawned.
    pub fn set_targets<'m>(
        &mut self,
        targets: impl IntoIterator<Item = impl Into<ServiceTarget<'m>>>,
    ) {
        // What an earlier agent served describes the datapath only until
        // this agent's first sync rewrites it: used once.
        let pinned = self.pinned.take();
        // Per address, each check once, and whether any service listing the
        // address with that check was served by the earlier agent.
        let mut wanted: HashMap<Target, Vec<(HealthCheck, ProbePath, bool)>> = HashMap::new();
        for wanted_target in targets {
            let ServiceTarget {
                target,
                check,
                frontends,
                path,
            } = wanted_target.into();
            let served = pinned
                .as_ref()
                .is_some_and(|pinned| pinned.served(frontends, target.addr));
            let checks = wanted.entry(target).or_default();
            match checks
                .iter_mut()
                .find(|(known, known_path, _)| *known == *check && *known_path == path)
            {
                Some((.., was_served)) => *was_served |= served,
                None => checks.push((check.into_owned(), path, served)),
            }
        }

        // The worst verdict of each address's removed checks, per kind of
        // path.
        let mut removed: HashMap<(Target, Discriminant<ProbePath>), Health> = HashMap::new();
        self.targets.retain(|target, running| {
            let keep = wanted.get(target).map_or(&[][..], Vec::as_slice);
            running.retain(|checked| {
                let stays = keep
                    .iter()
                    .any(|(check, path, _)| *check == checked.check && *path == checked.path);
                if !stays {
                    let health = checked.health();
                    removed
                        .entry((*target, mem::discriminant(&checked.path)))
                        .and_modify(|worst| *worst = (*worst).max(health))
                        .or_insert(health);
                    debug!(%target, check = ?checked.check, path = %checked.path, "health check stopped");
                }
                stays
            });
            !running.is_empty()
        });

        for (target, checks) in wanted {
            for (check, path, served) in checks {
                let running = self.targets.get(&target).map_or(&[][..], Vec::as_slice);
                if running
                    .iter()
                    .any(|checked| checked.check == check && checked.path == path)
                {
                    continue;
                }
                let initial = match removed.get(&(target, mem::discriminant(&path))) {
                    Some(&inherited) => inherited,
                    None if served => Health::Up,
                    None => Health::Pending,
                };
                // How a `dsr` backend is probed is news to an operator; a
                // direct probe is what every other check does.
                if path == ProbePath::Direct {
                    debug!(%target, ?check, %initial, %path, "health check started");
                } else {
                    info!(%target, ?check, %initial, %path, "health check started");
                }
                let checked = self.start(target, check, path, initial);
                self.targets.entry(target).or_default().push(checked);
            }
        }
    }

    /// Hands the checker what an earlier agent served, read from the pinned
    /// maps: at the next [`set_targets`](Self::set_targets) (and that one
    /// only), a new target the earlier agent served starts up rather than
    /// pending, so that a restart pulls no serving backend out of its table
    /// while it waits for a probe. A backend the earlier agent had taken
    /// out, or never had, still waits for its first probe.
    pub fn recover(&mut self, pinned: PinnedTables) {
        self.pinned = (!pinned.is_empty()).then_some(pinned);
    }

    /// Starts probing `target` under `check` by `path`, from `initial`; or,
    /// when no probe can take `path`, holds it down with why.
    fn start(
        &self,
        target: Target,
        check: HealthCheck,
        path: ProbePath,
        initial: Health,
    ) -> Checked {
        let to = match target.probe_to(&check, path) {
            Ok(to) => to,
            Err(reason) => return self.hold_down(target, check, path, initial, reason),
        };
        let shared = Arc::new(Mutex::new(Shared {
            state: HealthState::starting(initial, check.rise, check.fall),
            last_error: None,
        }));
        let task = tokio::spawn(run(
            Arc::clone(&self.prober),
            target,
            check.clone(),
            (path, to),
            Arc::clone(&shared),
            self.changes.clone(),
        ));
        Checked {
            check,
            path,
            shared,
            _task: Some(AbortOnDrop(task)),
        }
    }

    /// A check of a backend no probe can be wrapped for (nor its traffic):
    /// down from the start, with `reason` as its last error, and no task.
    /// Probing would only fail again every interval, so nothing changes it
    /// until a configuration gives it another path (a reload that keeps
    /// the path keeps the check). Reported as a change unless it starts
    /// down already.
    fn hold_down(
        &self,
        target: Target,
        check: HealthCheck,
        path: ProbePath,
        initial: Health,
        reason: NoTunnel,
    ) -> Checked {
        let reason = ProbeError::NoTunnel {
            backend: target.addr,
            reason,
        }
        .reason();
        warn!(%target, %path, reason, "backend down; it is not probed until the configuration changes");
        if initial != Health::Down {
            let change = HealthChange {
                target,
                check: check.clone(),
                path,
                healthy: false,
                reason: Some(reason.clone()),
            };
            if self.changes.send(change).is_err() {
                trace!(%target, "health change dropped: nobody is listening");
            }
        }
        let shared = Arc::new(Mutex::new(Shared {
            state: HealthState::starting(Health::Down, check.rise, check.fall),
            last_error: Some(reason),
        }));
        Checked {
            check,
            path,
            shared,
            _task: None,
        }
    }

    /// The health of `addr` under `check` probed by `path`, or `None` when
    /// that is not being checked.
    pub fn health(&self, addr: SocketAddr, check: &HealthCheck, path: ProbePath) -> Option<Health> {
        self.targets
            .get(&Target { addr })?
            .iter()
            .find(|checked| checked.check == *check && checked.path == path)
            .map(Checked::health)
    }

    /// The health of `addr` under `check` probed by `path`, as traffic
    /// sees it: what is not checked counts as up (a backend without a
    /// health check takes traffic).
    pub fn verdict(&self, addr: SocketAddr, check: &HealthCheck, path: ProbePath) -> Health {
        self.health(addr, check, path).unwrap_or(Health::Up)
    }

    /// Whether `addr` passes `check` probed by `path`
    /// ([`verdict`](Self::verdict) is up): a pending target does not.
    pub fn is_healthy(&self, addr: SocketAddr, check: &HealthCheck, path: ProbePath) -> bool {
        self.verdict(addr, check, path).is_up()
    }

    /// Every checked target, ordered by address, then by the order its
    /// (check, path)s were first set.
    pub fn snapshot(&self) -> Vec<TargetStatus> {
        let mut targets: Vec<_> = self.targets.iter().collect();
        targets.sort_unstable_by_key(|(target, _)| **target);
        targets
            .into_iter()
            .flat_map(|(target, running)| {
                running.iter().map(|checked| {
                    let shared = checked.lock();
                    TargetStatus {
                        target: *target,
                        check: checked.check.clone(),
                        path: checked.path,
                        probe_addr: target
                            .probe_to(&checked.check, checked.path)
                            .map_or(target.addr, |to| to.addr),
                        health: shared.state.health(),
                        consecutive_successes: shared.state.consecutive_successes(),
                        consecutive_failures: shared.state.consecutive_failures(),
                        last_error: shared.last_error.clone(),
                    }
                })
            })
            .collect()
    }
}

impl Checked {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        // A panic cannot leave `Shared` half-updated (each update is one
        // call on plain data), so a poisoned lock still holds good state.
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn health(&self) -> Health {
        self.lock().state.health()
    }
}

/// Probes `target` at `to` (the way `path` goes) every `check.interval`
/// until aborted. Probes never
/// overlap: a probe that outlasts the interval delays the next tick
/// (`MissedTickBehavior::Delay`) rather than triggering a burst.
async fn run<P: Prober>(
    prober: Arc<P>,
    target: Target,
    check: HealthCheck,
    (path, to): (ProbePath, ProbeTo),
    shared: Arc<Mutex<Shared>>,
    changes: mpsc::UnboundedSender<HealthChange>,
) {
    let probe_addr = to.addr;
    // The first tick completes at once: a new target is probed right away.
    let mut ticker = time::interval(check.interval.max(MIN_INTERVAL));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let reason = prober
            .probe(to, &check)
            .await
            .err()
            .map(|error| error.reason());
        if let Some(reason) = &reason {
            debug!(%target, %path, %probe_addr, reason, "health probe failed");
        }
        // The state is updated before the change is sent, so a receiver that
        // asks `is_healthy` sees the new health.
        let transition = {
            let mut shared = shared.lock().unwrap_or_else(PoisonError::into_inner);
            if reason.is_some() {
                shared.last_error.clone_from(&reason);
            }
            shared.state.record(reason.is_none())
        };
        let Some(health) = transition else {
            continue;
        };
        match health {
            Health::Down => warn!(%target, %path, %probe_addr, reason, "backend down"),
            Health::Up => info!(%target, %path, %probe_addr, "backend up"),
            // A probe settles a pending target: it never turns pending.
            Health::Pending => {}
        }
        let change = HealthChange {
            target,
            check: check.clone(),
            path,
            healthy: health.is_up(),
            reason: if health.is_up() { None } else { reason },
        };
        if changes.send(change).is_err() {
            trace!(%target, "health change dropped: nobody is listening");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::{
        health::{
            ProbePath::Direct,
            scripted::{DEADLINE, ScriptedProber},
        },
        model::Probe,
    };

    fn addr(last: u8, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, last)), port)
    }

    fn check(fall: u32) -> HealthCheck {
        HealthCheck {
            probe: Probe::Tcp,
            port: None,
            interval: Duration::from_millis(10),
            timeout: Duration::from_millis(10),
            rise: 2,
            fall,
        }
    }

    async fn next_change(changes: &mut mpsc::UnboundedReceiver<HealthChange>) -> HealthChange {
        time::timeout(DEADLINE, changes.recv())
            .await
            .expect("no health change within the deadline")
            .expect("the checker is alive")
    }

    /// `set_targets` spawns the probing tasks but does not yield: until the
    /// test awaits, no probe has run (the runtime is single-threaded), so
    /// what a target starts as can be read before any probe.
    #[tokio::test]
    async fn a_new_target_is_pending_until_its_first_probe_passes() {
        let prober = ScriptedProber::new();
        let (mut checker, mut changes) = HealthChecker::with_prober(Arc::clone(&prober));
        let a = addr(1, 80);
        checker.set_targets([(Target { addr: a }, check(3))]);
        assert_eq!(checker.health(a, &check(3), Direct), Some(Health::Pending));
        assert_eq!(checker.verdict(a, &check(3), Direct), Health::Pending);
        assert!(
            !checker.is_healthy(a, &check(3), Direct),
            "pending takes no traffic"
        );
        assert_eq!(prober.count(a), 0, "not probed yet");

        let change = next_change(&mut changes).await;
        assert_eq!((change.target.addr, change.healthy), (a, true));
        assert_eq!(prober.count(a), 1, "one pass is enough, not `rise`");
        assert!(checker.is_healthy(a, &check(3), Direct));
    }

    #[tokio::test]
    async fn a_new_target_whose_first_probe_fails_is_down_at_once() {
        let prober = ScriptedProber::new();
        let (mut checker, mut changes) = HealthChecker::with_prober(Arc::clone(&prober));
        let a = addr(1, 80);
        prober.set_failing(a, true);
        checker.set_targets([(Target { addr: a }, check(3))]);

        let change = next_change(&mut changes).await;
        assert_eq!((change.target.addr, change.healthy), (a, false));
        assert_eq!(prober.count(a), 1, "it was never up: no `fall` to wait");
        assert!(change.reason.is_some());
        assert_eq!(checker.health(a, &check(3), Direct), Some(Health::Down));
    }

    #[tokio::test]
    async fn a_failing_target_goes_down_and_comes_back() {
        let prober = ScriptedProber::new();
        let (mut checker, mut changes) = HealthChecker::with_prober(Arc::clone(&prober));
        let a = addr(1, 80);
        checker.set_targets([(Target { addr: a }, check(3))]);
        assert!(next_change(&mut changes).await.healthy, "up once probed");

        prober.set_failing(a, true);
        let passed = prober.count(a);
        let change = next_change(&mut changes).await;
        assert_eq!(change.target, Target { addr: a });
        assert!(!change.healthy);
        assert_eq!(
            change.reason.as_deref(),
            Some("198.18.0.1:80 answered HTTP status 503; a healthy backend answers 2xx or 3xx")
        );
        assert!(!checker.is_healthy(a, &check(3), Direct));
        assert!(
            prober.count(a) >= passed + 3,
            "down only after `fall` probes"
        );

        prober.set_failing(a, false);
        let change = next_change(&mut changes).await;
        assert!(change.healthy);
        assert_eq!(change.reason, None);
        let [status] = checker.snapshot().try_into().unwrap();
        assert_eq!(status.health, Health::Up);
        assert!(status.consecutive_successes >= 2);
        assert!(
            status.last_error.is_some(),
            "the last error outlives recovery"
        );
    }

    #[tokio::test]
    async fn set_targets_keeps_the_state_of_targets_that_stay() {
        let prober = ScriptedProber::new();
        let (mut checker, mut changes) = HealthChecker::with_prober(Arc::clone(&prober));
        let (a, b) = (addr(1, 80), addr(2, 80));
        prober.set_failing(a, true);
        checker.set_targets([(Target { addr: a }, check(2))]);
        assert!(!next_change(&mut changes).await.healthy);
        let failures = checker.snapshot()[0].consecutive_failures;

        checker.set_targets([
            (Target { addr: b }, check(2)),
            (Target { addr: a }, check(2)),
        ]);
        assert!(
            !checker.is_healthy(a, &check(2), Direct),
            "a reload does not revive a"
        );
        assert_eq!(checker.health(b, &check(2), Direct), Some(Health::Pending));
        let seen = prober.count(a);
        prober.wait_for_probes(a, seen + 3).await;
        let status = checker
            .snapshot()
            .into_iter()
            .find(|s| s.target.addr == a)
            .unwrap();
        assert!(
            status.consecutive_failures >= failures + 3,
            "the failure run went on across the reload: {status:?}"
        );
        while let Ok(change) = changes.try_recv() {
            assert_eq!(change.target.addr, b, "no second transition for a");
        }
    }

    #[tokio::test]
    async fn set_targets_stops_removed_targets() {
        let prober = ScriptedProber::new();
        let (mut checker, _changes) = HealthChecker::with_prober(Arc::clone(&prober));
        let (a, b) = (addr(1, 80), addr(2, 80));
        checker.set_targets([
            (Target { addr: a }, check(2)),
            (Target { addr: b }, check(2)),
        ]);
        prober.wait_for_probes(b, 2).await;

        checker.set_targets([(Target { addr: a }, check(2))]);
        // The runtime is single-threaded and this task has not yielded since
        // the abort, so b cannot be mid-probe: its count is final.
        let b_probes = prober.count(b);
        prober.wait_for_probes(a, prober.count(a) + 5).await;
        assert_eq!(prober.count(b), b_probes, "b was probed after its removal");
        assert_eq!(checker.health(b, &check(2), Direct), None);
        assert_eq!(checker.snapshot().len(), 1);
    }

    #[tokio::test]
    async fn dropping_the_checker_ends_every_task() {
        let prober = ScriptedProber::new();
        let (mut checker, mut changes) = HealthChecker::with_prober(Arc::clone(&prober));
        checker.set_targets((1..=4).map(|i| (Target { addr: addr(i, 80) }, check(2))));
        prober.wait_for_probes(addr(4, 80), 1).await;
        drop(checker);
        // Every task holds a sender: the channel closes only once all of
        // them are gone.
        let closed =
            time::timeout(DEADLINE, async { while changes.recv().await.is_some() {} }).await;
        assert_eq!(closed, Ok(()));
    }

    #[tokio::test]
    async fn one_task_per_address_and_check() {
        let prober = ScriptedProber::new();
        let (mut checker, _changes) = HealthChecker::with_prober(Arc::clone(&prober));
        let a = addr(1, 80);
        let on_8080 = HealthCheck {
            port: Some(8080),
            ..check(2)
        };
        checker.set_targets([
            (Target { addr: a }, check(2)),
            (Target { addr: a }, check(2)),
            (Target { addr: a }, on_8080.clone()),
        ]);
        prober.set_failing(addr(1, 8080), true);

        let statuses = checker.snapshot();
        assert_eq!(statuses.len(), 2, "{statuses:?}");
        assert_eq!(statuses[0].probe_addr, a);
        assert_eq!(statuses[1].probe_addr, addr(1, 8080));
        prober.wait_for_probes(a, 1).await;
        prober.wait_for_probes(addr(1, 8080), 1).await;
        assert!(checker.is_healthy(a, &check(2), Direct));
        assert!(
            !checker.is_healthy(a, &on_8080, Direct),
            "each check has its own verdict"
        );
    }

    #[tokio::test]
    async fn an_edited_check_keeps_the_verdict_of_the_one_it_replaces() {
        let prober = ScriptedProber::new();
        let (mut checker, mut changes) = HealthChecker::with_prober(Arc::clone(&prober));
        let (a, b, c) = (addr(1, 80), addr(2, 80), addr(3, 80));
        prober.set_failing(a, true);
        checker.set_targets([
            (Target { addr: a }, check(2)),
            (Target { addr: b }, check(2)),
        ]);
        // One change each: a down, b up.
        let mut first = [
            next_change(&mut changes).await,
            next_change(&mut changes).await,
        ]
        .map(|change| (change.target.addr, change.healthy));
        first.sort_unstable();
        assert_eq!(first, [(a, false), (b, true)]);

        // Not awaited between the two calls: c is not probed yet.
        checker.set_targets([
            (Target { addr: a }, check(2)),
            (Target { addr: b }, check(2)),
            (Target { addr: c }, check(2)),
        ]);
        checker.set_targets([
            (Target { addr: a }, check(3)),
            (Target { addr: b }, check(3)),
            (Target { addr: c }, check(3)),
        ]);
        assert_eq!(checker.health(a, &check(3), Direct), Some(Health::Down));
        assert_eq!(checker.health(b, &check(3), Direct), Some(Health::Up));
        assert_eq!(checker.health(c, &check(3), Direct), Some(Health::Pending));

        prober.set_failing(a, false);
        let mut changed = Vec::new();
        while !changed.contains(&a) {
            let change = next_change(&mut changes).await;
            assert!(change.healthy, "{change:?}");
            assert_eq!(change.check, check(3));
            changed.push(change.target.addr);
        }
        assert!(!changed.contains(&b), "b stayed up: {changed:?}");
    }

    /// A backend of a `dsr` and of a NAT service under one check, as the
    /// checker is given it: the tunnel path at the VIP, `mark` 7.
    fn both_paths(addr: SocketAddr, check: HealthCheck) -> [ServiceTarget<'static>; 2] {
        let direct = ServiceTarget::from((Target { addr }, check));
        let tunnel = ServiceTarget {
            path: tunnel(),
            ..direct.clone()
        };
        [direct, tunnel]
    }

    fn tunnel() -> ProbePath {
        ProbePath::Tunnel {
            vip: IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1)),
            mark: 0x584c_0007,
        }
    }

    #[tokio::test]
    async fn one_check_of_one_backend_has_a_verdict_per_path() {
        let prober = ScriptedProber::new();
        let (mut checker, mut changes) = HealthChecker::with_prober(Arc::clone(&prober));
        let a = addr(1, 80);
        // Its decapsulation stopped: the VIP does not answer through the
        // tunnel, its own address does.
        prober.set_failing(
            SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1)), 80),
            true,
        );
        checker.set_targets(both_paths(a, check(2)));
        let mut seen = [
            next_change(&mut changes).await,
            next_change(&mut changes).await,
        ]
        .map(|change| (change.path, change.healthy));
        seen.sort_unstable();
        assert_eq!(seen, [(Direct, true), (tunnel(), false)]);

        assert_eq!(checker.health(a, &check(2), Direct), Some(Health::Up));
        assert_eq!(checker.health(a, &check(2), tunnel()), Some(Health::Down));
        assert!(
            checker.is_healthy(a, &check(2), Direct),
            "the NAT service's"
        );
        assert!(
            !checker.is_healthy(a, &check(2), tunnel()),
            "the dsr service's"
        );
        let rows: Vec<_> = checker
            .snapshot()
            .iter()
            .map(|s| (s.path, s.health))
            .collect();
        assert_eq!(rows, [(Direct, Health::Up), (tunnel(), Health::Down)]);
    }

    #[tokio::test]
    async fn an_edited_check_keeps_each_paths_verdict_and_a_new_kind_of_path_starts_pending() {
        let prober = ScriptedProber::new();
        let (mut checker, mut changes) = HealthChecker::with_prober(Arc::clone(&prober));
        let a = addr(1, 80);
        prober.set_failing(
            SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1)), 80),
            true,
        );
        checker.set_targets(both_paths(a, check(2)));
        next_change(&mut changes).await;
        next_change(&mut changes).await;

        // Not awaited from here on: no probe runs.
        checker.set_targets(both_paths(a, check(3)));
        assert_eq!(checker.health(a, &check(3), Direct), Some(Health::Up));
        assert_eq!(checker.health(a, &check(3), tunnel()), Some(Health::Down));

        // The NAT service turns `dsr`: a direct verdict says nothing of the
        // tunnel.
        let [_, tunnelled] = both_paths(a, check(3));
        checker.set_targets([ServiceTarget {
            path: ProbePath::Tunnel {
                vip: IpAddr::V4(Ipv4Addr::new(198, 19, 0, 2)),
                mark: 0x584c_0007,
            },
            ..tunnelled
        }]);
        let [status] = checker.snapshot().try_into().unwrap();
        assert_eq!(
            status.health,
            Health::Down,
            "a tunnel path keeps a tunnel path's"
        );
        checker.set_targets(both_paths(a, check(3)).into_iter().take(1));
        assert_eq!(checker.health(a, &check(3), Direct), Some(Health::Pending));
    }

    #[tokio::test]
    async fn a_tunnel_probe_goes_to_the_vip_and_a_backend_it_cannot_reach_fails_with_why() {
        let prober = ScriptedProber::new();
        let (mut checker, mut changes) = HealthChecker::with_prober(Arc::clone(&prober));
        let (tunnelled, unwrappable) = (addr(1, 80), addr(2, 80));
        let vip = IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1));
        let on_8080 = HealthCheck {
            port: Some(8080),
            ..check(2)
        };
        let path = ProbePath::Tunnel {
            vip,
            mark: 0x584c_0007,
        };
        let why = NoTunnel::NoEncapSource {
            family: crate::health::tunnel::Family::V4,
        };
        checker.set_targets([
            ServiceTarget {
                path,
                ..ServiceTarget::from((Target { addr: tunnelled }, on_8080.clone()))
            },
            ServiceTarget {
                path: ProbePath::Unwrappable(why),
                ..ServiceTarget::from((Target { addr: unwrappable }, check(2)))
            },
        ]);
        let statuses = checker.snapshot();
        assert_eq!(
            (statuses[0].path, statuses[0].probe_addr),
            (path, SocketAddr::new(vip, 8080)),
            "the VIP, on the check's port"
        );
        assert_eq!(statuses[1].probe_addr, unwrappable);

        let mut seen = Vec::new();
        while seen.len() < 2 {
            let change = next_change(&mut changes).await;
            seen.push((change.target.addr, change.healthy, change.reason));
        }
        seen.sort();
        assert_eq!(seen[0], (tunnelled, true, None));
        assert_eq!(seen[1].0, unwrappable);
        assert!(!seen[1].1);
        let reason = seen[1].2.clone().unwrap_or_default();
        assert!(
            reason.starts_with(
                "backend 198.18.0.2:80 cannot be probed through the DSR tunnel: the agent has no \
                 --encap-source of the backend's family (IPv4)"
            ),
            "{reason}"
        );
        assert_eq!(prober.count(SocketAddr::new(vip, 8080)), 1);
        assert_eq!(
            prober.marks.lock().unwrap()[&SocketAddr::new(vip, 8080)],
            Some(0x584c_0007),
            "from a socket with the backend's mark"
        );
        assert_eq!(prober.count(tunnelled), 0, "not its own address");
        assert_eq!(prober.count(unwrappable), 0, "nothing sent");
    }

    #[tokio::test]
    async fn a_backend_no_probe_can_be_wrapped_for_is_held_down_unprobed_until_its_path_changes() {
        let prober = ScriptedProber::new();
        let (mut checker, mut changes) = HealthChecker::with_prober(Arc::clone(&prober));
        let (a, b) = (addr(1, 80), addr(2, 80));
        let unwrappable = ProbePath::Unwrappable(NoTunnel::NoVip);
        let targets = |a_path| {
            [
                ServiceTarget {
                    path: a_path,
                    ..ServiceTarget::from((Target { addr: a }, check(2)))
                },
                ServiceTarget::from((Target { addr: b }, check(2))),
            ]
        };
        checker.set_targets(targets(unwrappable));
        assert_eq!(
            checker.health(a, &check(2), unwrappable),
            Some(Health::Down),
            "down at once, not pending"
        );
        let change = next_change(&mut changes).await;
        assert_eq!((change.target.addr, change.healthy), (a, false));
        assert!(next_change(&mut changes).await.healthy, "b is up");

        // b's probes run on, a's never start.
        prober.wait_for_probes(b, 5).await;
        checker.set_targets(targets(unwrappable));
        prober.wait_for_probes(b, 10).await;
        let a_status = checker
            .snapshot()
            .into_iter()
            .find(|s| s.target.addr == a)
            .unwrap();
        assert_eq!(
            (
                a_status.health,
                a_status.consecutive_failures,
                a_status.consecutive_successes
            ),
            (Health::Down, 0, 0),
            "no probe ran: {a_status:?}"
        );
        assert_eq!(
            a_status.last_error.as_deref(),
            Some(
                "backend 198.18.0.1:80 cannot be probed through the DSR tunnel: the service has \
                 no VIP frontend a packet to the backend can be wrapped from (an IPv4 backend \
                 needs an IPv4 VIP: IPv6 is not wrapped in IPv4)"
            )
        );
        assert_eq!(prober.count(a), 0);
        assert!(changes.try_recv().is_err(), "nothing changed since");

        // A configuration that gives it a VIP: probed, and up.
        let [_, tunnelled] = both_paths(a, check(2));
        checker.set_targets([tunnelled]);
        assert_eq!(
            checker.health(a, &check(2), tunnel()),
            Some(Health::Pending)
        );
        let change = next_change(&mut changes).await;
        assert_eq!(
            (change.target.addr, change.path, change.healthy),
            (a, tunnel(), true)
        );
    }

    fn frontend(address: &str) -> Frontend {
        let address: SocketAddr = address.parse().unwrap();
        Frontend {
            addr: address.ip(),
            port: address.port(),
            protocol: crate::model::Protocol::Tcp,
            kind: crate::model::FrontendKind::Vip,
            snat_remote: false,
            source_ranges_only: false,
        }
    }

    /// A target of the service with `frontends`.
    fn of_service<'m>(
        addr: SocketAddr,
        check: HealthCheck,
        frontends: &'m [Frontend],
    ) -> ServiceTarget<'m> {
        ServiceTarget {
            target: Target { addr },
            check: Cow::Owned(check),
            frontends,
            path: ProbePath::Direct,
        }
    }

    #[tokio::test]
    async fn after_a_restart_what_the_earlier_agent_served_starts_up_once() {
        let prober = ScriptedProber::new();
        let (mut checker, _changes) = HealthChecker::with_prober(Arc::clone(&prober));
        let (served, retired, new, draining, elsewhere) = (
            addr(1, 80),
            addr(2, 80),
            addr(3, 80),
            addr(4, 80),
            addr(5, 80),
        );
        let (web_vip, api_vip) = ("198.19.0.1:80", "198.19.0.2:80");
        checker.recover(PinnedTables::new(
            [
                ((web_vip.parse().unwrap(), crate::model::Protocol::Tcp), 1),
                ((api_vip.parse().unwrap(), crate::model::Protocol::Tcp), 2),
            ],
            [
                (10, served, true),
                (11, retired, false),
                (12, draining, true),
                (13, elsewhere, true),
            ],
            [(1, vec![10, 10]), (2, vec![13])],
        ));
        let (web, api) = ([frontend(web_vip)], [frontend(api_vip)]);
        // Nothing awaited from here on: no probe runs, so every health read
        // is the one the target started with.
        checker.set_targets([
            of_service(served, check(2), &web),
            of_service(retired, check(2), &web),
            of_service(new, check(2), &web),
            of_service(draining, check(2), &web),
            // In api's table, and web's now too (added while no agent ran):
            // its check in web is another one than api's.
            of_service(elsewhere, check(3), &web),
            of_service(elsewhere, check(2), &api),
        ]);
        assert_eq!(
            checker.health(served, &check(2), Direct),
            Some(Health::Up),
            "in its table"
        );
        assert_eq!(
            checker.health(retired, &check(2), Direct),
            Some(Health::Pending),
            "it was down"
        );
        assert_eq!(
            checker.health(new, &check(2), Direct),
            Some(Health::Pending),
            "never served"
        );
        assert_eq!(
            checker.health(draining, &check(2), Direct),
            Some(Health::Up),
            "its flows live on"
        );
        assert_eq!(
            checker.health(elsewhere, &check(2), Direct),
            Some(Health::Up),
            "api's"
        );
        assert_eq!(
            checker.health(elsewhere, &check(3), Direct),
            Some(Health::Pending),
            "not in web's table"
        );

        // Once: the next reload's new checks start pending, served or not.
        checker.set_targets([
            of_service(served, check(2), &web),
            of_service(served, check(4), &web),
        ]);
        assert_eq!(
            checker.health(served, &check(2), Direct),
            Some(Health::Up),
            "kept"
        );
        assert_eq!(
            checker.health(served, &check(4), Direct),
            Some(Health::Pending)
        );
    }
}
