//! Files only the server's user can read: directories 0700, files 0600 (on Unix; plain
//! creation elsewhere). The database, blobs and the secrets key are created this way.
use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

/// `create_dir_all`, with every directory it creates private.
pub(crate) fn create_dir_all(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// A new file (it must not exist), readable and writable by the owner only.
pub(crate) fn create_new_file(path: &Path) -> io::Result<File> {
    private_options().create_new(true).open(path)
}

/// Create `path` empty and private if it does not exist yet; an existing file is left as
/// it is. SQLite gives its `-wal` and `-shm` files the database file's mode.
pub(crate) fn touch(path: &Path) -> io::Result<()> {
    match create_new_file(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

fn private_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}
