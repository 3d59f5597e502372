//! Records the source `xlb-bench` is built from, for the `build` of every
//! JSON it writes (`src/build_id.rs`): the commit checked out, and whether
//! the tracked files it is built from ([`BUILT_FROM`]) differ from it (as
//! `git describe --dirty` judges it: untracked files change no build until
//! a tracked file names them, and that file is then modified). Outside a
//! git checkout (a source tarball), or without git, both are "unknown".
//!
//! Cargo runs this again when the checkout moves (HEAD, its branch, the
//! index) or one of those files changes, so a binary never carries the
//! identity of a tree it was not built from.

use std::process::Command;

/// What goes into the binary, from the top of the checkout: the crates it
/// is built from and the workspace's manifest and lock. A change elsewhere
/// (the docs, the bench notes written while measuring) changes no build.
const BUILT_FROM: [&str; 7] = [
    ":/bench-tools",
    ":/consistent-hash",
    ":/control-plane",
    ":/netns-tests",
    ":/xdp-lb",
    ":/Cargo.toml",
    ":/Cargo.lock",
];

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| -> Option<String> {
        // No optional locks: `git status` would otherwise refresh the index,
        // whose new mtime would run this script again on the next build.
        let out = Command::new("git")
            .arg("--no-optional-locks")
            .args(args)
            .current_dir(&dir)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim_end().to_owned())
    };
    let commit = git(&["rev-parse", "--verify", "HEAD"]);
    let dirty = commit
        .as_ref()
        .and_then(|_| {
            let mut args = vec!["status", "--porcelain", "--untracked-files=no", "--"];
            args.extend(BUILT_FROM);
            git(&args)
        })
        .map(|changes| !changes.is_empty());
    println!(
        "cargo:rustc-env=XLB_BUILD_COMMIT={}",
        commit.as_deref().unwrap_or("unknown")
    );
    println!(
        "cargo:rustc-env=XLB_BUILD_DIRTY={}",
        dirty.map_or("unknown", |d| if d { "true" } else { "false" })
    );
    // Without a checkout there is nothing to watch but this script.
    println!("cargo:rerun-if-changed=build.rs");
    if commit.is_none() {
        return;
    }
    let mut watched = Vec::new();
    // The git directory's files (a worktree's HEAD and index are its own,
    // its branches are in the common directory: `--git-path` finds each).
    for file in ["HEAD", "index", "packed-refs"] {
        watched.extend(git(&[
            "rev-parse",
            "--path-format=absolute",
            "--git-path",
            file,
        ]));
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.extend(git(&[
            "rev-parse",
            "--path-format=absolute",
            "--git-path",
            &branch,
        ]));
    }
    if let (Some(top), Some(files)) = (
        git(&["rev-parse", "--show-toplevel"]),
        // Every tracked file the binary is built from, named from the top.
        {
            let mut args = vec!["ls-files", "-z", "--full-name", "--"];
            args.extend(BUILT_FROM);
            git(&args)
        },
    ) {
        watched.extend(
            files
                .split('\0')
                .filter(|f| !f.is_empty())
                .map(|f| format!("{top}/{f}")),
        );
    }
    // Only what is there: cargo runs a script again on every build while a
    // path it watches is missing (`packed-refs` until git packs a ref).
    for path in watched.iter().filter(|p| std::path::Path::new(p).exists()) {
        println!("cargo:rerun-if-changed={path}");
    }
}
