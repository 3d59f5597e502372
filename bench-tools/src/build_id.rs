//! Which build measured a run. Every JSON `xlb-bench` writes carries it
//! (`build`), so that a figure can be traced to the source and the datapath
//! it was measured with: `report` shows the commit beside each input file,
//! and `pairs` the identity of each of the two builds it compares.

use std::{fmt::Write as _, io::Read as _, path::Path};

use serde::{Deserialize, Serialize};

/// What `commit` holds when the binary was built outside a git checkout, or
/// without git (`build.rs`).
const UNKNOWN: &str = "unknown";

/// The identity of the `xlb-bench` binary that wrote a document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BuildId {
    /// The commit the source tree had checked out when the binary was built
    /// (`git rev-parse HEAD`), or "unknown" outside a git checkout.
    pub(crate) commit: String,
    /// Whether the tracked files it is built from differed from `commit`
    /// then (`git status` of those, `build.rs`);
    /// null when the commit is unknown.
    pub(crate) dirty: Option<bool>,
    /// The SHA-256 of the eBPF object built into the binary, in hex: every
    /// program it loads comes from those bytes.
    pub(crate) datapath_sha256: String,
}

impl BuildId {
    /// This binary's.
    pub(crate) fn of_this_binary() -> Self {
        Self {
            commit: env!("XLB_BUILD_COMMIT").to_owned(),
            dirty: match env!("XLB_BUILD_DIRTY") {
                "true" => Some(true),
                "false" => Some(false),
                _ => None,
            },
            datapath_sha256: sha256_hex(xdp_lb::ebpf_object()),
        }
    }

    /// The commit as the report shows it: its first 12 digits, and whether
    /// the tree had changes beyond it.
    pub(crate) fn commit_shown(&self) -> String {
        if self.commit == UNKNOWN {
            return "built outside a git checkout".to_owned();
        }
        let short: String = self.commit.chars().take(12).collect();
        match self.dirty {
            Some(true) => format!("commit {short} with uncommitted changes"),
            Some(false) | None => format!("commit {short}"),
        }
    }
}

/// `build` as the report shows it beside a file; a file written before
/// builds were recorded has none.
pub(crate) fn shown(build: Option<&BuildId>) -> String {
    build.map_or_else(|| "build not recorded".to_owned(), BuildId::commit_shown)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(&ring::digest::digest(&ring::digest::SHA256, bytes))
}

/// The SHA-256 of the file at `path`, in hex, read in blocks: `pairs`
/// tells by it that a binary was replaced, whatever the change (a rebuild
/// of the userspace alone, from a tree already dirty, keeps its `BuildId`).
pub(crate) fn file_sha256(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let mut block = vec![0; 1 << 16];
    loop {
        match file.read(&mut block)? {
            0 => return Ok(hex(&context.finish())),
            n => context.update(&block[..n]),
        }
    }
}

fn hex(digest: &ring::digest::Digest) -> String {
    let mut hex = String::with_capacity(64);
    for byte in digest.as_ref() {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_binary_names_its_commit_and_its_datapath() {
        let build = BuildId::of_this_binary();
        // Tests run from the checkout: the commit is known, 40 hex digits.
        assert_eq!(build.commit.len(), 40, "{build:?}");
        assert!(build.commit.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(build.dirty.is_some(), "{build:?}");
        assert_eq!(build.datapath_sha256, sha256_hex(xdp_lb::ebpf_object()));
        assert_eq!(build.datapath_sha256.len(), 64);
    }

    #[test]
    fn the_datapath_hash_is_sha256() {
        // FIPS 180-2's test vector.
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_files_hash_is_that_of_its_bytes_across_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("xlb-bench");
        // Two and a half of the 64 KiB blocks it reads, not all alike.
        let bytes: Vec<u8> = (0..(5 << 15)).map(|i: u32| (i % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(file_sha256(&path).unwrap(), sha256_hex(&bytes));
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(file_sha256(&path).unwrap(), sha256_hex(b"abc"));
        assert!(file_sha256(&dir.path().join("absent")).is_err());
    }

    #[test]
    fn the_report_shows_the_short_commit_and_what_it_does_not_know() {
        let build = |commit: &str, dirty| BuildId {
            commit: commit.to_owned(),
            dirty,
            datapath_sha256: "00".repeat(32),
        };
        let commit = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(
            shown(Some(&build(commit, Some(false)))),
            "commit 0123456789ab"
        );
        assert_eq!(
            shown(Some(&build(commit, Some(true)))),
            "commit 0123456789ab with uncommitted changes"
        );
        assert_eq!(
            shown(Some(&build(UNKNOWN, None))),
            "built outside a git checkout"
        );
        assert_eq!(shown(None), "build not recorded");
    }
}
