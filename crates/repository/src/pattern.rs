//! restic's path patterns, shared by backup excludes, restore includes and excludes, and `find`.
//!
//! A pattern is matched against a path component by component: `*`, `?` and `[...]` stay within
//! one component, `**` spans any number of them. A pattern that does not start with `/` may match
//! at any depth, so `*.tmp` matches every `.tmp` file and `cache` every entry named `cache`.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::{Error, Result};

/// Patterns, any of which may match (empty: none does).
#[derive(Debug, Clone, Default)]
pub struct PatternSet {
    patterns: Vec<Pattern>,
}

/// Pattern components against path components.
type Matcher = fn(&[Vec<u8>], &[&[u8]]) -> bool;

#[derive(Debug, Clone)]
struct Pattern {
    parts: Vec<Vec<u8>>,
    case_insensitive: bool,
}

impl PatternSet {
    /// Adds a pattern (`case_insensitive` for restic's `--iexclude`, `--iinclude`, `-i`).
    ///
    /// # Errors
    /// `Invalid` for an empty pattern or an unclosed `[`.
    pub fn add(&mut self, pattern: &str, case_insensitive: bool) -> Result<()> {
        let p = pattern.trim_end_matches('/');
        if p.is_empty() {
            return Err(Error::Invalid(format!("pattern {pattern:?} is empty")));
        }
        let mut parts: Vec<Vec<u8>> = Vec::new();
        if !p.starts_with('/') && !p.starts_with("**") {
            parts.push(b"**".to_vec());
        }
        for c in p.split('/').filter(|c| !c.is_empty()) {
            if c.matches('[').count() > c.matches(']').count() {
                return Err(Error::Invalid(format!("pattern {pattern:?} has an unclosed [")));
            }
            let c = if case_insensitive { c.to_lowercase() } else { c.to_string() };
            parts.push(c.into_bytes());
        }
        self.patterns.push(Pattern { parts, case_insensitive });
        Ok(())
    }

    /// Adds a pattern written against the paths `snapshots` shows: an absolute pattern that
    /// starts with one of the snapshot's backed-up paths (`/home/me/src/*.rs`) is matched
    /// where that path is stored in the snapshot's tree (`/src/*.rs`).
    ///
    /// # Errors
    /// As [`PatternSet::add`].
    pub fn add_in_snapshot(
        &mut self,
        pattern: &str,
        case_insensitive: bool,
        snapshot_paths: &[String],
    ) -> Result<()> {
        for sp in snapshot_paths {
            let sp = sp.trim_end_matches('/');
            let Some(rest) = pattern.strip_prefix(sp) else { continue };
            let name = sp.rsplit('/').next().unwrap_or_default();
            if sp.len() > 1 && (rest.is_empty() || rest.starts_with('/')) && !name.is_empty() {
                return self.add(&format!("/{name}{rest}"), case_insensitive);
            }
        }
        self.add(pattern, case_insensitive)
    }

    /// Whether no pattern was added.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `path` matches a pattern.
    pub fn matches(&self, path: &Path) -> bool {
        self.any(path, match_parts)
    }

    /// Whether something below directory `path` could match a pattern (so a restore with
    /// includes must look inside it).
    pub fn may_match_below(&self, path: &Path) -> bool {
        self.any(path, match_prefix)
    }

    fn any(&self, path: &Path, f: Matcher) -> bool {
        let comps: Vec<&[u8]> =
            path.as_os_str().as_bytes().split(|b| *b == b'/').filter(|c| !c.is_empty()).collect();
        let mut lower: Option<Vec<Vec<u8>>> = None;
        self.patterns.iter().any(|p| {
            if p.case_insensitive {
                let l = lower
                    .get_or_insert_with(|| comps.iter().map(|c| c.to_ascii_lowercase()).collect());
                let l: Vec<&[u8]> = l.iter().map(Vec::as_slice).collect();
                f(&p.parts, &l)
            } else {
                f(&p.parts, &comps)
            }
        })
    }
}

/// Whether the path is a proper ancestor of paths the pattern may match: its components match a
/// prefix of the pattern with some of the pattern left.
fn match_prefix(pat: &[Vec<u8>], path: &[&[u8]]) -> bool {
    match (pat.split_first(), path.split_first()) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some((first, _)), Some(_)) if first.as_slice() == b"**" => true,
        (Some((first, rest)), Some((c, more))) => {
            match_component(first, c) && match_prefix(rest, more)
        }
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

    #[test]
    fn ancestors_of_possible_matches() {
        let mut p = PatternSet::default();
        p.add("/src/sub/*.txt", false).unwrap();
        assert!(p.may_match_below(Path::new("/src")));
        assert!(p.may_match_below(Path::new("/src/sub")));
        assert!(!p.may_match_below(Path::new("/src/other")));
        assert!(!p.may_match_below(Path::new("/src/sub/a.txt")));
        assert!(p.matches(Path::new("/src/sub/a.txt")));
        let mut any = PatternSet::default();
        any.add("*.txt", false).unwrap();
        assert!(any.may_match_below(Path::new("/x/y")));
    }

    #[test]
    fn snapshot_paths_as_shown() {
        let mut p = PatternSet::default();
        p.add_in_snapshot("/home/me/src/sub", false, &["/home/me/src".into()]).unwrap();
        assert!(p.matches(Path::new("/src/sub")));
        p.add_in_snapshot("/home/me/srcx", false, &["/home/me/src".into()]).unwrap();
        assert!(p.matches(Path::new("/home/me/srcx")));
    }
}
