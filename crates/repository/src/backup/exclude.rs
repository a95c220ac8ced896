//! What a backup leaves out, in restic's terms: `--exclude` / `--iexclude` patterns,
//! `--exclude-if-present`, `--exclude-larger-than` and `--one-file-system`.
//!
//! Patterns are matched against the absolute path, component by component: `*` and `?` and
//! `[...]` stay within one component, `**` spans any number of them. A pattern that does not
//! start with `/` may match at any depth (restic's rule), so `*.tmp` excludes every `.tmp` file and
//! `cache` every entry named `cache`. A matching directory is left out with everything below it.

use std::path::Path;

use crate::error::{Error, Result};

/// The exclusion rules of one backup (all empty: nothing is excluded).
#[derive(Debug, Clone, Default)]
pub struct Excludes {
    patterns: Vec<Pattern>,
    /// A directory holding an entry of one of these names is left out (restic's
    /// `--exclude-if-present`; CACHEDIR.TAG is the usual one).
    pub if_present: Vec<String>,
    /// Files larger than this many bytes are left out.
    pub larger_than: Option<u64>,
    /// Stay on the file system of each backed-up path: directories of other file systems are
    /// kept, empty.
    pub one_file_system: bool,
}

#[derive(Debug, Clone)]
struct Pattern {
    parts: Vec<Vec<u8>>,
    case_insensitive: bool,
}

impl Excludes {
    /// Adds a pattern (`case_insensitive` for `--iexclude`).
    ///
    /// # Errors
    /// `Invalid` for an empty pattern or an unclosed `[`.
    pub fn add_pattern(&mut self, pattern: &str, case_insensitive: bool) -> Result<()> {
        let p = pattern.trim_end_matches('/');
        if p.is_empty() {
            return Err(Error::Invalid(format!("exclude pattern {pattern:?} is empty")));
        }
        let mut parts: Vec<Vec<u8>> = Vec::new();
        if !p.starts_with('/') && !p.starts_with("**") {
            parts.push(b"**".to_vec());
        }
        for c in p.split('/').filter(|c| !c.is_empty()) {
            if c.matches('[').count() > c.matches(']').count() {
                return Err(Error::Invalid(format!(
                    "exclude pattern {pattern:?} has an unclosed ["
                )));
            }
            let c = if case_insensitive { c.to_lowercase() } else { c.to_string() };
            parts.push(c.into_bytes());
        }
        self.patterns.push(Pattern { parts, case_insensitive });
        Ok(())
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
        use std::os::unix::ffi::OsStrExt;
        let comps: Vec<&[u8]> =
            path.as_os_str().as_bytes().split(|b| *b == b'/').filter(|c| !c.is_empty()).collect();
        let mut lower: Option<Vec<Vec<u8>>> = None;
        self.patterns.iter().any(|p| {
            if p.case_insensitive {
                let l = lower
                    .get_or_insert_with(|| comps.iter().map(|c| c.to_ascii_lowercase()).collect());
                let l: Vec<&[u8]> = l.iter().map(Vec::as_slice).collect();
                match_parts(&p.parts, &l)
            } else {
                match_parts(&p.parts, &comps)
            }
        })
    }

    /// Whether a directory holds one of the `if_present` markers.
    pub fn has_marker(&self, dir: &Path) -> bool {
        self.if_present.iter().any(|m| dir.join(m).symlink_metadata().is_ok())
    }
}

/// Whether the pattern components match the whole path (`**` spans zero or more components).
fn match_parts(pat: &[Vec<u8>], path: &[&[u8]]) -> bool {
    match pat.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first.as_slice() == b"**" => {
            (0..=path.len()).any(|skip| match_parts(rest, &path[skip..]))
        }
        Some((first, rest)) => match path.split_first() {
            Some((c, more)) => match_component(first, c) && match_parts(rest, more),
            None => false,
        },
    }
}

/// Shell-style match of one component: `*`, `?`, `[abc]`, `[a-z]`, `[!x]`.
fn match_component(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| match_component(rest, &s[i..])),
        Some((b'?', rest)) => !s.is_empty() && match_component(rest, &s[1..]),
        Some((b'[', rest)) => {
            let Some(end) = rest.iter().skip(1).position(|b| *b == b']').map(|i| i + 1) else {
                return false;
            };
            let Some((c, more)) = s.split_first() else { return false };
            let (negate, set) = match rest[..end].split_first() {
                Some((b'!' | b'^', set)) => (true, set),
                _ => (false, &rest[..end]),
            };
            let mut hit = false;
            let mut i = 0;
            while i < set.len() {
                if i + 2 < set.len() && set[i + 1] == b'-' {
                    hit |= (set[i]..=set[i + 2]).contains(c);
                    i += 3;
                } else {
                    hit |= set[i] == *c;
                    i += 1;
                }
            }
            hit != negate && match_component(&rest[end + 1..], more)
        }
        Some((c, rest)) => s.first() == Some(c) && match_component(rest, &s[1..]),
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
