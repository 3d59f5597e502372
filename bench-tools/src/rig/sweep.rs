//! `xlb-bench rig sweep`: housekeeping for netns rigs.
use std::io::Write as _;

use anyhow::Context as _;
use netns_tests::SweepReport;

/// `xlb-bench rig <command>`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum SweepCommand {
    /// Remove what crashed rigs left behind: kill the processes inside their
    /// namespaces, delete the namespaces, unmount their bpffs mounts and
    /// remove their work directories.
    Sweep {
        /// Only names starting with this; it must start with `xlb-rig-` and
        /// have no `/` (default: every rig, including live ones of running
        /// tests).
        #[arg(long, value_parser = sweep_prefix)]
        prefix: Option<String>,
        /// Only rigs whose creating process is gone (`xlb-rig-<pid>-...`
        /// with no such pid), so running tests keep their rigs.
        #[arg(long, conflicts_with = "prefix")]
        orphans: bool,
    },
}

/// `--prefix`: what `netns_tests::sweep` refuses, refused when parsed with
/// the rule it breaks (the library's error says only that it is no rig name).
fn sweep_prefix(prefix: &str) -> Result<String, String> {
    if !prefix.starts_with(netns_tests::PREFIX) {
        return Err(format!("it must start with {:?}", netns_tests::PREFIX));
    }
    if prefix.contains('/') {
        return Err(
            "it must not contain '/': it is matched against names (namespaces, work \
             directories, each component of a mount point), never against paths"
                .to_owned(),
        );
    }
    Ok(prefix.to_owned())
}

pub(crate) fn run(command: &SweepCommand) -> anyhow::Result<()> {
    match command {
        SweepCommand::Sweep { prefix, orphans } => {
            let report = if *orphans {
                netns_tests::sweep_orphans().context("sweeping orphaned rigs")?
            } else {
                let prefix = prefix.as_deref().unwrap_or(netns_tests::PREFIX);
                netns_tests::sweep(prefix)
                    .with_context(|| format!("sweeping rigs with prefix {prefix:?}"))?
            };
            print_report(&report)?;
            anyhow::ensure!(
                report.failures.is_empty(),
                "{} leftover(s) could not be removed (see above); run again as root, \
                 or stop the processes holding them",
                report.failures.len()
            );
            Ok(())
        }
    }
}

fn print_report(report: &SweepReport) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let removed = &report.removed;
    for name in &removed.namespaces {
        writeln!(out, "removed namespace {name}")?;
    }
    for pid in &report.killed {
        writeln!(out, "killed process {pid}")?;
    }
    for mount in &removed.mounts {
        writeln!(out, "unmounted {}", mount.display())?;
    }
    for dir in &removed.dirs {
        writeln!(out, "removed directory {}", dir.display())?;
    }
    for failure in &report.failures {
        writeln!(out, "FAILED: {failure}")?;
    }
    writeln!(
        out,
        "swept: {} namespace(s), {} process(es), {} mount(s), {} directory(ies), {} failure(s)",
        removed.namespaces.len(),
        report.killed.len(),
        removed.mounts.len(),
        removed.dirs.len(),
        report.failures.len()
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    fn parse(prefix: &str) -> Result<crate::Cli, clap::Error> {
        crate::Cli::try_parse_from(["xlb-bench", "rig", "sweep", "--prefix", prefix])
    }

    #[test]
    fn a_prefix_is_refused_with_the_rule_it_breaks() {
        let e = parse("xlb-rig-../").expect_err("a slash");
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);
        let text = e.to_string();
        assert!(text.contains("must not contain '/'"), "{text}");
        assert!(!text.contains("start with"), "{text}");
        let text = parse("rig-1-").expect_err("no prefix").to_string();
        assert!(text.contains("must start with \"xlb-rig-\""), "{text}");
        parse("xlb-rig-1234-").unwrap();
    }
}
