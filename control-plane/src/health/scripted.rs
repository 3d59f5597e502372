//! A [`Prober`] for tests of code that drives a [`HealthChecker`]: it
//! answers as each test scripts it, sends nothing, and counts its probes.
//!
//! [`HealthChecker`]: super::HealthChecker

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{sync::watch, time};

use super::{ProbeError, ProbeTo, Prober};
use crate::model::HealthCheck;

/// Long enough for a test waiting on a few 10 ms probes on a busy
/// machine; only reached when the behaviour is wrong.
pub(crate) const DEADLINE: Duration = Duration::from_secs(10);

/// Answers each probe address as scripted (default: pass) and counts
/// the probes, publishing the counts so tests can wait on them.
#[derive(Debug)]
pub(crate) struct ScriptedProber {
    failing: Mutex<HashSet<SocketAddr>>,
    probes: watch::Sender<HashMap<SocketAddr, u32>>,
    /// The mark of the last probe to each address.
    pub(crate) marks: Mutex<HashMap<SocketAddr, Option<u32>>>,
}

impl ScriptedProber {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            failing: Mutex::new(HashSet::new()),
            probes: watch::Sender::new(HashMap::new()),
            marks: Mutex::new(HashMap::new()),
        })
    }

    pub(crate) fn set_failing(&self, addr: SocketAddr, failing: bool) {
        let mut set = self.failing.lock().unwrap();
        if failing {
            set.insert(addr);
        } else {
            set.remove(&addr);
        }
    }

    pub(crate) fn count(&self, addr: SocketAddr) -> u32 {
        self.probes.borrow().get(&addr).copied().unwrap_or(0)
    }

    /// Waits until `addr` has been probed `n` times in all.
    pub(crate) async fn wait_for_probes(&self, addr: SocketAddr, n: u32) {
        let mut probes = self.probes.subscribe();
        time::timeout(
            DEADLINE,
            probes.wait_for(|counts| counts.get(&addr).copied().unwrap_or(0) >= n),
        )
        .await
        .unwrap_or_else(|_| panic!("{addr} not probed {n} times within {DEADLINE:?}"))
        .unwrap();
    }
}

/// The checker owns a prober; tests keep a second handle to script it.
impl Prober for Arc<ScriptedProber> {
    fn probe(
        &self,
        to: ProbeTo,
        _check: &HealthCheck,
    ) -> impl Future<Output = Result<(), ProbeError>> + Send {
        let addr = to.addr;
        self.marks.lock().unwrap().insert(addr, to.mark);
        self.probes
            .send_modify(|counts| *counts.entry(addr).or_default() += 1);
        let failing = self.failing.lock().unwrap().contains(&addr);
        async move {
            if failing {
                Err(ProbeError::Status { addr, code: 503 })
            } else {
                Ok(())
            }
        }
    }
}
