//! How this peer trusts the coordinator: a CA file given with `--ca-cert`,
//! or, without one, the coordinator's certificate fingerprint pinned on first
//! use in `DATA_DIR/known_coordinators` (one `HOST:PORT sha256:HEX` line per
//! coordinator, as SSH's known_hosts). A changed certificate is refused.
//!
//! With several entries (`--coordinator a:7070,b:7070`) each entry has its
//! own pin, made when it first answers; every address a name resolves to
//! must present the certificate pinned for that name. Pins are never shared
//! between entries, even when the certificates are the same: a pin says
//! what was seen at that name, nothing more.

use common::Fingerprint;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// File name of the pin list inside the data folder.
pub const PINS_FILE: &str = "known_coordinators";

/// Errors reading or writing pins.
#[derive(Debug, Error)]
pub enum TrustError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A line of the file is not `HOST:PORT sha256:HEX`.
    #[error("{path}, line {line}: expected 'HOST:PORT sha256:HEX'")]
    BadLine {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
}

/// The pins of one data folder.
#[derive(Debug, Clone)]
pub struct Pins {
    path: PathBuf,
}

impl Pins {
    /// The pin list of `data_dir`.
    pub fn new(data_dir: &Path) -> Pins {
        Pins {
            path: data_dir.join(PINS_FILE),
        }
    }

    /// The file holding the pins.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> Result<Vec<(String, Fingerprint)>, TrustError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(TrustError::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = || TrustError::BadLine {
                path: self.path.clone(),
                line: i + 1,
            };
            let (host, fp) = line.split_once(' ').ok_or_else(bad)?;
            out.push((host.to_string(), fp.trim().parse().map_err(|_| bad())?));
        }
        Ok(out)
    }

    /// The pinned fingerprint of `coordinator`, if any.
    pub fn get(&self, coordinator: &str) -> Result<Option<Fingerprint>, TrustError> {
        Ok(self
            .read()?
            .into_iter()
            .find(|(h, _)| h == coordinator)
            .map(|(_, fp)| fp))
    }

    /// Pins `fp` for `coordinator`.
    pub fn add(&self, coordinator: &str, fp: Fingerprint) -> Result<(), TrustError> {
        let mut pins = self.read()?;
        pins.retain(|(h, _)| h != coordinator);
        pins.push((coordinator.to_string(), fp));
        let mut text = String::from(
            "# Coordinator certificates pinned on first use (HOST:PORT FINGERPRINT).\n",
        );
        for (h, fp) in pins {
            text.push_str(&format!("{h} {fp}\n"));
        }
        certs::write_file(&self.path, &text, 0o600).map_err(|e| TrustError::Io {
            path: self.path.clone(),
            source: std::io::Error::other(e.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_round_trip_and_bad_lines_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let pins = Pins::new(dir.path());
        assert_eq!(pins.get("h:1").unwrap(), None);
        let fp = Fingerprint::of(b"cert");
        pins.add("h:1", fp).unwrap();
        pins.add("h:2", Fingerprint::of(b"other")).unwrap();
        assert_eq!(pins.get("h:1").unwrap(), Some(fp));
        std::fs::write(pins.path(), "h:1 nonsense\n").unwrap();
        assert!(matches!(
            pins.get("h:1"),
            Err(TrustError::BadLine { line: 1, .. })
        ));
    }
}
