//! Loading the programs and attaching them to interfaces.
use aya::{
    Ebpf, EbpfLoader,
    maps::Array,
    programs::{Program, ProgramError, Xdp, XdpMode, xdp::XdpLinkId},
};
use tracing::{debug, warn};
use xdp_lb_common::flow_table::buckets_for;

use crate::{
    EBPF_OBJECT, Error,
    flow_table::ConntrackTables,
    maps::{self, map_err},
    options::{DEFAULT_VERSION_STAMP, LoadOptions, MapSizes},
};

/// How often a program is offered to the verifier. It gives up with
/// `EAGAIN` when a signal arrives while it works (seen on `tc_lb_ingress`,
/// 96 000 instructions, in `make test`); libbpf tries five times too.
const LOAD_ATTEMPTS: u32 = 5;

/// A load the verifier broke off for a pending signal, not a rejection.
fn interrupted(error: &Error) -> bool {
    matches!(error, Error::Verify { source: ProgramError::LoadError { io_error, .. }, .. }
        if io_error.raw_os_error() == Some(libc::EAGAIN))
}

/// Runs `load` until it succeeds, fails otherwise than `interrupted`, or has
/// been tried `LOAD_ATTEMPTS` times; its last result.
fn retrying_interrupted(
    program: &str,
    mut load: impl FnMut() -> Result<(), Error>,
) -> Result<(), Error> {
    let mut attempt = 1;
    loop {
        match load() {
            Err(e) if interrupted(&e) && attempt < LOAD_ATTEMPTS => {
                debug!(program, attempt, "verification interrupted; again");
                attempt += 1;
            }
            loaded => return loaded,
        }
    }
}

/// The symbol of the version stamp in the eBPF object.
const BUILD_STAMP: &str = "BUILD_STAMP";
/// Its section, which aya turns into a map of that name.
const STAMP_SECTION: &str = ".rodata.stamp";

/// The programs of the object: XDP programs, and the TC programs of pod
/// interfaces ([`Datapath::attach_pod_interface`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProgramName {
    /// The NIC-side load balancer: parse, reverse NAT, frontend lookup,
    /// conntrack, Maglev, DNAT, forwarding.
    XdpLb,
    /// Passes every frame; attached to the receiving end of a veth that another
    /// program redirects into (this kernel needs one there to deliver).
    XdpPass,
    /// The benchmark floor: parse Ethernet/IPv4/TCP, bump one counter, pass.
    XdpFloor,
    /// The measuring wrapper: restores a stored packet, then tail-calls the
    /// program under test (see [`Datapath::bench_target`]).
    XdpBench,
    /// A traffic sink: counts every frame (in [`Datapath::floor_stats`]) and
    /// drops it.
    XdpSink,
    /// On a direct-server-return backend: strips the outer header of packets
    /// for the VIPs of [`Datapath::add_decap_vip`] and passes the inner one.
    XdpDecap,
    /// TC (tcx) ingress on the host side of a pod veth: balances what the
    /// pod sends, translates back what it answers as a backend.
    TcLbIngress,
    /// TC (tcx) egress on the host side of a pod veth: translates back
    /// replies on their way into the pod that no ingress hook of this node
    /// translated.
    TcLbEgress,
    /// TC (tcx) egress of an uplink: balances what the node itself sends to
    /// a service, translates back what it answers as a backend.
    TcLbUplink,
    /// TC (tcx) egress of an uplink, before `tc_lb_uplink`: wraps the
    /// packets of health probes of direct-server-return backends for their
    /// backend (see [`Datapath::attach_probe_encap`]).
    TcProbeEncap,
}

impl ProgramName {
    /// Every program in the object.
    pub const ALL: [Self; 10] = [
        Self::XdpLb,
        Self::XdpPass,
        Self::XdpFloor,
        Self::XdpBench,
        Self::XdpSink,
        Self::XdpDecap,
        Self::TcLbIngress,
        Self::TcLbEgress,
        Self::TcLbUplink,
        Self::TcProbeEncap,
    ];

    /// The program's symbol name in the object.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::XdpLb => "xdp_lb",
            Self::XdpPass => "xdp_pass",
            Self::XdpFloor => "xdp_floor",
            Self::XdpBench => "xdp_bench",
            Self::XdpSink => "xdp_sink",
            Self::XdpDecap => "xdp_decap",
            Self::TcLbIngress => "tc_lb_ingress",
            Self::TcLbEgress => "tc_lb_egress",
            Self::TcLbUplink => "tc_lb_uplink",
            Self::TcProbeEncap => "tc_probe_encap",
        }
    }

    /// True for the TC programs.
    pub const fn is_tc(self) -> bool {
        matches!(
            self,
            Self::TcLbIngress | Self::TcLbEgress | Self::TcLbUplink | Self::TcProbeEncap
        )
    }
}

