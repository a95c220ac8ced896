//! The subset of kubectl's JSONPath that printer columns use: `.a.b`, escaped dots
//! (`.metadata.annotations.x\.y/z`), `[n]`, `[*]`, `..`-free field chains and the filter
//! `[?(@.type=="Ready")]` (with `==`/`!=` against a string, number or boolean), optionally wrapped
//! in `{…}`.

use serde_json::Value;

/// A column path as kubectl's JSONPath printer takes it: one path, or text with `{path}` parts
/// (`{.roleRef.kind}/{.roleRef.name}`, as kubectl prints a binding's role).
#[derive(Debug, Clone, PartialEq)]
pub enum Template {
    Path(JsonPath),
    Parts(Vec<TemplatePart>),
}

/// A piece of a [`Template`].
#[derive(Debug, Clone, PartialEq)]
pub enum TemplatePart {
    Text(String),
    Path(JsonPath),
}

impl Template {
    /// Parses a single path, or text mixing literals and `{path}` parts.
    ///
    /// # Errors
    /// A path outside the supported subset, or an unclosed `{`.
    pub fn parse(template: &str) -> Result<Self, String> {
        let t = template.trim();
        let single = !t.starts_with('{') || (t.ends_with('}') && t.matches('{').count() == 1);
        if single {
            return JsonPath::parse(t).map(Template::Path);
        }
        let mut parts = Vec::new();
        let mut rest = t;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(TemplatePart::Text(rest[..open].to_string()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("unclosed '{{' in JSONPath {template:?}"))?;
            parts.push(TemplatePart::Path(JsonPath::parse(&rest[open + 1..open + close])?));
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            parts.push(TemplatePart::Text(rest.to_string()));
        }
        Ok(Template::Parts(parts))
    }

    /// The text of the template for `obj`, each path's matches shown by `show` and joined with
    /// commas.
    pub fn render(&self, obj: &Value, show: impl Fn(&Value) -> String) -> String {
        let parts = match self {
            Template::Path(p) => return join(&p.select(obj), &show),
            Template::Parts(parts) => parts,
        };
        parts
            .iter()
            .map(|part| match part {
                TemplatePart::Text(text) => text.clone(),
                TemplatePart::Path(p) => join(&p.select(obj), &show),
            })
            .collect()
    }
}

fn join(values: &[&Value], show: &impl Fn(&Value) -> String) -> String {
    values.iter().map(|v| show(v)).collect::<Vec<_>>().join(",")
}

/// A step of a parsed path.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Index(i64),
    All,
    Filter { path: Vec<String>, equals: bool, value: Value },
}

/// A parsed JSONPath.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonPath {
    steps: Vec<Step>,
}

impl JsonPath {
    /// Parses a path; `Err` says what is not understood.
    ///
    /// # Errors
    /// Text outside the supported subset.
    pub fn parse(path: &str) -> Result<Self, String> {
        let mut s = path.trim();
        if let Some(inner) = s.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
            s = inner.trim();
        }
        let chars: Vec<char> = s.chars().collect();
        let mut steps = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '.' => {
                    i += 1;
                    let mut name = String::new();
                    while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                        if chars[i] == '\\' && i + 1 < chars.len() {
                            i += 1;
                        }
                        name.push(chars[i]);
                        i += 1;
                    }
                    if !name.is_empty() {
                        steps.push(Step::Field(name));
                    }
                }
                '[' => {
                    let end = find_close(&chars, i)
                        .ok_or_else(|| format!("unclosed '[' in JSONPath {path:?}"))?;
                    let inner: String = chars[i + 1..end].iter().collect();
                    steps.push(parse_bracket(inner.trim(), path)?);
                    i = end + 1;
                }
                c if i == 0 && (c.is_alphanumeric() || c == '_') => {
                    // A path without the leading dot (`status.phase`), which kubectl also accepts.
                    let mut name = String::new();
                    while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                        name.push(chars[i]);
                        i += 1;
                    }
                    steps.push(Step::Field(name));
                }
                '@' | '$' if i == 0 => i += 1,
                c => return Err(format!("unexpected {c:?} in JSONPath {path:?}")),
            }
        }
        Ok(Self { steps })
    }

    /// Every value the path selects in `obj`, in document order; empty when nothing matches.
    pub fn select<'a>(&self, obj: &'a Value) -> Vec<&'a Value> {
        let mut current = vec![obj];
        for step in &self.steps {
            let mut next = Vec::new();
            for v in current {
                match step {
                    Step::Field(name) => next.extend(v.get(name.as_str())),
                    Step::Index(n) => {
                        if let Some(a) = v.as_array() {
                            let idx = if *n < 0 { a.len() as i64 + n } else { *n };
                            if let Ok(idx) = usize::try_from(idx) {
                                next.extend(a.get(idx));
                            }
                        }
                    }
                    Step::All => match v {
                        Value::Array(a) => next.extend(a.iter()),
                        Value::Object(m) => next.extend(m.values()),
                        _ => {}
                    },
                    Step::Filter { path, equals, value } => {
                        if let Some(a) = v.as_array() {
                            next.extend(a.iter().filter(|item| {
                                let got = path.iter().try_fold(*item, |cur, f| cur.get(f.as_str()));
                                match got {
                                    Some(got) => (got == value) == *equals,
                                    // A missing field never equals, so only `!=` selects it.
                                    None => !*equals,
                                }
                            }));
                        }
                    }
                }
            }
            current = next;
        }
        current
    }
}

