//! The data directory: private to the server's user, and held by one server at a time.
//!
//! What must stay true:
//! - the directory is created with mode 0700, and an existing one that others could read
//!   is narrowed to 0700 when it holds only PiCloud's files (the database, blobs and the
//!   secrets key live in it; everything PiCloud creates in it is 0600 or 0700 anyway);
//! - while a server runs it holds an exclusive lock on `<data_dir>/picloud.lock`, so a
//!   second server on the same directory fails at start instead of writing the same
//!   SQLite files and disagreeing with the first (split brain). The operating system
//!   releases the lock when the process ends, even on `kill -9`.
use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::Path;

use anyhow::Context;

/// The lock file's name inside the data directory.
pub(crate) const LOCK_FILE: &str = "picloud.lock";

/// Held for the server's lifetime; dropping it releases the data directory.
#[derive(Debug)]
pub(crate) struct DataDirLock {
    _file: File,
}

/// Create the data directory (0700) or narrow an existing one to 0700.
///
/// # Errors
/// When it cannot be created or its permissions cannot be set.
pub(crate) fn create_private(dir: &Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        builder.mode(0o700);
        builder
            .create(dir)
            .context("cannot create the data directory")?;
        let mode = std::fs::metadata(dir)
            .context("cannot read the data directory")?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            if is_ours(dir) {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                    .context("cannot make the data directory private (0700)")?;
                tracing::info!("made the data directory private (0700)");
            } else {
                tracing::warn!(
                    dir = %dir.display(),
                    "the data directory is open to other users and holds more than PiCloud's \
                     files; give PiCloud a directory of its own, or chmod 700 it"
                );
            }
        }
    }
    #[cfg(not(unix))]
    builder
        .create(dir)
        .context("cannot create the data directory")?;
    Ok(())
}

/// Whether `dir` holds nothing but what PiCloud puts there (then narrowing it is safe; a
/// directory such as `/` or a home directory is left alone).
#[cfg(unix)]
fn is_ours(dir: &Path) -> bool {
    const OURS: [&str; 7] = [
        LOCK_FILE,
        "picloud.db",
        "picloud.db-wal",
        "picloud.db-shm",
        "picloud.db-journal",
        "secret.key",
        "blobs",
    ];
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.map_while(Result::ok).all(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            OURS.contains(&name.as_ref()) || name.starts_with(".secret.key.")
        })
    })
}

/// Take the data directory's lock, or fail saying another server holds it.
///
/// # Errors
/// Another process holds the lock, or the lock file cannot be opened.
pub(crate) fn lock(dir: &Path) -> anyhow::Result<DataDirLock> {
    let path = dir.join(LOCK_FILE);
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(&path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            let holder = holder.trim();
            let by = if holder.is_empty() {
                String::new()
            } else {
                format!(" (process {holder})")
            };
            anyhow::bail!(
                "the data directory {} is in use by another PiCloud server{by}; \
                 stop it first, or give this server its own data directory",
                dir.display()
            );
        }
        Err(TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()));
        }
    }
    // Who holds it, for the message above; the lock itself is what counts.
    file.set_len(0).ok();
    let _ = writeln!(file, "{}", std::process::id());
    Ok(DataDirLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_one_directory_fails_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock(dir.path()).unwrap();
        let err = lock(dir.path()).unwrap_err().to_string();
        assert!(err.contains("in use by another PiCloud server"), "{err}");
        assert!(err.contains(&std::process::id().to_string()), "{err}");
        drop(first);
        lock(dir.path()).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn the_directory_is_created_private_and_an_open_one_is_narrowed() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let fresh = root.path().join("a/b");
        create_private(&fresh).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&fresh), 0o700);
        let open = root.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(open.join("picloud.db"), b"").unwrap();
        create_private(&open).unwrap();
        assert_eq!(mode(&open), 0o700);
        // A directory with other things in it is left as it is.
        let shared = root.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::write(shared.join("notes.txt"), b"").unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
        create_private(&shared).unwrap();
        assert_eq!(mode(&shared), 0o755);
    }
}
