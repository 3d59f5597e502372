//! `xlb-bench report`: BENCHMARKS.md and its SVG plots, generated from the
//! JSON files `maglev`, `verifier`, `prog`, `sync` and `rig` write, so that
//! the published figures are always those a run measured and never copied by
//! hand.
//!
//! At least one input must be given, and every file named must be there: a
//! benchmark whose option is left out leaves its section saying so and how
//! to run it, but a mistyped path is an error and nothing is written, so that
//! a report never silently loses a benchmark it was given.

pub(crate) mod inputs;
mod machine;
mod maglev;
mod markdown;
mod plots;
mod prog;
mod rig;
mod rig_targets;
mod sync;
#[cfg(test)]
mod tests;
mod verifier;

use std::path::{Component, Path, PathBuf};

use anyhow::Context as _;

use self::{
    inputs::{Prog, Sync},
    machine::Machine,
    plots::Chart,
};
use crate::build_id::BuildId;

/// `xlb-bench report [--maglev FILE] [--verifier FILE] [--prog FILE]
/// [--sync FILE]... [--rig FILE] [--out FILE] [--plots DIR] [--notes FILE]`,
/// with at least one of the inputs.
#[derive(Clone, Debug, clap::Args)]
#[command(group(
    clap::ArgGroup::new("inputs")
        .args(["maglev", "verifier", "prog", "sync", "rig"])
        .required(true)
        .multiple(true)
))]
pub(crate) struct ReportArgs {
    /// What `xlb-bench maglev --json` wrote.
    #[arg(long, value_name = "FILE")]
    maglev: Option<PathBuf>,
    /// What `xlb-bench verifier --json` wrote.
    #[arg(long, value_name = "FILE")]
    verifier: Option<PathBuf>,
    /// What `xlb-bench prog --json` wrote.
    #[arg(long, value_name = "FILE")]
    prog: Option<PathBuf>,
    /// What `xlb-bench sync --json` wrote; repeat it for several numbers of
    /// services.
    #[arg(long, value_name = "FILE")]
    sync: Vec<PathBuf>,
    /// What `xlb-bench rig --json` wrote.
    #[arg(long, value_name = "FILE")]
    rig: Option<PathBuf>,
    /// The Markdown file to write.
    #[arg(long, value_name = "FILE", default_value = "BENCHMARKS.md")]
    out: PathBuf,
    /// The directory of the SVG plots, which the Markdown links to by a path
    /// relative to its own directory.
    #[arg(long, value_name = "DIR", default_value = "docs/bench")]
    plots: PathBuf,
    /// Hand-written Markdown appended as it is: what the figures mean and why
    /// a target is missed, which no generator can say. Left out when the
    /// option is; a file named but not there is an error.
    #[arg(long, value_name = "FILE")]
    notes: Option<PathBuf>,
}

/// The plot files, one per section.
const PROG_PLOT: &str = "prog-ns-per-packet.svg";
const SYNC_PLOT: &str = "sync-change-p99.svg";
const RIG_PLOT: &str = "rig-udp-throughput.svg";

/// The documents read.
#[derive(Debug, Default)]
struct Inputs {
    maglev: Option<crate::maglev::MaglevResult>,
    verifier: Option<crate::verifier::VerifierResult>,
    prog: Option<Prog>,
    /// By number of services.
    sync: Vec<Sync>,
    /// The build of each `--sync` file, in the command line's order (the
    /// header lists the files so).
    sync_builds: Vec<Option<BuildId>>,
    rig: Option<crate::rig::report::Json>,
    /// The hand-written notes, read before anything is written.
    notes: Option<String>,
}

impl Inputs {
    /// Reads every file `args` names, or fails on the first that is not
    /// there or does not parse, before anything is written.
    fn load(args: &ReportArgs) -> anyhow::Result<Self> {
        anyhow::ensure!(
            args.maglev.is_some()
                || args.verifier.is_some()
                || args.prog.is_some()
                || !args.sync.is_empty()
                || args.rig.is_some(),
            "no input: give at least one of --maglev, --verifier, --prog, --sync and --rig"
        );
        let prog = args.prog.as_deref().map(inputs::load_prog).transpose()?;
        let syncs = args
            .sync
            .iter()
            .map(|path| inputs::load_sync(path))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let sync_builds = syncs.iter().map(|s| s.build.clone()).collect();
        let rig = args.rig.as_deref().map(inputs::load_rig).transpose()?;
        let maglev = args.maglev.as_deref().map(inputs::load).transpose()?;
        let verifier = args.verifier.as_deref().map(inputs::load).transpose()?;
        let notes = args
            .notes
            .as_deref()
            .map(|path| {
                std::fs::read_to_string(path)
                    .with_context(|| format!("--notes: reading {}", path.display()))
            })
            .transpose()?;
        Ok(Self {
            maglev,
            verifier,
            prog,
            sync: sync::sorted(syncs),
            sync_builds,
            rig,
            notes,
        })
    }
}

