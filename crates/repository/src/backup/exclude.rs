//! What a backup leaves out, in restic's terms: `--exclude` / `--iexclude` patterns,
//! `--exclude-if-present`, `--exclude-larger-than` and `--one-file-system`.
//!
//! Patterns (see [`crate::pattern`]) are matched against the absolute path, so `*.tmp` excludes
//! every `.tmp` file and `cache` every entry named `cache`. A matching directory is left out with
//! everything below it.

use std::path::Path;

use crate::error::{Error, Result};
use crate::pattern::PatternSet;

/// The exclusion rules of one backup (all empty: nothing is excluded).
#[derive(Debug, Clone, Default)]
pub struct Excludes {
    patterns: PatternSet,
    /// A directory holding an entry of one of these names is left out (restic's
    /// `--exclude-if-present`; CACHEDIR.TAG is the usual one).
    pub if_present: Vec<String>,
    /// Files larger than this many bytes are left out.
    pub larger_than: Option<u64>,
    /// Stay on the file system of each backed-up path: directories of other file systems are
    /// kept, empty.
    pub one_file_system: bool,
}

impl Excludes {
    /// Adds a pattern (`case_insensitive` for `--iexclude`).
    ///
    /// # Errors
    /// `Invalid` for an empty pattern or an unclosed `[`.
    pub fn add_pattern(&mut self, pattern: &str, case_insensitive: bool) -> Result<()> {
        self.patterns.add(pattern, case_insensitive)
    }

    /// Adds the patterns of an exclude file: one per line; empty lines and `#` comments are
    /// skipped, surrounding blanks trimmed.
    ///
    /// # Errors
    /// The file cannot be read; a bad pattern (named with its line).
    pub fn add_file(&mut self, file: &Path, case_insensitive: bool) -> Result<()> {
        let text =
            std::fs::read_to_string(file).map_err(|e| Error::io("read exclude file", file, e))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            self.add_pattern(line, case_insensitive)
                .map_err(|e| Error::Invalid(format!("{}:{}: {e}", file.display(), n + 1)))?;
        }
        Ok(())
    }

    /// Whether nothing is ever excluded (the walker then skips every test).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
            && self.if_present.is_empty()
            && self.larger_than.is_none()
            && !self.one_file_system
    }

    /// Whether `path` matches a pattern.
    pub fn matches(&self, path: &Path) -> bool {
        self.patterns.matches(path)
    }

    /// Whether a directory holds one of the `if_present` markers.
    pub fn has_marker(&self, dir: &Path) -> bool {
        self.if_present.iter().any(|m| dir.join(m).symlink_metadata().is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(patterns: &[&str]) -> Excludes {
        let mut e = Excludes::default();
        for p in patterns {
            e.add_pattern(p, false).unwrap();
        }
        e
    }

    #[test]
    fn patterns_follow_restics_rules() {
        let e = ex(&["*.tmp", "/data/cache", "logs/**/*.gz", "[ab]?.bin"]);
        assert!(e.matches(Path::new("/data/x/y.tmp")));
        assert!(!e.matches(Path::new("/data/x/y.tmpx")));
        assert!(e.matches(Path::new("/data/cache")));
        assert!(!e.matches(Path::new("/other/data/cache")), "anchored at the root");
        assert!(e.matches(Path::new("/srv/logs/2026/12/a.gz")));
        assert!(e.matches(Path::new("/srv/logs/a.gz")));
        assert!(e.matches(Path::new("/x/a1.bin")));
        assert!(!e.matches(Path::new("/x/c1.bin")));
        let mut i = Excludes::default();
        i.add_pattern("*.JPG", true).unwrap();
        assert!(i.matches(Path::new("/p/holiday.jpg")));
        assert!(Excludes::default().add_pattern("a[b", false).is_err());
    }
}
