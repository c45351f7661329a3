//! The state file: the ledger's sends written atomically (a temporary file, then a rename) so
//! that a restart does not forget budget already spent. A missing, corrupt or foreign file is a
//! warning and a clean start, never a crash.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::ledger::Spent;

/// Marks the file's format.
const FORMAT: &str = "bcproxy-budget-1";

/// What the state file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    /// Always [`FORMAT`].
    pub format: String,
    /// Which store and credential the sends were spent against.
    pub store: String,
    /// Unix milliseconds of each send still counting (rolling windows).
    pub sends: Vec<u64>,
    /// Unix milliseconds of the fixed window's end and the sends in it (oauth).
    pub fixed: Option<(u64, u64)>,
}

/// Why a state file was not used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// It could not be read.
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    /// It is not a state file.
    #[error("{0} is not a bcproxy budget state file ({1})")]
    Corrupt(PathBuf, String),
    /// It belongs to another store or credential.
    #[error("{0} was written for another store ({1}); starting from a clean ledger")]
    Foreign(PathBuf, String),
    /// It could not be written.
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, std::io::Error),
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Converts an instant of this process to wall-clock milliseconds.
fn to_unix(at: Instant, now: Instant, wall: SystemTime) -> u64 {
    if at <= now {
        unix_ms(wall.checked_sub(now - at).unwrap_or(UNIX_EPOCH))
    } else {
        unix_ms(wall + (at - now))
    }
}

/// Converts wall-clock milliseconds to an instant of this process: clamped to `now` when the
/// process clock cannot go back that far, and `None` for a time in the future (a clock that
/// moved back, or a forged file), which the caller clamps to now.
fn to_instant(ms: u64, now: Instant, wall: SystemTime) -> Option<Instant> {
    let at = UNIX_EPOCH.checked_add(Duration::from_millis(ms))?;
    match wall.duration_since(at) {
        Ok(ago) => Some(now.checked_sub(ago).unwrap_or(now)),
        Err(_) => None,
    }
}

/// Builds the file's content from the ledger.
pub fn snapshot(store: &str, spent: &Spent) -> Saved {
    let (now, wall) = (Instant::now(), SystemTime::now());
    Saved {
        format: FORMAT.into(),
        store: store.into(),
        sends: spent.sends.iter().map(|&t| to_unix(t, now, wall)).collect(),
        fixed: spent
            .fixed
            .map(|(ends, count)| (to_unix(ends, now, wall), count)),
    }
}

/// Writes the file atomically: a temporary file beside it, flushed, then renamed over it.
pub fn save(path: &Path, saved: &Saved) -> Result<(), StateError> {
    let text = serde_json::to_vec(saved)
        .map_err(|e| StateError::Write(path.into(), std::io::Error::other(e)))?;
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&text)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| StateError::Write(path.into(), e))
}

/// Reads the file for `store`, as instants of this process. `Ok(None)` when there is no file
/// yet.
pub fn load(path: &Path, store: &str) -> Result<Option<Spent>, StateError> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StateError::Read(path.into(), e)),
    };
    let saved: Saved = serde_json::from_slice(&text)
        .map_err(|e| StateError::Corrupt(path.into(), e.to_string()))?;
    if saved.format != FORMAT {
        return Err(StateError::Corrupt(
            path.into(),
            format!("unknown format {:?}", saved.format),
        ));
    }
    if saved.store != store {
        return Err(StateError::Foreign(path.into(), saved.store));
    }
    let (now, wall) = (Instant::now(), SystemTime::now());
    let mut future = 0;
    let mut at = |ms: u64| {
        to_instant(ms, now, wall).unwrap_or_else(|| {
            future += 1;
            now
        })
    };
    let mut sends: Vec<Instant> = saved.sends.iter().map(|&ms| at(ms)).collect();
    sends.sort_unstable();
    // A window's end lies ahead by nature: it is bounded when the ledger takes it back.
    let fixed = saved.fixed.map(|(ends, count)| {
        let ends = UNIX_EPOCH
            .checked_add(Duration::from_millis(ends))
            .and_then(|t| t.duration_since(wall).ok())
            .map_or_else(|| at(ends), |ahead| now.checked_add(ahead).unwrap_or(now));
        (ends, count)
    });
    if future > 0 {
        tracing::warn!(
            path = %path.display(),
            count = future,
            "budget.state_file: sends stamped in the future (the clock moved back, or the file was edited) are counted from now"
        );
    }
    Ok(Some(Spent { sends, fixed }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trips_and_refuses_foreign_or_corrupt_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("budget.json");
        assert!(load(&path, "store-a").unwrap().is_none());
        let now = Instant::now();
        let sends = [now - Duration::from_secs(90), now - Duration::from_secs(1)];
        let spent = Spent {
            sends: sends.to_vec(),
            fixed: None,
        };
        save(&path, &snapshot("store-a", &spent)).unwrap();
        let back = load(&path, "store-a").unwrap().unwrap();
        assert_eq!(back.sends.len(), 2);
        assert!(back.fixed.is_none());
        for (a, b) in back.sends.iter().zip(sends) {
            let diff = if *a > b { *a - b } else { b - *a };
            assert!(diff < Duration::from_millis(50), "{diff:?}");
        }
        assert!(matches!(
            load(&path, "store-b"),
            Err(StateError::Foreign(..))
        ));
        // Timestamps in the future are counted from now, not trusted.
        let ahead = Saved {
            format: FORMAT.into(),
            store: "store-a".into(),
            sends: vec![unix_ms(SystemTime::now()) + 86_400_000, u64::MAX],
            fixed: Some((u64::MAX, 3)),
        };
        save(&path, &ahead).unwrap();
        let back = load(&path, "store-a").unwrap().unwrap();
        let now = Instant::now();
        assert!(back.sends.iter().all(|&t| t <= now), "{:?}", back.sends);
        std::fs::write(&path, b"{not json").unwrap();
        assert!(matches!(
            load(&path, "store-a"),
            Err(StateError::Corrupt(..))
        ));
        assert!(!path.with_extension("tmp").exists());
    }
}

/// The state file of a running proxy: loaded once at start, written when the ledger changed
/// (at most every few seconds) and at shutdown.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
    store: String,
}

impl StateFile {
    /// The file at `path`, for the store and credential named by `store`.
    pub fn new(path: PathBuf, store: String) -> StateFile {
        StateFile { path, store }
    }

    /// The sends the file holds; a missing, corrupt or foreign file is logged and ignored.
    pub fn load(&self) -> Option<Spent> {
        match load(&self.path, &self.store) {
            Ok(Some(spent)) => {
                tracing::info!(path = %self.path.display(), sends = spent.sends.len(), "budget.restored");
                Some(spent)
            }
            Ok(None) => {
                tracing::info!(path = %self.path.display(), "budget.state_file: none yet, starting from the store's headers");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "budget.state_file: ignored, starting from the store's headers");
                None
            }
        }
    }

    /// Writes `spent`; a failure is logged.
    pub fn save(&self, spent: &Spent) {
        if let Err(e) = save(&self.path, &snapshot(&self.store, spent)) {
            tracing::warn!(error = %e, "budget.state_file");
        }
    }
}
