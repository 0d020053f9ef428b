//! Damaging a stopped node's data directory on purpose.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use crate::noise::seeded_bytes;

/// Files larger than this are replaced by this much garbage.
const MAX_GARBAGE: usize = 64 << 20;

/// Overwrite every regular file under `dir` with garbage of the same length (at
/// least 64 bytes), for tests of a server facing a corrupt data directory.
pub fn corrupt_files(dir: &Path, seed: u64) -> io::Result<usize> {
    let mut count = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            count += corrupt_files(&entry.path(), seed.wrapping_add(count as u64 + 1))?;
        } else if kind.is_file() {
            let len = usize::try_from(entry.metadata()?.len()).unwrap_or(MAX_GARBAGE);
            let len = len.clamp(64, MAX_GARBAGE);
            let garbage = seeded_bytes(seed.wrapping_add(count as u64), len);
            File::create(entry.path())?.write_all(&garbage)?;
            count += 1;
        }
    }
    Ok(count)
}
