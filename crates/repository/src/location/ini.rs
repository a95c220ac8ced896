//! INI text the way go-ini reads it. datasafed (and therefore every KubeBlocks StorageProvider
//! template) writes its rclone configuration with go-ini, so these are the rules its users'
//! files were written against.

use std::collections::BTreeMap;

/// The section of keys written before any `[section]` header (go-ini's name for it).
pub const DEFAULT_SECTION: &str = "DEFAULT";

/// A parsed INI file: section -> key -> value.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Ini {
    sections: BTreeMap<String, BTreeMap<String, String>>,
}

/// One line that is not INI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub problem: String,
}

impl Ini {
    /// Parses INI text: `[section]` headers, `key = value` or `key: value` (split at the first
    /// `=` or `:`), whole-line `#`/`;` comments, and, for unquoted values, everything from the
    /// first `#` or `;` on is an inline comment. Quoted values (`"…"`, `` `…` ``, `'''…'''`) are
    /// taken verbatim. Keys before any header belong to [`DEFAULT_SECTION`]; a key given twice
    /// keeps its last value.
    ///
    /// datasafed replaces `key.need_obscure` by `key` holding the rclone-obscured value. holdfast
    /// hands values to no rclone, so the plain value, read under `key`, is the right one.
    pub fn parse(text: &str) -> Result<Self, SyntaxError> {
        let mut ini = Ini::default();
        let mut section = DEFAULT_SECTION.to_owned();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            let fail = |problem: String| SyntaxError { line: n + 1, problem };
            if let Some(rest) = line.strip_prefix('[') {
                let Some(name) = rest.strip_suffix(']') else {
                    return Err(fail(format!("unclosed section header {line:?}")));
                };
                section = name.trim().to_owned();
                ini.sections.entry(section.clone()).or_default();
                continue;
            }
            let Some(at) = line.find(['=', ':']) else {
                return Err(fail(format!("expected `key = value`, found {line:?}")));
            };
            let key = line[..at].trim();
            let key = key.strip_suffix(".need_obscure").unwrap_or(key).to_owned();
            let value = unquote(line[at + 1..].trim());
            ini.sections.entry(section.clone()).or_default().insert(key, value);
        }
        Ok(ini)
    }

    /// One value, as written (after unquoting).
    pub fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.sections.get(section)?.get(key).map(String::as_str)
    }

    /// Replaces a whole section.
    pub fn set_section(&mut self, section: &str, values: BTreeMap<String, String>) {
        self.sections.insert(section.to_owned(), values);
    }
}

fn unquote(v: &str) -> String {
    for q in ["'''", "\"", "`"] {
        if v.len() >= 2 * q.len()
            && let Some(inner) = v.strip_prefix(q).and_then(|s| s.strip_suffix(q))
        {
            return inner.to_owned();
        }
    }
    match v.find(['#', ';']) {
        Some(i) => v[..i].trim().to_owned(),
        None => v.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Ini {
        Ini::parse(text).unwrap()
    }

    #[test]
    fn sections_keys_and_both_separators() {
        let ini = parse("[storage]\ntype = s3\nroot=bucket/pre/fix/ \naccess_key_id: AK\n");
        assert_eq!(ini.get("storage", "type"), Some("s3"));
        // Whitespace around keys and values is dropped; the value itself is kept as written.
        assert_eq!(ini.get("storage", "root"), Some("bucket/pre/fix/"));
        assert_eq!(ini.get("storage", "access_key_id"), Some("AK"));
        assert_eq!(ini.get("storage", "missing"), None);
        assert_eq!(ini.get("other", "type"), None);
        // The first `=` or `:` splits: a URL value keeps its colons.
        let ini = parse("[s]\nendpoint = http://minio:9000\nurl: http://x:1\n");
        assert_eq!(ini.get("s", "endpoint"), Some("http://minio:9000"));
        assert_eq!(ini.get("s", "url"), Some("http://x:1"));
    }

    #[test]
    fn headers_are_trimmed_and_keys_before_any_header_are_default() {
        let ini = parse("top = 1\n[ storage ]\n  type = local  \n[empty]\n");
        assert_eq!(ini.get(DEFAULT_SECTION, "top"), Some("1"));
        assert_eq!(ini.get("storage", "type"), Some("local"));
        assert!(ini.sections.contains_key("empty"), "an empty section still exists");
    }

    #[test]
    fn comments_whole_line_and_inline() {
        let ini = parse(
            "# comment\n; another\n[s]\n  # indented comment\nregion = eu-west-1 ; inline\n\
             endpoint = minio:9000 # inline\n",
        );
        assert_eq!(ini.get("s", "region"), Some("eu-west-1"));
        assert_eq!(ini.get("s", "endpoint"), Some("minio:9000"));
    }

    #[test]
    fn quoted_values_are_verbatim() {
        let ini = parse(
            "[s]\na = \"se#cret\"\nb = `x;y`\nc = '''it's # here'''\nd = \"\"\ne = \"unclosed\n\
             f = 'single'\n",
        );
        assert_eq!(ini.get("s", "a"), Some("se#cret"));
        assert_eq!(ini.get("s", "b"), Some("x;y"));
        assert_eq!(ini.get("s", "c"), Some("it's # here"));
        assert_eq!(ini.get("s", "d"), Some(""));
        // Only a matching pair of quotes unquotes; single quotes are ordinary characters.
        assert_eq!(ini.get("s", "e"), Some("\"unclosed"));
        assert_eq!(ini.get("s", "f"), Some("'single'"));
    }

    #[test]
    fn need_obscure_keys_are_read_under_their_plain_name_and_the_last_value_wins() {
        let ini = parse("[s]\nsecret_access_key.need_obscure = \"x#y\"\nk = 1\nk = 2\n");
        assert_eq!(ini.get("s", "secret_access_key"), Some("x#y"));
        assert_eq!(ini.get("s", "k"), Some("2"));
    }

    #[test]
    fn syntax_errors_name_the_line() {
        assert_eq!(
            Ini::parse("[storage\n").unwrap_err(),
            SyntaxError { line: 1, problem: "unclosed section header \"[storage\"".into() }
        );
        assert_eq!(
            Ini::parse("[s]\n\nx\n").unwrap_err(),
            SyntaxError { line: 3, problem: "expected `key = value`, found \"x\"".into() }
        );
    }

    #[test]
    fn a_section_can_be_replaced() {
        let mut ini = parse("[storage]\ntype = s3\nroot = b\n");
        ini.set_section("storage", BTreeMap::from([("type".into(), "local".into())]));
        assert_eq!(ini.get("storage", "type"), Some("local"));
        assert_eq!(ini.get("storage", "root"), None);
    }
}