/// How to attach an XDP program.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttachMode {
    /// Native (driver) mode; falls back to generic mode with a warning when the
    /// driver refuses it.
    #[default]
    Native,
    /// Generic (skb) mode only.
    Generic,
}

/// One program attached to one interface. Detached with [`Datapath::detach`],
/// or when the `Datapath` is dropped.
#[derive(Debug)]
pub struct Attachment {
    program: ProgramName,
    iface: String,
    mode: XdpMode,
    link: XdpLinkId,
}

impl Attachment {
    /// The attached program.
    pub const fn program(&self) -> ProgramName {
        self.program
    }

    /// The interface it is attached to.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// True when the program runs in native (driver) mode.
    pub fn is_native(&self) -> bool {
        self.mode == XdpMode::Driver
    }
}

/// What the verifier did with one program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifierReport {
    pub program: ProgramName,
    /// Instructions in the program as loaded.
    pub instructions: u32,
    /// Instructions the verifier processed (`verified_insns`, kernel ≥ 5.16).
    pub processed: u32,
}

/// The loaded programs and their maps.
///
/// Loading verifies every program, so a `Datapath` that exists is one the
/// kernel accepted in full.
#[derive(Debug)]
pub struct Datapath {
    pub(crate) ebpf: Ebpf,
    pub(crate) sizes: MapSizes,
    /// Each service's networks in `SOURCE_RANGES`, read from the trie once
    /// (it may be pinned by an earlier agent) and kept since: a trie's keys
    /// can only be walked whole, so this saves a walk per service change.
    pub(crate) source_ranges: Option<crate::maps::SourceRangeIndex>,
    /// The conntrack tables, on descriptors of their own.
    pub(crate) ct_tables: ConntrackTables,
}

impl Datapath {
    /// Loads the embedded object and every program in it, with default map
    /// sizes and nothing pinned.
    pub fn load() -> Result<Self, Error> {
        Self::load_with(&LoadOptions::default())
    }

    /// Loads the embedded object with `options`: map sizes, and a pin
    /// directory whose maps are reused if they are already there. The programs
    /// carry [`DEFAULT_VERSION_STAMP`].
    pub fn load_with(options: &LoadOptions) -> Result<Self, Error> {
        Self::load_stamped(options, DEFAULT_VERSION_STAMP)
    }

    /// As [`Datapath::load_with`], with `version_stamp` written into the
    /// programs' read-only data (`BUILD_STAMP` in the eBPF object) before they
    /// are loaded, and readable back with [`Datapath::version_stamp`]. Upgrade
    /// tests load "another build" this way: new programs (new program IDs)
    /// carrying another stamp, sharing whatever maps are pinned. (The program
    /// tag stays the same: the kernel hashes the instructions without the
    /// data they reference.)
    pub fn load_stamped(options: &LoadOptions, version_stamp: u32) -> Result<Self, Error> {
        options.validate()?;
        // RLIMIT_MEMLOCK cannot be raised on these hosts (no CAP_SYS_RESOURCE in
        // some containers) and this kernel accounts BPF memory by memcg, so a
        // failure is only worth a debug line.
        raise_memlock_rlimit();
        let mut loader = EbpfLoader::new();
        // `must_exist`: an object without the stamp is another build's, and
        // `version_stamp()` would have nothing to read.
        loader.override_global(BUILD_STAMP, &version_stamp, true);
        let sizes = &options.sizes;
        for (map, size) in [
            (maps::SERVICES, sizes.services),
            (maps::SOURCE_RANGES, sizes.services),
            (maps::SERVICE_STATS, sizes.services),
            (maps::MAGLEV_TABLES, sizes.services),
            (maps::BACKENDS, sizes.backends),
            (maps::BACKEND_CPU, sizes.backends),
            (maps::CONNTRACK, buckets_for(sizes.conntrack)),
            (maps::CONNTRACK_REPLY, buckets_for(sizes.conntrack)),
            (maps::AFFINITY, sizes.conntrack),
            (maps::ADDRESSES, sizes.addresses),
            (maps::L2_ANNOUNCE, sizes.addresses),
            (maps::FRAGMENTS, sizes.fragments),
        ] {
            loader.map_max_entries(map, size);
        }
        if let Some(dir) = &options.pin_dir {
            std::fs::create_dir_all(dir).map_err(|source| Error::PinDir {
                path: dir.clone(),
                source,
            })?;
            maps::check_pinned_layout(dir)?;
            crate::stats::renew_resized_counters(dir)?;
            for map in maps::PINNED {
                loader.map_pin_path(map, dir.join(map));
            }
        }
        let mut ebpf = loader.load(EBPF_OBJECT).map_err(Error::Load)?;
        for name in ProgramName::ALL {
            retrying_interrupted(name.as_str(), || {
                if name.is_tc() {
                    crate::pods::classifier_mut(&mut ebpf, name)?.load()
                } else {
                    program_mut(&mut ebpf, name)?.load()
                }
                .map_err(|source| Error::Verify {
                    program: name.as_str(),
                    source,
                })
            })?;
        }
        let ct_tables = ConntrackTables::of(&ebpf)?;
        let mut datapath = Self {
            ebpf,
            sizes: *sizes,
            source_ranges: None,
            ct_tables,
        };
        datapath.adopt_or_initialise()?;
        datapath.sizes = datapath.sizes_in_effect(*sizes)?;
        Ok(datapath)
    }

