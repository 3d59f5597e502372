//! The operator's drains: backends taken out of new flows through the admin
//! API (`xlb drain`), on top of what the source says. They are the admin
//! API's part of the model: they outlive reloads and, kept in
//! `drains.json` in the agent's state directory, agent restarts, as the
//! pinned datapath does. The state directory is a runtime one (`/run/xlb`
//! by default, a tmpfs), so that they end with a reboot, as the pinned maps
//! do.
//!
//! A drain whose backend no service has (the configuration dropped it, or
//! the service named) is kept until `xlb undrain`: a box drained for
//! maintenance and taken out of the file meanwhile comes back drained, as
//! its operator left it. `xlb status`, `xlb backend list` and the log say
//! so.

use std::{
    borrow::Cow,
    collections::{BTreeMap, BTreeSet},
    fs::{self, File, OpenOptions},
    io::{self, Write as _},
    net::SocketAddr,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::dir_lock::{self, DirLock};
use crate::{
    api::{DrainEntryView, DrainSource, DrainUnchanged, DrainsView},
    model::{BackendState, Model, ServiceName},
};

/// A drain: the backend at `.1`, in service `.0`, or (None) in every
/// service that has it.
pub(crate) type Drain = (Option<ServiceName>, SocketAddr);

/// The file the drains are kept in, in the state directory.
const FILE_NAME: &str = "drains.json";
/// Appended to the name of a file that could not be restored: it is kept
/// for a look rather than overwritten by the next drain.
const REJECTED_SUFFIX: &str = ".rejected";
/// The layout of the file this agent writes and reads.
const FILE_VERSION: u32 = 1;

/// The state directory: `--state-dir`, else the directory of the admin
/// socket (`/run/xlb` by default), which is already one per agent.
pub(crate) fn state_dir(flag: Option<&Path>, admin_socket: &Path) -> PathBuf {
    flag.map_or_else(
        || {
            admin_socket
                .parent()
                .filter(|dir| !dir.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf()
        },
        Path::to_path_buf,
    )
}

/// True when `drains` drain the backend at `addr` in service `name`.
fn drained(drains: &BTreeSet<Drain>, name: &ServiceName, addr: SocketAddr) -> bool {
    drains.contains(&(None, addr)) || drains.contains(&(Some(name.clone()), addr))
}

/// `model` with `drains` applied: an active backend drained in its service
/// or everywhere is draining. The model itself when nothing is drained: no
/// copy of 10 000 services per sync.
pub(crate) fn with_drains<'m>(model: &'m Model, drains: &BTreeSet<Drain>) -> Cow<'m, Model> {
    if drains.is_empty() {
        return Cow::Borrowed(model);
    }
    let mut model = model.clone();
    for (name, service) in &mut model.services {
        for backend in &mut service.backends {
            backend.state = drained_state(drains, name, backend.addr, backend.state);
        }
    }
    Cow::Owned(model)
}

/// The state of the backend at `addr` of service `name`, `state` in its
/// source, with `drains` applied.
pub(crate) fn drained_state(
    drains: &BTreeSet<Drain>,
    name: &ServiceName,
    addr: SocketAddr,
    state: BackendState,
) -> BackendState {
    if state == BackendState::Active && drained(drains, name, addr) {
        BackendState::Draining
    } else {
        state
    }
}

/// Who drains the backend at `addr` of service `name`, whose source says
/// it is in `state`: the file, `drains`, both or neither.
pub(crate) fn sources(
    drains: &BTreeSet<Drain>,
    name: &ServiceName,
    addr: SocketAddr,
    state: BackendState,
) -> Vec<DrainSource> {
    let mut sources = Vec::new();
    if state == BackendState::Draining {
        sources.push(DrainSource::File);
    }
    if drained(drains, name, addr) {
        sources.push(DrainSource::Admin);
    }
    sources
}

/// What a drain or undrain request does ([`apply`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Applied {
    /// The drains after it.
    pub(crate) drains: BTreeSet<Drain>,
    /// The services whose backend left or rejoined new flows.
    pub(crate) changed: Vec<ServiceName>,
    /// The services the request covers where nothing changed, and why.
    pub(crate) unchanged: Vec<(ServiceName, DrainUnchanged)>,
    /// The drains an undrain removed that applied to no service.
    pub(crate) forgotten: Vec<Drain>,
}

