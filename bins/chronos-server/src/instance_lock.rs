//! One `serve` per SQLite database (SPEC section 8): an exclusive OS lock on
//! `<database>.lock`, held for the server's lifetime and released by the OS
//! when the process ends, however it ends. The file holds the holder's process
//! id, so a second server can say who has the database.
//!
//! std's `File::try_lock` (stable since Rust 1.89; `flock` on Unix,
//! `LockFileEx` on Windows) does it; no crate is needed. A separate file, not
//! the database itself: SQLite's own locks on the database file are POSIX
//! record locks, which closing any descriptor of that file would drop.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

/// The lock file beside a SQLite database: `chronos.db` → `chronos.db.lock`.
pub fn lock_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error(
        "the SQLite database {database} is already served by another chronos-server ({holder}, lock file {lock}); one server per SQLite database: stop that one, or give this one another database_url"
    )]
    Held {
        database: String,
        holder: String,
        lock: String,
    },
    /// The lock file could not be opened or written.
    #[error("cannot lock the SQLite database {database} ({lock}): {source}")]
    Io {
        database: String,
        lock: String,
        source: std::io::Error,
    },
}

/// The held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
}

impl InstanceLock {
    /// Takes the lock of `database` without waiting, writing this process's id.
    pub fn acquire(database: &Path) -> Result<Self, LockError> {
        let lock = lock_path(database);
        let io = |source| LockError::Io {
            database: database.display().to_string(),
            lock: lock.display().to_string(),
            source,
        };
        if let Some(dir) = lock.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim() {
                    "" => "process id unknown".to_owned(),
                    pid => format!("process {pid}"),
                };
                return Err(LockError::Held {
                    database: database.display().to_string(),
                    holder,
                    lock: lock.display().to_string(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_database_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("chronos.db");
        let held = InstanceLock::acquire(&db).unwrap();
        let err = InstanceLock::acquire(&db).unwrap_err().to_string();
        assert!(err.contains(&db.display().to_string()), "{err}");
        assert!(
            err.contains(&format!("process {}", std::process::id())),
            "{err}"
        );
        drop(held);
        InstanceLock::acquire(&db).unwrap();
    }
}
