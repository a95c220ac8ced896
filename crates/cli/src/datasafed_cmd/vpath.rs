//! Virtual paths: datasafed's cleaning and base-path joining, and Go's `filepath.Match`.

use anyhow::bail;

/// Go's `path.Clean` for `/`-separated paths.
pub fn clean(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let rooted = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for comp in p.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|c| *c != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            c => out.push(c),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

/// datasafed's relative form of a remote path: cleaned, without a leading `/` or `./`, "" for
/// the root. A path that climbs above the root is refused.
pub fn relative(p: &str) -> anyhow::Result<String> {
    let c = clean(p);
    let c = c.strip_prefix("./").unwrap_or(&c);
    let c = c.strip_prefix('/').unwrap_or(c);
    // datasafed's own test is a prefix test, so it also refuses names like "..x" at the root.
    if c.starts_with("..") {
        bail!("invalid rpath {p:?}: prefixed with '..'");
    }
    Ok(if c == "." { String::new() } else { c.to_string() })
}

/// The base path from `DATASAFED_BACKEND_BASE_PATH`, in relative form.
pub fn base(b: &str) -> anyhow::Result<String> {
    let b = b.trim();
    if b.is_empty() {
        return Ok(String::new());
    }
    let c = clean(b);
    if c.starts_with("..") {
        bail!("base path {b:?} prefixed with '..'");
    }
    if c == "." {
        return Ok(String::new());
    }
    let c = c.strip_prefix('/').unwrap_or(&c);
    Ok(c.strip_prefix("./").unwrap_or(c).to_string())
}

/// The absolute virtual path ("/base/rel", "/" for the root) of a remote path under a base.
pub fn absolute(base: &str, rpath: &str) -> anyhow::Result<String> {
    let rel = relative(rpath)?;
    Ok(match (base.is_empty(), rel.is_empty()) {
        (true, _) => format!("/{rel}"),
        (false, true) => format!("/{base}"),
        (false, false) => format!("/{base}/{rel}"),
    })
}

/// `path` shown relative to the absolute base directory `base_abs`, as datasafed prints it.
pub fn display(base_abs: &str, path: &str) -> String {
    let rest = if base_abs == "/" { path } else { path.strip_prefix(base_abs).unwrap_or(path) };
    rest.trim_start_matches('/').to_string()
}

/// Whether `path` is `dir` itself or below it (both absolute, cleaned).
pub fn is_within(path: &str, dir: &str) -> bool {
    dir == "/" || path == dir || path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

/// The last component.
pub fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Go's `filepath.Match` on a single name: `*`, `?`, `[…]` classes with ranges and `^`
/// negation, `\` escapes. A malformed pattern matches nothing (datasafed ignores the error).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    matches(&p, &n).unwrap_or(false)
}

fn matches(p: &[char], n: &[char]) -> Option<bool> {
    let Some((&c, rest)) = p.split_first() else {
        return Some(n.is_empty());
    };
    match c {
        '*' => {
            // The star never crosses a separator.
            for i in 0..=n.len() {
                if i > 0 && n[i - 1] == '/' {
                    break;
                }
                if matches(rest, &n[i..])? {
                    return Some(true);
                }
            }
            // A malformed remainder is an error even when nothing matched.
            validate(rest)?;
            Some(false)
        }
        '?' => match n.split_first() {
            Some((&x, nr)) if x != '/' => matches(rest, nr),
            _ => validate(rest).map(|_| false),
        },
        '[' => {
            let (ok, after) = class(rest, n.first().copied())?;
            if ok { matches(after, &n[1..]) } else { validate(after).map(|_| false) }
        }
        '\\' => {
            let (&lit, after) = rest.split_first()?;
            match n.split_first() {
                Some((&x, nr)) if x == lit => matches(after, nr),
                _ => validate(after).map(|_| false),
            }
        }
        lit => match n.split_first() {
            Some((&x, nr)) if x == lit => matches(rest, nr),
            _ => validate(rest).map(|_| false),
        },
    }
}

/// Parses a class body after `[`; returns whether `ch` is in it and the pattern after `]`.
fn class(p: &[char], ch: Option<char>) -> Option<(bool, &[char])> {
    let mut i = 0;
    let negate = p.first() == Some(&'^');
    if negate {
        i += 1;
    }
    let mut hit = false;
    let mut first = true;
    loop {
        let c = *p.get(i)?;
        if c == ']' && !first {
            i += 1;
            break;
        }
        first = false;
        let (lo, next) = class_char(p, i)?;
        i = next;
        let mut hi = lo;
        if p.get(i) == Some(&'-') && p.get(i + 1) != Some(&']') {
            let (h, next) = class_char(p, i + 1)?;
            hi = h;
            i = next;
        }
        if ch.is_some_and(|c| lo <= c && c <= hi) {
            hit = true;
        }
    }
    let ok = ch.is_some_and(|c| c != '/') && (hit != negate);
    Some((ok, &p[i..]))
}

fn class_char(p: &[char], i: usize) -> Option<(char, usize)> {
    match *p.get(i)? {
        '\\' => Some((*p.get(i + 1)?, i + 2)),
        '-' | ']' if i == 0 => None,
        c => Some((c, i + 1)),
    }
}

fn validate(p: &[char]) -> Option<()> {
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            '\\' => {
                p.get(i + 1)?;
                i += 2;
            }
            '[' => {
                let (_, after) = class(&p[i + 1..], None)?;
                i = p.len() - after.len();
            }
            _ => i += 1,
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_and_joins_like_datasafed() {
        assert_eq!(clean("/a//b/./c/../d/"), "/a/b/d");
        assert_eq!(clean("../x"), "../x");
        assert_eq!(clean("/../x"), "/x");
        assert_eq!(relative("/").unwrap(), "");
        assert_eq!(relative("./a/b/").unwrap(), "a/b");
        assert!(relative("a/../../x").is_err());
        assert_eq!(base("/a/b/").unwrap(), "a/b");
        assert!(base("../up").is_err());
        assert_eq!(absolute("a/b", "/c.txt").unwrap(), "/a/b/c.txt");
        assert_eq!(absolute("a/b", "/").unwrap(), "/a/b");
        assert_eq!(absolute("", "x/y").unwrap(), "/x/y");
        assert_eq!(display("/a/b", "/a/b/c/d"), "c/d");
        assert_eq!(display("/", "/c/d"), "c/d");
        assert!(is_within("/a/b", "/a") && !is_within("/ab", "/a") && is_within("/x", "/"));
    }

    #[test]
    fn globs_follow_filepath_match() {
        assert!(glob_match("*.txt", "a.txt"));
        assert!(!glob_match("*.txt", "a.txt.zst"));
        assert!(glob_match("0000000?00*", "000000010000000A"));
        assert!(glob_match("[a-c]x", "bx") && !glob_match("[^a-c]x", "bx"));
        assert!(glob_match("\\*", "*") && !glob_match("\\*", "a"));
        assert!(!glob_match("[", "["), "a malformed pattern matches nothing");
        assert!(glob_match("*", ""));
    }
}