/// Drains (`drain`) or undrains backend `addr` in service `only` or
/// everywhere, from `before`, the backend's services and their states
/// taken from `model` (the source's, without drains).
pub(crate) fn apply(
    before: &BTreeSet<Drain>,
    model: &Model,
    addr: SocketAddr,
    drain: bool,
    only: Option<&ServiceName>,
) -> Applied {
    // Every service with the backend, and the backend's state there.
    let serving: Vec<(&ServiceName, BackendState)> = model
        .services
        .iter()
        .filter_map(|(name, service)| {
            let backend = service.backends.iter().find(|b| b.addr == addr)?;
            Some((name, backend.state))
        })
        .collect();
    let mut drains = before.clone();
    match (drain, only) {
        (true, only) => {
            drains.insert((only.cloned(), addr));
        }
        // Undraining everywhere also lifts per-service drains.
        (false, None) => drains.retain(|(_, a)| *a != addr),
        // Undraining in one service of a backend drained everywhere: it
        // stays drained in the others.
        (false, Some(one)) => {
            if serving.iter().any(|(name, _)| *name == one) && drains.remove(&(None, addr)) {
                drains.extend(
                    serving
                        .iter()
                        .map(|(name, _)| (Some((*name).clone()), addr)),
                );
            }
            drains.remove(&(Some(one.clone()), addr));
        }
    }
    let mut applied = Applied::default();
    for (name, state) in serving {
        let (was, is) = (drained(before, name, addr), drained(&drains, name, addr));
        // Only an active backend is drained: the file's drain, or its
        // terminating, holds whatever the admin API asks.
        if was != is && state == BackendState::Active {
            applied.changed.push(name.clone());
        } else if only.is_none_or(|o| o == name) {
            let reason = match state {
                _ if drain && was => DrainUnchanged::AlreadyDrained,
                BackendState::Draining => DrainUnchanged::DrainedByFile,
                BackendState::Terminating => DrainUnchanged::Terminating,
                // A new drain of an active backend changes it: only an
                // undrain of one nothing drains leaves it as it was.
                BackendState::Active => DrainUnchanged::NotDrained,
            };
            applied.unchanged.push((name.clone(), reason));
        }
    }
    let unmatched = unmatched(before, model);
    applied.forgotten = before
        .difference(&drains)
        .filter(|d| unmatched.contains(*d))
        .cloned()
        .collect();
    applied.drains = drains;
    applied
}

/// The services each of `drains` drains its backend in now.
fn services_drained(drains: &BTreeSet<Drain>, model: &Model) -> BTreeMap<Drain, Vec<ServiceName>> {
    let mut by_drain: BTreeMap<Drain, Vec<ServiceName>> =
        drains.iter().map(|d| (d.clone(), Vec::new())).collect();
    for (name, service) in &model.services {
        for backend in &service.backends {
            for drain in [(None, backend.addr), (Some(name.clone()), backend.addr)] {
                if let Some(services) = by_drain.get_mut(&drain) {
                    services.push(name.clone());
                }
            }
        }
    }
    by_drain
}

/// The drains of `drains` no backend of `model` matches: no service has
/// their backend, or not the service they name.
fn unmatched(drains: &BTreeSet<Drain>, model: &Model) -> BTreeSet<Drain> {
    services_drained(drains, model)
        .into_iter()
        .filter(|(_, services)| services.is_empty())
        .map(|(drain, _)| drain)
        .collect()
}

/// `drain` as the admin API shows it, draining its backend in `services`.
fn entry_view((service, backend): &Drain, services: &[ServiceName]) -> DrainEntryView {
    DrainEntryView {
        backend: *backend,
        service: service.as_ref().map(ToString::to_string),
        services: services.iter().map(ToString::to_string).collect(),
    }
}

/// The drains made through the admin API, as the agent keeps them: in
/// memory, and in `drains.json` in its state directory, which it holds
/// locked while it runs.
#[derive(Debug)]
pub(crate) struct Drains {
    set: BTreeSet<Drain>,
    file: PathBuf,
    /// Why the file could not be restored at start, for `xlb status`.
    restore_error: Option<String>,
    /// The drains that matched no backend when last logged, so that each
    /// is logged when it stops or starts matching rather than per reload.
    unmatched: BTreeSet<Drain>,
    _lock: DirLock,
}