    /// The version stamp the programs were loaded with, read back from the
    /// kernel (the frozen map that holds `BUILD_STAMP`).
    pub fn version_stamp(&self) -> Result<u32, Error> {
        Array::<_, u32>::try_from(self.map(STAMP_SECTION)?)
            .map_err(map_err(STAMP_SECTION, "open"))?
            .get(&0, 0)
            .map_err(map_err(STAMP_SECTION, "read"))
    }

    /// The kernel's ID of `program` as loaded by this `Datapath` (what a link
    /// running it reports, see [`Datapath::pinned_link`]).
    pub fn program_id(&self, program: ProgramName) -> Result<u32, Error> {
        self.ebpf
            .program(program.as_str())
            .ok_or(Error::MissingProgram {
                program: program.as_str(),
            })?
            .info()
            .map(|info| info.id())
            .map_err(|source| Error::ProgramInfo {
                program: program.as_str(),
                source,
            })
    }

    /// Attaches `program` to `iface` in the calling thread's network namespace.
    pub fn attach(
        &mut self,
        program: ProgramName,
        iface: &str,
        mode: AttachMode,
    ) -> Result<Attachment, Error> {
        let (link, mode) = self.attach_link(program, iface, mode)?;
        Ok(Attachment {
            program,
            iface: iface.to_owned(),
            mode,
            link,
        })
    }

    /// Attaches `program` to `iface` (native mode falling back to generic),
    /// and leaves the link with the program.
    pub(crate) fn attach_link(
        &mut self,
        program: ProgramName,
        iface: &str,
        mode: AttachMode,
    ) -> Result<(XdpLinkId, XdpMode), Error> {
        let prog = program_mut(&mut self.ebpf, program)?;
        let attach = |prog: &mut Xdp, mode| {
            prog.attach(iface, mode).map_err(|source| match source {
                ProgramError::UnknownInterface { .. } => Error::UnknownInterface {
                    iface: iface.to_owned(),
                },
                source => Error::Attach {
                    program: program.as_str(),
                    iface: iface.to_owned(),
                    source,
                },
            })
        };
        let (link, mode) = match mode {
            AttachMode::Generic => (attach(prog, XdpMode::Skb)?, XdpMode::Skb),
            AttachMode::Native => match attach(prog, XdpMode::Driver) {
                Ok(link) => (link, XdpMode::Driver),
                // Another program holds the interface: generic mode would
                // meet it too, and the fallback's warning would mislead.
                Err(err @ Error::Attach { .. }) if is_taken(&err) => return Err(err),
                Err(Error::Attach { source, .. }) => {
                    warn!(
                        iface,
                        program = program.as_str(),
                        error = %source,
                        "native XDP refused; falling back to generic mode"
                    );
                    (attach(prog, XdpMode::Skb)?, XdpMode::Skb)
                }
                Err(err) => return Err(err),
            },
        };
        debug!(iface, program = program.as_str(), ?mode, "attached");
        Ok((link, mode))
    }

    /// Detaches one attachment.
    pub fn detach(&mut self, attachment: Attachment) -> Result<(), Error> {
        let Attachment {
            program,
            iface,
            link,
            ..
        } = attachment;
        program_mut(&mut self.ebpf, program)?
            .detach(link)
            .map_err(|source| Error::Attach {
                program: program.as_str(),
                iface,
                source,
            })
    }

    /// The verifier's account of every program.
    pub fn verifier_report(&self) -> Result<Vec<VerifierReport>, Error> {
        ProgramName::ALL
            .into_iter()
            .map(|name| {
                let info = self
                    .ebpf
                    .program(name.as_str())
                    .ok_or(Error::MissingProgram {
                        program: name.as_str(),
                    })?
                    .info()
                    .map_err(|source| Error::ProgramInfo {
                        program: name.as_str(),
                        source,
                    })?;
                // One BPF instruction is 8 bytes.
                let instructions = info.size_translated().unwrap_or(0) / 8;
                Ok(VerifierReport {
                    program: name,
                    instructions,
                    processed: info.verified_instruction_count().unwrap_or(0),
                })
            })
            .collect()
    }

