//! The one place the crate touches the file system: saving an archive to a path safely.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use crate::error::SnapshotError;
use crate::reader::verify;
use crate::types::{Inspection, SnapshotMeta};
use crate::writer::SnapshotWriter;

/// Suffix of the temporary file an archive is written to before it is verified and renamed.
pub const UNVERIFIED_SUFFIX: &str = ".unverified";

/// Output buffer of the file writer; large writes keep the number of system calls low.
const FILE_BUFFER: usize = 256 * 1024;

/// Writes an archive to `path` so that a crash never leaves a half-written or unverified file under that name.
///
/// Steps: create `<path>.unverified` (replacing a stale one), let `fill` write the records, write the trailer,
/// fsync the file, read it back and [`verify`] it, check it is the archive just written, rename it to `path`
/// (replacing an existing file atomically on POSIX systems) and fsync the directory so the rename itself is durable.
/// On any error the temporary file is removed (best effort) and `path` is untouched.
///
/// Two saves to the same path at the same time would share the temporary file; callers serialise them.
pub fn save_to_path<F>(path: &Path, meta: &SnapshotMeta, fill: F) -> Result<Inspection, SnapshotError>
where
    F: FnOnce(&mut SnapshotWriter<BufWriter<File>>) -> Result<(), SnapshotError>,
{
    let temp = unverified_path(path)?;
    let result = write_verify_rename(path, &temp, meta, fill);
    if result.is_err() {
        // The temporary file holds nothing anyone can use; the original error is what matters.
        let _ = fs::remove_file(&temp);
    }
    result
}

/// `<path>.unverified`, for a path that names a file.
pub fn unverified_path(path: &Path) -> Result<PathBuf, SnapshotError> {
    let Some(name) = path.file_name() else {
        return Err(SnapshotError::InvalidPath {
            path: path.to_path_buf(),
            reason: "it does not name a file",
        });
    };
    let mut temp_name = OsString::from(name);
    temp_name.push(UNVERIFIED_SUFFIX);
    Ok(path.with_file_name(temp_name))
}

fn write_verify_rename<F>(
    path: &Path,
    temp: &Path,
    meta: &SnapshotMeta,
    fill: F,
) -> Result<Inspection, SnapshotError>
where
    F: FnOnce(&mut SnapshotWriter<BufWriter<File>>) -> Result<(), SnapshotError>,
{
    let file_error = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| SnapshotError::File { action, path, source }
    };

    let file = File::create(temp).map_err(file_error("create", temp))?;
    let mut writer = SnapshotWriter::new(BufWriter::with_capacity(FILE_BUFFER, file), meta)?;
    fill(&mut writer)?;
    let (out, written) = writer.finish()?;
    let file = out.into_inner().map_err(|error| SnapshotError::File {
        action: "flush",
        path: temp.to_path_buf(),
        source: error.into_error(),
    })?;
    file.sync_all().map_err(file_error("sync", temp))?;
    drop(file);

    let read_back = File::open(temp).map_err(file_error("reopen", temp))?;
    let verified = verify(read_back)?;
    if verified != written {
        return Err(SnapshotError::SavedFileMismatch {
            path: temp.to_path_buf(),
        });
    }

    fs::rename(temp, path).map_err(file_error("rename into place", path))?;
    sync_parent_dir(path)?;
    Ok(verified)
}

#[cfg(unix)]
fn sync_parent_dir(path: &Path) -> Result<(), SnapshotError> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let handle = File::open(dir).map_err(|source| SnapshotError::File {
        action: "open the directory of",
        path: path.to_path_buf(),
        source,
    })?;
    handle.sync_all().map_err(|source| SnapshotError::File {
        action: "sync the directory of",
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(not(unix))]
fn sync_parent_dir(_path: &Path) -> Result<(), SnapshotError> {
    // Directories cannot be opened for syncing here; the rename is as durable as the platform makes it.
    Ok(())
}