/// What could be read of a drains file.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    version: u32,
    drains: Vec<StoredDrain>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct StoredDrain {
    backend: SocketAddr,
    /// Absent: every service with the backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    service: Option<String>,
}

impl Drains {
    /// Takes the state directory `dir` (created if need be, and locked:
    /// one agent per directory) and restores the drains an earlier agent
    /// kept there. A file that cannot be read or understood does not stop
    /// the agent: it starts without those drains, says so in the log and
    /// in `xlb status`, and keeps the file aside as `drains.json.rejected`.
    /// The error is for the directory: missing and not creatable, or held
    /// by another agent.
    pub(crate) fn open(dir: &Path) -> anyhow::Result<Self> {
        fs::create_dir_all(dir).with_context(|| {
            format!(
                "creating the state directory {} (--state-dir)",
                dir.display()
            )
        })?;
        let lock = lock(dir)?;
        let file = dir.join(FILE_NAME);
        let (set, restore_error) = match read(&file) {
            Ok(set) => {
                tracing::info!(
                    restored = set.len(),
                    file = %file.display(),
                    "drains made with `xlb drain` restored"
                );
                for (service, backend) in &set {
                    tracing::info!(
                        %backend,
                        service = service.as_ref().map_or("every service", |s| s.0.as_str()),
                        "drain restored"
                    );
                }
                (set, None)
            }
            Err(error) => {
                let error = format!("{}: {error:#}", file.display());
                let kept = set_aside(&file);
                tracing::error!(
                    %error,
                    kept_as = %kept,
                    "the drains made with `xlb drain` could not be restored: the agent starts \
                     without them, so the backends they drained take new flows again (unless \
                     the configuration file drains them); drain them again with `xlb drain`"
                );
                (BTreeSet::new(), Some(format!("{error} (kept as {kept})")))
            }
        };
        Ok(Self {
            set,
            file,
            restore_error,
            unmatched: BTreeSet::new(),
            _lock: lock,
        })
    }

    /// Every drain.
    pub(crate) const fn set(&self) -> &BTreeSet<Drain> {
        &self.set
    }

    /// Makes `drains` the drains: saved first, so that a drain the agent
    /// could not keep across a restart is not made at all. The error says
    /// why, and nothing changed.
    pub(crate) fn replace(&mut self, drains: BTreeSet<Drain>) -> Result<(), String> {
        write(&self.file, &drains).map_err(|e| {
            format!(
                "saving the drains to {}: {e}; nothing changed",
                self.file.display()
            )
        })?;
        self.unmatched.retain(|d| drains.contains(d));
        self.set = drains;
        Ok(())
    }

    /// Logs the drains that stopped matching a backend of `model`, the
    /// model just taken, and those that match again.
    pub(crate) fn note_model(&mut self, model: &Model) {
        let unmatched = unmatched(&self.set, model);
        for (service, backend) in unmatched.difference(&self.unmatched) {
            match service {
                None => tracing::warn!(
                    %backend,
                    "drain kept for a backend no service has now: it holds again if the \
                     backend comes back; `xlb undrain` forgets it"
                ),
                Some(service) => tracing::warn!(
                    %backend,
                    %service,
                    "drain kept for a backend its service does not have now: it holds again \
                     if the backend comes back there; `xlb undrain --service` forgets it"
                ),
            }
        }
        for (service, backend) in self.unmatched.difference(&unmatched) {
            tracing::info!(
                %backend,
                service = service.as_ref().map_or("every service", |s| s.0.as_str()),
                "drain holds again: its backend is back"
            );
        }
        self.unmatched = unmatched;
    }

    /// The drains as `xlb status` shows them, against `model`.
    pub(crate) fn view(&self, model: &Model) -> DrainsView {
        DrainsView {
            file: self.file.display().to_string(),
            drains: services_drained(&self.set, model)
                .iter()
                .map(|(drain, services)| entry_view(drain, services))
                .collect(),
            restore_error: self.restore_error.clone(),
        }
    }
}

/// `forgotten` as the admin API shows them.
pub(crate) fn forgotten_views(forgotten: &[Drain]) -> Vec<DrainEntryView> {
    forgotten.iter().map(|d| entry_view(d, &[])).collect()
}