    pub(crate) fn program(&self, name: ProgramName) -> Result<&Xdp, Error> {
        program(&self.ebpf, name)
    }

    pub(crate) fn program_mut(&mut self, name: ProgramName) -> Result<&mut Xdp, Error> {
        program_mut(&mut self.ebpf, name)
    }
}

fn program(ebpf: &Ebpf, name: ProgramName) -> Result<&Xdp, Error> {
    typed(ebpf, name)
}

fn program_mut(ebpf: &mut Ebpf, name: ProgramName) -> Result<&mut Xdp, Error> {
    typed_mut(ebpf, name)
}

/// Program `name` of the object as its type `P` (`Xdp`, `SchedClassifier`).
pub(crate) fn typed<'a, P>(ebpf: &'a Ebpf, name: ProgramName) -> Result<&'a P, Error>
where
    &'a P: TryFrom<&'a Program, Error = ProgramError>,
{
    ebpf.program(name.as_str())
        .ok_or(Error::MissingProgram {
            program: name.as_str(),
        })?
        .try_into()
        .map_err(|source| Error::ProgramType {
            program: name.as_str(),
            source,
        })
}

/// [`typed`], mutable.
pub(crate) fn typed_mut<'a, P>(ebpf: &'a mut Ebpf, name: ProgramName) -> Result<&'a mut P, Error>
where
    &'a mut P: TryFrom<&'a mut Program, Error = ProgramError>,
{
    ebpf.program_mut(name.as_str())
        .ok_or(Error::MissingProgram {
            program: name.as_str(),
        })?
        .try_into()
        .map_err(|source| Error::ProgramType {
            program: name.as_str(),
            source,
        })
}

fn raise_memlock_rlimit() {
    let limit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid, initialised struct.
    let ret = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) };
    if ret != 0 {
        debug!(
            error = %std::io::Error::last_os_error(),
            "could not raise RLIMIT_MEMLOCK; relying on memcg accounting"
        );
    }
}

/// True for an attach refused because the interface already has an XDP
/// program (`EEXIST`, `EBUSY`): another link or another mode holds it.
fn is_taken(err: &Error) -> bool {
    let Error::Attach {
        source: ProgramError::SyscallError(aya::sys::SyscallError { io_error, .. }),
        ..
    } = err
    else {
        return false;
    };
    matches!(io_error.raw_os_error(), Some(libc::EEXIST | libc::EBUSY))
}

#[cfg(test)]
mod tests {
    use std::io;

    use aya::programs::ProgramError;

    use super::{Error, LOAD_ATTEMPTS, retrying_interrupted};

    fn load_error(errno: i32) -> Error {
        Error::Verify {
            program: "xdp_lb",
            source: ProgramError::LoadError {
                io_error: io::Error::from_raw_os_error(errno),
                verifier_log: aya_obj::VerifierLog::new(String::new()),
            },
        }
    }

    /// Calls `retrying_interrupted` with a load that fails with `errno` for
    /// its first `failures` calls; its result and how often it was called.
    fn run(errno: i32, failures: u32) -> (Result<(), Error>, u32) {
        let mut calls = 0;
        let result = retrying_interrupted("xdp_lb", || {
            calls += 1;
            if calls <= failures {
                Err(load_error(errno))
            } else {
                Ok(())
            }
        });
        (result, calls)
    }

    #[test]
    fn an_interrupted_verification_is_tried_again_until_it_succeeds() {
        let (result, calls) = run(libc::EAGAIN, LOAD_ATTEMPTS - 1);
        assert!(result.is_ok());
        assert_eq!(calls, LOAD_ATTEMPTS);
    }

    #[test]
    fn a_verification_interrupted_every_time_gives_up_after_the_last_attempt() {
        let (result, calls) = run(libc::EAGAIN, u32::MAX);
        assert!(matches!(
            result,
            Err(Error::Verify { source: ProgramError::LoadError { io_error, .. }, .. })
                if io_error.raw_os_error() == Some(libc::EAGAIN)
        ));
        assert_eq!(calls, LOAD_ATTEMPTS);
    }

    #[test]
    fn a_rejection_is_not_tried_again() {
        let (result, calls) = run(libc::EACCES, u32::MAX);
        assert!(result.is_err());
        assert_eq!(calls, 1);
    }
}
