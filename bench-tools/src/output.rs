//! Where a run writes its results (`--json`, `pairs --keep`), checked before
//! it measures: the file is written only at the end, and a typo found then
//! would throw away a run of minutes.
//!
//! Nothing is created or changed here: an existing file keeps its figures
//! until the run has new ones, and a run that fails leaves no empty file
//! behind for `report` to trip over.

use std::{
    fs::OpenOptions,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};

/// Checks that the file `path`, given as `flag`, can be written: it is no
/// directory, and it can be opened for writing if it exists, or created in
/// its directory if not.
pub(crate) fn check_file(flag: &str, path: &Path) -> anyhow::Result<()> {
    let shown = path.display();
    if path.is_dir() {
        bail!("{flag} {shown} is a directory: give the file to write");
    }
    if path.exists() {
        // Opened without truncating: the old figures stay until the new ones.
        OpenOptions::new()
            .write(true)
            .open(path)
            .with_context(|| format!("{flag} {shown} cannot be written"))?;
        return Ok(());
    }
    let dir = parent(path);
    if !dir.is_dir() {
        bail!(
            "{flag} {shown}: there is no directory {} (create it, or fix the path)",
            dir.display()
        );
    }
    can_create_in(&dir).with_context(|| format!("{flag} {shown} cannot be created"))
}

/// Checks that files can be created in the directory `dir`, given as `flag`.
pub(crate) fn check_dir(flag: &str, dir: &Path) -> anyhow::Result<()> {
    if !dir.is_dir() {
        bail!("{flag} {} is not a directory", dir.display());
    }
    can_create_in(dir).with_context(|| format!("{flag} {}", dir.display()))
}

/// The directory `path` would be created in.
fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Creates and drops an unnamed file in `dir` (`O_TMPFILE` where the file
/// system has it): the one test of a directory's permissions, read-only
/// mount and quota that does not second-guess the kernel, and leaves nothing
/// behind even if the process is killed.
fn can_create_in(dir: &Path) -> anyhow::Result<()> {
    tempfile::tempfile_in(dir)
        .map(drop)
        .with_context(|| format!("no file can be created in {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(result: anyhow::Result<()>) -> String {
        format!("{:#}", result.expect_err("refused"))
    }

    #[test]
    fn a_file_in_a_directory_that_exists_can_be_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prog.json");
        check_file("--json", &path).unwrap();
        assert!(!path.exists(), "the check creates nothing");
        std::fs::write(&path, "old figures").unwrap();
        check_file("--json", &path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old figures");
        // A bare file name is created in the current directory.
        assert_eq!(parent(Path::new("prog.json")), Path::new("."));
    }

    #[test]
    fn a_missing_directory_is_named_with_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-dir/prog.json");
        let text = message(check_file("--json", &path));
        assert!(text.starts_with("--json "), "{text}");
        assert!(
            text.contains(&format!(
                "there is no directory {}",
                dir.path().join("no-such-dir").display()
            )),
            "{text}"
        );
    }

    #[test]
    fn a_directory_is_no_file_and_a_file_no_directory() {
        let dir = tempfile::tempdir().unwrap();
        let text = message(check_file("--json", dir.path()));
        assert!(text.contains("is a directory"), "{text}");
        let file = dir.path().join("keep");
        std::fs::write(&file, "").unwrap();
        let text = message(check_dir("--keep", &file));
        assert!(text.starts_with("--keep ") && text.contains("is not a directory"));
        check_dir("--keep", dir.path()).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