fn find_close(chars: &[char], open: usize) -> Option<usize> {
    let mut quote: Option<char> = None;
    let mut depth = 0;
    for (j, &c) in chars.iter().enumerate().skip(open) {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '[') => depth += 1,
            (None, ']') => {
                depth -= 1;
                if depth == 0 {
                    return Some(j);
                }
            }
            _ => {}
        }
    }
    None
}

fn parse_bracket(inner: &str, path: &str) -> Result<Step, String> {
    if inner == "*" {
        return Ok(Step::All);
    }
    if let Ok(n) = inner.parse::<i64>() {
        return Ok(Step::Index(n));
    }
    if let Some(q) = inner.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        return Ok(Step::Field(q.to_string()));
    }
    if let Some(q) = inner.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        return Ok(Step::Field(q.to_string()));
    }
    let filter = inner
        .strip_prefix("?(")
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("unsupported [{inner}] in JSONPath {path:?}"))?
        .trim();
    let (lhs, equals, rhs) = if let Some((l, r)) = filter.split_once("!=") {
        (l, false, r)
    } else if let Some((l, r)) = filter.split_once("==") {
        (l, true, r)
    } else {
        return Err(format!("unsupported filter [{inner}] in JSONPath {path:?}"));
    };
    let lhs = lhs
        .trim()
        .strip_prefix("@.")
        .ok_or_else(|| format!("filter must compare a field of @ in JSONPath {path:?}"))?;
    let rhs = rhs.trim();
    let value = if let Some(s) = rhs
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .or_else(|| rhs.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')))
    {
        Value::String(s.to_string())
    } else {
        serde_json::from_str(rhs)
            .map_err(|_| format!("unsupported filter value {rhs} in JSONPath {path:?}"))?
    };
    Ok(Step::Filter { path: lhs.split('.').map(str::to_string).collect(), equals, value })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sel(path: &str, obj: &Value) -> Vec<Value> {
        JsonPath::parse(path).unwrap().select(obj).into_iter().cloned().collect()
    }

    #[test]
    fn field_chains_indexes_and_wildcards() {
        let obj = json!({"status": {"phase": "Done", "list": [1, 2, 3]},
            "metadata": {"annotations": {"x.y/z": "a"}}});
        assert_eq!(sel(".status.phase", &obj), [json!("Done")]);
        assert_eq!(sel("{.status.phase}", &obj), [json!("Done")]);
        assert_eq!(sel("status.phase", &obj), [json!("Done")]);
        assert_eq!(sel(".status.missing", &obj), Vec::<Value>::new());
        assert_eq!(sel(".status.list[1]", &obj), [json!(2)]);
        assert_eq!(sel(".status.list[-1]", &obj), [json!(3)]);
        assert_eq!(sel(".status.list[*]", &obj), [json!(1), json!(2), json!(3)]);
        assert_eq!(sel(r".metadata.annotations.x\.y/z", &obj), [json!("a")]);
        assert_eq!(sel(".metadata.annotations['x.y/z']", &obj), [json!("a")]);
    }

    #[test]
    fn condition_filters() {
        let obj = json!({"status": {"conditions": [
            {"type": "Progressing", "status": "False"}, {"type": "Ready", "status": "True"}]}});
        assert_eq!(sel(r#".status.conditions[?(@.type=="Ready")].status"#, &obj), [json!("True")]);
        assert_eq!(sel(".status.conditions[?(@.type == 'Ready')].status", &obj), [json!("True")]);
        assert_eq!(
            sel(r#".status.conditions[?(@.type!="Ready")].type"#, &obj),
            [json!("Progressing")]
        );
        assert!(sel(r#".status.conditions[?(@.type=="Nope")].status"#, &obj).is_empty());
    }

    #[test]
    fn unsupported_syntax_is_an_error() {
        assert!(JsonPath::parse(".a[?(@.x>1)]").is_err());
        assert!(JsonPath::parse(".a[1").is_err());
        assert!(JsonPath::parse(".a[?(x==1)]").is_err());
    }

    #[test]
    fn templates_mix_text_and_paths() {
        let obj = serde_json::json!({"roleRef": {"kind": "ClusterRole", "name": "view"}});
        let t = Template::parse("{.roleRef.kind}/{.roleRef.name}").unwrap();
        assert_eq!(
            t.render(&obj, |v| v.as_str().unwrap_or_default().to_string()),
            "ClusterRole/view"
        );
        assert!(matches!(Template::parse("{.roleRef.kind}").unwrap(), Template::Path(_)));
        assert!(matches!(Template::parse(".a.b").unwrap(), Template::Path(_)));
        assert!(Template::parse("{.a}/{.b").is_err());
    }
}