pub(crate) fn run(args: &ReportArgs) -> anyhow::Result<()> {
    let inputs = Inputs::load(args)?;
    let text = generate(args, &inputs, &Machine::of_this_machine())?;
    std::fs::write(&args.out, text).with_context(|| format!("writing {}", args.out.display()))?;
    tracing::info!(out = %args.out.display(), plots = %args.plots.display(), "report written");
    Ok(())
}

/// Writes the plots and returns the Markdown.
fn generate(args: &ReportArgs, inputs: &Inputs, machine: &Machine) -> anyhow::Result<String> {
    std::fs::create_dir_all(&args.plots)
        .with_context(|| format!("creating {}", args.plots.display()))?;
    let link = PlotLinks::new(&args.out, &args.plots)?;
    let prog_plot = link.write(PROG_PLOT, inputs.prog.as_ref().and_then(prog::chart))?;
    let sync_plot = link.write(SYNC_PLOT, sync::chart(&inputs.sync))?;
    let rig_plot = link.write(RIG_PLOT, inputs.rig.as_ref().and_then(rig::chart))?;

    let mut out = String::new();
    markdown::header(&mut out, args, inputs, machine)?;
    prog::section(&mut out, inputs.prog.as_ref(), prog_plot.as_deref())?;
    verifier::section(&mut out, inputs.verifier.as_ref())?;
    maglev::section(&mut out, inputs.maglev.as_ref())?;
    sync::section(&mut out, &inputs.sync, sync_plot.as_deref())?;
    rig::section(&mut out, inputs.rig.as_ref(), rig_plot.as_deref())?;
    if let Some(notes) = &inputs.notes {
        out.push_str(notes.trim_end());
        out.push('\n');
    }
    Ok(out.trim_end().to_owned() + "\n")
}

/// Writes plots into the plots directory and names them as the Markdown
/// file's directory sees them.
struct PlotLinks {
    dir: PathBuf,
    /// The plots directory relative to the Markdown's, `/`-separated.
    prefix: String,
}

impl PlotLinks {
    fn new(out: &Path, plots: &Path) -> anyhow::Result<Self> {
        let out_dir = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let from = out_dir
            .canonicalize()
            .with_context(|| format!("resolving {}", out_dir.display()))?;
        let to = plots
            .canonicalize()
            .with_context(|| format!("resolving {}", plots.display()))?;
        Ok(Self {
            dir: plots.to_owned(),
            prefix: relative(&from, &to),
        })
    }

    /// Writes `chart` as `name`, and returns its link; with no chart, removes
    /// a plot an earlier run left, so that the directory shows only what the
    /// Markdown does.
    fn write(&self, name: &str, chart: Option<Chart>) -> anyhow::Result<Option<String>> {
        let path = self.dir.join(name);
        let Some(chart) = chart else {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("removing {}", path.display()));
                }
                _ => return Ok(None),
            }
        };
        let svg = chart
            .svg()
            .with_context(|| format!("drawing {}", path.display()))?;
        std::fs::write(&path, svg).with_context(|| format!("writing {}", path.display()))?;
        Ok(Some(if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}/{name}", self.prefix)
        }))
    }
}

/// `to` as seen from `from`, both absolute, as a `/`-separated path.
fn relative(from: &Path, to: &Path) -> String {
    let from: Vec<Component<'_>> = from.components().collect();
    let to: Vec<Component<'_>> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let ups = std::iter::repeat_n("..".to_owned(), from.len() - common);
    let downs = to[common..]
        .iter()
        .map(|c| c.as_os_str().to_string_lossy().into_owned());
    ups.chain(downs).collect::<Vec<_>>().join("/")
}