/// Locks the state directory `dir`, or says that another agent holds it.
fn lock(dir: &Path) -> anyhow::Result<DirLock> {
    dir_lock::lock(dir, "state directory", || {
        format!(
            "another xlb agent keeps its state in {}: one agent per state directory (it \
             defaults to the directory of --admin-socket): give each agent its own --state-dir",
            dir.display()
        )
    })
}

/// The drains kept in `file`; none when there is no file (the first start
/// since a reboot, or nothing was ever drained).
fn read(file: &Path) -> anyhow::Result<BTreeSet<Drain>> {
    let text = match fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(e) => return Err(e).context("reading it"),
    };
    let stored: Stored = serde_json::from_str(&text).context("not a drains file")?;
    anyhow::ensure!(
        stored.version == FILE_VERSION,
        "layout version {} (this agent reads version {FILE_VERSION})",
        stored.version
    );
    Ok(stored
        .drains
        .into_iter()
        .map(|d| (d.service.map(ServiceName), d.backend))
        .collect())
}

/// Writes `drains` to `file` as a whole or not at all: into a file beside
/// it, flushed to its storage, then renamed over it (rename(2) replaces
/// atomically), so that an agent killed mid-write leaves the old file.
fn write(file: &Path, drains: &BTreeSet<Drain>) -> io::Result<()> {
    let stored = Stored {
        version: FILE_VERSION,
        drains: drains
            .iter()
            .map(|(service, backend)| StoredDrain {
                backend: *backend,
                service: service.as_ref().map(ToString::to_string),
            })
            .collect(),
    };
    let mut text = serde_json::to_string_pretty(&stored).map_err(io::Error::other)?;
    text.push('\n');
    let beside = file.with_file_name(format!("{FILE_NAME}.tmp"));
    let written = (|| {
        let mut out = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o640)
            .open(&beside)?;
        out.write_all(text.as_bytes())?;
        out.sync_all()?;
        fs::rename(&beside, file)?;
        // The rename itself reaches the storage with its directory (a
        // no-op on a tmpfs).
        if let Some(dir) = file.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if written.is_err() {
        let _ = fs::remove_file(&beside);
    }
    written
}

/// Moves `file`, which could not be restored, aside for a look; the name it
/// is kept under, or why it could not be moved.
fn set_aside(file: &Path) -> String {
    let mut aside = file.as_os_str().to_owned();
    aside.push(REJECTED_SUFFIX);
    let aside = PathBuf::from(aside);
    match fs::rename(file, &aside) {
        Ok(()) => aside.display().to_string(),
        Err(e) => format!(
            "{} (could not be moved to {}: {e}; the next drain replaces it)",
            file.display(),
            aside.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Backend, Mode, Protocol, Service};

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    fn name(s: &str) -> ServiceName {
        ServiceName(s.to_owned())
    }

    /// A TCP service of `backends`, each in its state.
    fn service(backends: &[(SocketAddr, BackendState)]) -> Service {
        Service {
            protocol: Protocol::Tcp,
            frontends: Vec::new(),
            backends: backends
                .iter()
                .map(|&(addr, state)| Backend {
                    addr,
                    weight: 1,
                    state,
                    local: false,
                })
                .collect(),
            mode: Mode::Nat,
            affinity: None,
            health_check: None,
            drop_without_backends: false,
            source_ranges: Vec::new(),
        }
    }

    fn model(services: &[(&str, Service)]) -> Model {
        Model {
            services: services.iter().map(|(n, s)| (name(n), s.clone())).collect(),
        }
    }

    #[test]
    fn drains_report_only_what_changed() {
        let addr = addr("198.18.2.1:8080");
        let active = [(addr, BackendState::Active)];
        let model = model(&[("web", service(&active)), ("api", service(&active))]);
        let (web, api) = (name("web"), name("api"));
        let names =
            |services: &[ServiceName]| services.iter().map(|n| n.0.clone()).collect::<Vec<_>>();

        let everywhere = apply(&BTreeSet::new(), &model, addr, true, None);
        assert_eq!(names(&everywhere.changed), ["api", "web"]);
        // Again, or in one service: nothing changes, and each says why.
        let again = apply(&everywhere.drains, &model, addr, true, None);
        assert!(again.changed.is_empty() && again.drains == everywhere.drains);
        assert_eq!(
            again.unchanged,
            [
                (api.clone(), DrainUnchanged::AlreadyDrained),
                (web.clone(), DrainUnchanged::AlreadyDrained)
            ]
        );
        let in_web = apply(&everywhere.drains, &model, addr, true, Some(&web));
        assert_eq!(
            in_web.unchanged,
            [(web.clone(), DrainUnchanged::AlreadyDrained)]
        );
        // Undrained in one service: drained in the other still.
        let in_api = apply(&everywhere.drains, &model, addr, false, Some(&web));
        assert_eq!(names(&in_api.changed), ["web"]);
        assert_eq!(in_api.drains, BTreeSet::from([(Some(api.clone()), addr)]));
        let again = apply(&in_api.drains, &model, addr, false, Some(&web));
        assert_eq!(again.unchanged, [(web, DrainUnchanged::NotDrained)]);
        // Undrained everywhere: every drain of the backend goes.
        let none = apply(&in_api.drains, &model, addr, false, None);
        assert_eq!(names(&none.changed), ["api"]);
        assert!(none.drains.is_empty() && none.forgotten.is_empty());
    }

    #[test]
    fn the_file_s_drain_is_no_admin_drain_and_says_so() {
        let addr = addr("198.18.2.1:8080");
        let model = model(&[
            ("web", service(&[(addr, BackendState::Draining)])),
            ("api", service(&[(addr, BackendState::Terminating)])),
        ]);
        let (web, api) = (name("web"), name("api"));
        // Nothing to undrain through the admin API: the file drains it.
        let undrain = apply(&BTreeSet::new(), &model, addr, false, None);
        assert!(undrain.changed.is_empty() && undrain.drains.is_empty());
        assert_eq!(
            undrain.unchanged,
            [
                (api.clone(), DrainUnchanged::Terminating),
                (web.clone(), DrainUnchanged::DrainedByFile)
            ]
        );
        // A drain changes no service, but is kept: it holds should the
        // file stop draining the backend.
        let drain = apply(&BTreeSet::new(), &model, addr, true, Some(&web));
        assert!(drain.changed.is_empty());
        assert_eq!(
            drain.unchanged,
            [(web.clone(), DrainUnchanged::DrainedByFile)]
        );
        assert_eq!(drain.drains, BTreeSet::from([(Some(web.clone()), addr)]));
        // Its undrain leaves the file's drain, and says so.
        let undrain = apply(&drain.drains, &model, addr, false, Some(&web));
        assert!(undrain.drains.is_empty() && undrain.changed.is_empty());
        assert_eq!(
            undrain.unchanged,
            [(web.clone(), DrainUnchanged::DrainedByFile)]
        );
        assert_eq!(
            sources(&drain.drains, &web, addr, BackendState::Draining),
            [DrainSource::File, DrainSource::Admin]
        );
        assert_eq!(
            sources(&drain.drains, &api, addr, BackendState::Active),
            [] as [DrainSource; 0]
        );
    }

    #[test]
    fn an_undrain_forgets_drains_no_service_has_the_backend_for() {
        let (kept, gone) = (addr("198.18.2.1:8080"), addr("198.18.2.9:8080"));
        let model = model(&[("web", service(&[(kept, BackendState::Active)]))]);
        let drains = BTreeSet::from([
            (None, gone),
            (Some(name("old")), gone),
            (Some(name("old")), kept),
            (Some(name("web")), kept),
        ]);
        assert_eq!(
            unmatched(&drains, &model),
            BTreeSet::from([
                (None, gone),
                (Some(name("old")), gone),
                (Some(name("old")), kept)
            ])
        );
        let undrain = apply(&drains, &model, gone, false, None);
        assert!(undrain.changed.is_empty() && undrain.unchanged.is_empty());
        assert_eq!(undrain.forgotten, [(None, gone), (Some(name("old")), gone)]);
        // A service the model no longer has: its drain alone goes.
        let undrain = apply(&drains, &model, kept, false, Some(&name("old")));
        assert_eq!(undrain.forgotten, [(Some(name("old")), kept)]);
        assert!(undrain.drains.contains(&(Some(name("web")), kept)));
        assert!(undrain.changed.is_empty());
    }

    #[test]
    fn drains_are_kept_across_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let drains = BTreeSet::from([
            (None, addr("198.18.2.1:8080")),
            (Some(name("web")), addr("[2001:2::5]:443")),
        ]);
        {
            let mut kept = Drains::open(dir.path()).expect("a fresh state directory");
            assert!(kept.set().is_empty() && kept.restore_error.is_none());
            kept.replace(drains.clone()).expect("saved");
        }
        let restored = Drains::open(dir.path()).expect("the state directory again");
        assert_eq!(restored.set(), &drains);
        assert_eq!(restored.restore_error, None);
        // Nothing is left beside the file.
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("listing")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, [FILE_NAME]);
    }

    #[test]
    fn one_agent_per_state_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _held = Drains::open(dir.path()).expect("the first agent");
        let refused = Drains::open(dir.path()).expect_err("the second agent");
        assert!(
            refused
                .to_string()
                .contains("give each agent its own --state-dir"),
            "{refused:#}"
        );
    }

    #[test]
    fn a_file_that_cannot_be_restored_is_set_aside_and_said() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join(FILE_NAME);
        for bad in [
            "{\"version\": 1, \"drains\": [{\"backend\": \"198.18.2.1\"}]}",
            "{\"version\": 2, \"drains\": []}",
            "not json",
        ] {
            fs::write(&file, bad).expect("writing the bad file");
            let drains = Drains::open(dir.path()).expect("the agent starts");
            assert!(drains.set().is_empty(), "{bad}");
            let error = drains.restore_error.clone().expect("said");
            assert!(error.contains("drains.json.rejected"), "{error}");
            // With its cause.
            assert!(
                error.contains("invalid")
                    || error.contains("version 2")
                    || error.contains("expected"),
                "{error}"
            );
            assert!(!file.exists(), "{bad}");
            assert_eq!(
                fs::read_to_string(dir.path().join("drains.json.rejected")).expect("kept"),
                bad
            );
            assert_eq!(drains.view(&Model::default()).restore_error, Some(error));
        }
    }

    #[test]
    fn a_drain_that_cannot_be_saved_is_not_made() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut drains = Drains::open(dir.path()).expect("state directory");
        // A directory where the file goes: the rename over it fails.
        fs::create_dir(dir.path().join(FILE_NAME)).expect("a directory in the way");
        let error = drains
            .replace(BTreeSet::from([(None, addr("198.18.2.1:8080"))]))
            .expect_err("not saved");
        assert!(error.ends_with("nothing changed"), "{error}");
        assert!(drains.set().is_empty());
        assert!(!dir.path().join(format!("{FILE_NAME}.tmp")).exists());
    }

    #[test]
    fn the_view_says_where_each_drain_holds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (kept, gone) = (addr("198.18.2.1:8080"), addr("198.18.2.9:8080"));
        let model = model(&[
            ("web", service(&[(kept, BackendState::Active)])),
            ("api", service(&[(kept, BackendState::Active)])),
        ]);
        let mut drains = Drains::open(dir.path()).expect("state directory");
        drains
            .replace(BTreeSet::from([(None, kept), (None, gone)]))
            .expect("saved");
        drains.note_model(&model);
        assert_eq!(drains.unmatched, BTreeSet::from([(None, gone)]));
        let view = drains.view(&model);
        assert_eq!(
            view.drains,
            [
                DrainEntryView {
                    backend: kept,
                    service: None,
                    services: vec!["api".into(), "web".into()],
                },
                DrainEntryView {
                    backend: gone,
                    service: None,
                    services: vec![],
                },
            ]
        );
        assert_eq!(view.file, dir.path().join(FILE_NAME).display().to_string());
    }

    #[test]
    fn the_state_directory_is_the_admin_socket_s_unless_given() {
        let socket = Path::new("/run/xlb/admin.sock");
        assert_eq!(state_dir(None, socket), Path::new("/run/xlb"));
        assert_eq!(
            state_dir(Some(Path::new("/run/xlb-b")), socket),
            Path::new("/run/xlb-b")
        );
        assert_eq!(state_dir(None, Path::new("admin.sock")), Path::new("."));
    }
}
