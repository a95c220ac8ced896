//! Label selectors: the `labelSelector` query string form (`app=web,tier in (a,b),!legacy`) and the
//! structured `metav1.LabelSelector` of specs (KubeBlocks `podSelector`, Velero `labelSelector`),
//! both turned into one [`LabelSelector`] that matches a label map.
//!
//! The grammar and the key/value rules follow `k8s.io/apimachinery/pkg/labels/selector.go`, so a
//! selector the real apiserver rejects is rejected here too, with a message saying what is wrong.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;

/// What is wrong with a label selector.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The text does not follow the selector grammar.
    #[error("unable to parse requirement: {0}")]
    Syntax(String),
    /// A label key breaks the qualified-name rules.
    #[error("invalid label key \"{key}\": {reason}")]
    InvalidKey {
        /// The offending key.
        key: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// A label value breaks the label-value rules.
    #[error("invalid label value: \"{value}\": {reason}")]
    InvalidValue {
        /// The offending value.
        value: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// A structured selector used an operator other than In, NotIn, Exists, DoesNotExist.
    #[error("\"{0}\" is not a valid label selector operator")]
    UnknownOperator(String),
}

/// How a requirement compares a label's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    /// `key=value` (also written `key==value`): the label is present with that value.
    Equals,
    /// `key!=value`: the label is absent or has another value.
    NotEquals,
    /// `key in (a,b)`: the label is present with one of the values.
    In,
    /// `key notin (a,b)`: the label is absent or has none of the values.
    NotIn,
    /// `key`: the label is present.
    Exists,
    /// `!key`: the label is absent.
    DoesNotExist,
    /// `key>3`: the label is present and its integer value is greater.
    GreaterThan,
    /// `key<3`: the label is present and its integer value is smaller.
    LessThan,
}

/// One condition on one label key; a selector is the AND of its requirements.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Requirement {
    key: String,
    operator: Operator,
    // A set, as upstream keeps it: `in (b,a,a)` is the same requirement as `in (a,b)`.
    values: BTreeSet<String>,
}

impl Requirement {
    /// Builds a requirement, checking the key, the values and their count for the operator.
    ///
    /// # Errors
    /// An invalid key or value, or a value count the operator does not allow.
    pub fn new(
        key: &str,
        operator: Operator,
        values: impl IntoIterator<Item = String>,
    ) -> Result<Self, SelectorError> {
        validate_key(key)?;
        let values: BTreeSet<String> = values.into_iter().collect();
        match operator {
            Operator::Equals | Operator::NotEquals if values.len() != 1 => {
                return Err(SelectorError::Syntax(format!(
                    "exact-match compatibility requires one single value for key \"{key}\""
                )));
            }
            Operator::In | Operator::NotIn if values.is_empty() => {
                return Err(SelectorError::Syntax(format!(
                    "for 'in', 'notin' operators, values set can't be empty (key \"{key}\")"
                )));
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                return Err(SelectorError::Syntax(format!(
                    "values set must be empty for exists and does not exist (key \"{key}\")"
                )));
            }
            Operator::GreaterThan | Operator::LessThan => {
                let ok = values.len() == 1 && values.iter().all(|v| v.parse::<i64>().is_ok());
                if !ok {
                    return Err(SelectorError::Syntax(format!(
                        "for 'Gt', 'Lt' operators, exactly one integer value is required (key \"{key}\")"
                    )));
                }
            }
            _ => {}
        }
        for v in &values {
            validate_value(v)?;
        }
        Ok(Self { key: key.to_string(), operator, values })
    }

    /// The label key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The operator.
    pub fn operator(&self) -> Operator {
        self.operator
    }

    /// The values, sorted.
    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.values.iter().map(String::as_str)
    }

    /// Whether `labels` satisfy this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::Equals | Operator::In => value.is_some_and(|v| self.values.contains(v)),
            Operator::NotEquals | Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(actual), Some(bound)) = (
                    value.and_then(|v| v.parse::<i64>().ok()),
                    self.values.iter().next().and_then(|v| v.parse::<i64>().ok()),
                ) else {
                    return false;
                };
                if self.operator == Operator::GreaterThan { actual > bound } else { actual < bound }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first = || self.values.iter().next().map(String::as_str).unwrap_or("");
        let list = || self.values.iter().map(String::as_str).collect::<Vec<_>>().join(",");
        match self.operator {
            Operator::Equals => write!(f, "{}={}", self.key, first()),
            Operator::NotEquals => write!(f, "{}!={}", self.key, first()),
            Operator::In => write!(f, "{} in ({})", self.key, list()),
            Operator::NotIn => write!(f, "{} notin ({})", self.key, list()),
            Operator::Exists => write!(f, "{}", self.key),
            Operator::DoesNotExist => write!(f, "!{}", self.key),
            Operator::GreaterThan => write!(f, "{}>{}", self.key, first()),
            Operator::LessThan => write!(f, "{}<{}", self.key, first()),
        }
    }
}

/// A label selector: the AND of its requirements. The empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// The selector that matches every object.
    pub fn everything() -> Self {
        Self::default()
    }

    /// Builds a selector from requirements.
    pub fn from_requirements(requirements: Vec<Requirement>) -> Self {
        Self { requirements }
    }

    /// Whether the selector has no requirements (matches everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The requirements, in the order given.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether the `metadata.labels` of a JSON object satisfy every requirement
    /// (a missing or malformed label map counts as no labels).
    pub fn matches_object(&self, obj: &serde_json::Value) -> bool {
        let labels: BTreeMap<String, String> = obj
            .pointer("/metadata/labels")
            .and_then(serde_json::Value::as_object)
            .map(|m| {
                m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect()
            })
            .unwrap_or_default();
        self.matches(&labels)
    }

    /// Converts a structured `metav1.LabelSelector` (matchLabels AND matchExpressions).
    ///
    /// As upstream (`metav1.LabelSelectorAsSelector`), an empty structured selector matches
    /// everything; callers that treat a *missing* selector as "nothing" must check for `None` first.
    ///
    /// # Errors
    /// An invalid key or value, an unknown operator, or values that do not fit the operator.
    pub fn from_k8s(selector: &metav1::LabelSelector) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for (k, v) in selector.match_labels.iter().flatten() {
            requirements.push(Requirement::new(k, Operator::Equals, [v.clone()])?);
        }
        for expr in selector.match_expressions.iter().flatten() {
            let op = match expr.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => return Err(SelectorError::UnknownOperator(other.to_string())),
            };
            requirements.push(Requirement::new(
                &expr.key,
                op,
                expr.values.iter().flatten().cloned(),
            )?);
        }
        Ok(Self { requirements })
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl FromStr for LabelSelector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Parser { tokens: lex(s)?, pos: 0 }.parse()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    Bang,
    Eq,
    DoubleEq,
    NotEq,
    Gt,
    Lt,
    Open,
    Close,
    Comma,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Ident(s) => write!(f, "\"{s}\""),
            Token::Bang => f.write_str("'!'"),
            Token::Eq => f.write_str("'='"),
            Token::DoubleEq => f.write_str("'=='"),
            Token::NotEq => f.write_str("'!='"),
            Token::Gt => f.write_str("'>'"),
            Token::Lt => f.write_str("'<'"),
            Token::Open => f.write_str("'('"),
            Token::Close => f.write_str("')'"),
            Token::Comma => f.write_str("','"),
        }
    }
}

fn is_special(c: char) -> bool {
    matches!(c, '!' | '=' | '>' | '<' | '(' | ')' | ',')
}

// `+` is a space that was form-encoded (kubectl sends `a+in+(x)`); it is never valid inside a
// key or value, so treating it as whitespace cannot change the meaning of a valid selector.
fn is_blank(c: char) -> bool {
    c.is_whitespace() || c == '+'
}

fn lex(s: &str) -> Result<Vec<Token>, SelectorError> {
    let chars: Vec<char> = s.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if is_blank(c) {
            i += 1;
            continue;
        }
        let (token, len) = match (c, next) {
            ('!', Some('=')) => (Token::NotEq, 2),
            ('!', _) => (Token::Bang, 1),
            ('=', Some('=')) => (Token::DoubleEq, 2),
            ('=', _) => (Token::Eq, 1),
            ('>', _) => (Token::Gt, 1),
            ('<', _) => (Token::Lt, 1),
            ('(', _) => (Token::Open, 1),
            (')', _) => (Token::Close, 1),
            (',', _) => (Token::Comma, 1),
            _ => {
                let start = i;
                while i < chars.len() && !is_blank(chars[i]) && !is_special(chars[i]) {
                    i += 1;
                }
                tokens.push(Token::Ident(chars[start..i].iter().collect()));
                continue;
            }
        };
        tokens.push(token);
        i += len;
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn parse(mut self) -> Result<LabelSelector, SelectorError> {
        let mut requirements = Vec::new();
        if self.tokens.is_empty() {
            return Ok(LabelSelector { requirements });
        }
        loop {
            requirements.push(self.requirement()?);
            match self.next() {
                None => break,
                Some(Token::Comma) => {
                    if self.peek().is_none() {
                        return Err(SelectorError::Syntax(
                            "found end of string after ',', expected a requirement".into(),
                        ));
                    }
                }
                Some(t) => {
                    return Err(SelectorError::Syntax(format!(
                        "found {t}, expected ',' or end of string"
                    )));
                }
            }
        }
        Ok(LabelSelector { requirements })
    }

    fn key(&mut self) -> Result<String, SelectorError> {
        match self.next() {
            Some(Token::Ident(k)) => Ok(k),
            Some(t) => Err(SelectorError::Syntax(format!("found {t}, expected a label key"))),
            None => Err(SelectorError::Syntax("found end of string, expected a label key".into())),
        }
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        if self.peek() == Some(&Token::Bang) {
            self.pos += 1;
            let key = self.key()?;
            return Requirement::new(&key, Operator::DoesNotExist, []);
        }
        let key = self.key()?;
        let op = match self.peek() {
            None | Some(Token::Comma) => return Requirement::new(&key, Operator::Exists, []),
            Some(Token::Eq | Token::DoubleEq) => Operator::Equals,
            Some(Token::NotEq) => Operator::NotEquals,
            Some(Token::Gt) => Operator::GreaterThan,
            Some(Token::Lt) => Operator::LessThan,
            Some(Token::Ident(w)) if w == "in" => Operator::In,
            Some(Token::Ident(w)) if w == "notin" => Operator::NotIn,
            Some(t) => {
                return Err(SelectorError::Syntax(format!(
                    "found {t} after key \"{key}\", expected one of '=', '==', '!=', 'in', 'notin', '>', '<', ',' or end of string"
                )));
            }
        };
        self.pos += 1;
        let values = match op {
            Operator::In | Operator::NotIn => self.value_list(&key)?,
            _ => vec![self.single_value()?],
        };
        Requirement::new(&key, op, values)
    }

    // After `=`, `!=`, `>` or `<`: one value, which may be empty (`a=` selects an empty value).
    fn single_value(&mut self) -> Result<String, SelectorError> {
        match self.peek() {
            None | Some(Token::Comma) => Ok(String::new()),
            Some(Token::Ident(v)) => {
                let v = v.clone();
                self.pos += 1;
                Ok(v)
            }
            Some(t) => Err(SelectorError::Syntax(format!("found {t}, expected a value"))),
        }
    }

    fn value_list(&mut self, key: &str) -> Result<Vec<String>, SelectorError> {
        match self.next() {
            Some(Token::Open) => {}
            Some(t) => {
                return Err(SelectorError::Syntax(format!(
                    "found {t} after \"{key}\" in/notin, expected '('"
                )));
            }
            None => {
                return Err(SelectorError::Syntax(format!(
                    "found end of string after \"{key}\" in/notin, expected '('"
                )));
            }
        }
        let mut values = Vec::new();
        let mut expect_value = true;
        loop {
            match self.next() {
                Some(Token::Ident(v)) if expect_value => {
                    values.push(v);
                    expect_value = false;
                }
                // An empty element, as in `in (a,)` or `in (,a)`, is the empty value (upstream too).
                Some(Token::Comma) => {
                    if expect_value {
                        values.push(String::new());
                    }
                    expect_value = true;
                }
                // `in ()` is `in ("")`, as upstream parses it.
                Some(Token::Close) => {
                    if expect_value {
                        values.push(String::new());
                    }
                    return Ok(values);
                }
                Some(t) => {
                    return Err(SelectorError::Syntax(format!(
                        "found {t} in the value list of \"{key}\", expected a value, ',' or ')'"
                    )));
                }
                None => {
                    return Err(SelectorError::Syntax(format!(
                        "found end of string in the value list of \"{key}\", expected ')'"
                    )));
                }
            }
        }
    }
}

const NAME_MAX: usize = 63;
const PREFIX_MAX: usize = 253;

/// Checks a label key: an optional DNS-1123 subdomain prefix and `/`, then a name of at most
/// 63 characters of `[A-Za-z0-9._-]` that starts and ends alphanumeric.
///
/// # Errors
/// The rule the key breaks.
pub fn validate_key(key: &str) -> Result<(), SelectorError> {
    let invalid = |reason: String| SelectorError::InvalidKey { key: key.to_string(), reason };
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            return Err(invalid("prefix part must be non-empty".into()));
        }
        if prefix.len() > PREFIX_MAX {
            return Err(invalid(format!(
                "prefix part must be no more than {PREFIX_MAX} characters"
            )));
        }
        let dns_label = |l: &str| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if !prefix.split('.').all(dns_label) {
            return Err(invalid(
                "prefix part must be a lowercase RFC 1123 subdomain: lowercase alphanumerics, '-' and '.', starting and ending with an alphanumeric (e.g. 'example.com')".into(),
            ));
        }
    }
    if name.is_empty() {
        return Err(invalid("name part must be non-empty".into()));
    }
    check_name(name).map_err(|r| invalid(format!("name part {r}")))
}

/// Checks a label value: empty, or at most 63 characters of `[A-Za-z0-9._-]` that start and end
/// alphanumeric.
///
/// # Errors
/// The rule the value breaks.
pub fn validate_value(value: &str) -> Result<(), SelectorError> {
    if value.is_empty() {
        return Ok(());
    }
    check_name(value)
        .map_err(|reason| SelectorError::InvalidValue { value: value.to_string(), reason })
}

fn check_name(s: &str) -> Result<(), String> {
    if s.len() > NAME_MAX {
        return Err(format!("must be no more than {NAME_MAX} characters"));
    }
    let alnum = |c: char| c.is_ascii_alphanumeric();
    let ok = s.chars().all(|c| alnum(c) || matches!(c, '-' | '_' | '.'))
        && s.starts_with(alnum)
        && s.ends_with(alnum);
    if ok {
        Ok(())
    } else {
        Err("must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue', or 'my_value', or '12345')".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn sel(s: &str) -> LabelSelector {
        s.parse().unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    #[test]
    fn equality_forms_match() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        assert!(sel("app=web").matches(&l));
        assert!(sel("app==web").matches(&l));
        assert!(!sel("app=db").matches(&l));
        assert!(sel("app!=db").matches(&l));
        assert!(!sel("app!=web").matches(&l));
        assert!(sel("missing!=x").matches(&l), "!= matches an absent label");
        assert_eq!(sel("app==web"), sel("app=web"));
    }

    #[test]
    fn set_forms_match() {
        let l = labels(&[("app", "web")]);
        assert!(sel("app in (db,web)").matches(&l));
        assert!(!sel("app in (db)").matches(&l));
        assert!(sel("app notin (db)").matches(&l));
        assert!(!sel("app notin (db, web)").matches(&l));
        assert!(sel("other notin (db)").matches(&l));
        assert!(!sel("other in (db)").matches(&l));
        assert!(sel("app").matches(&l));
        assert!(!sel("other").matches(&l));
        assert!(sel("!other").matches(&l));
        assert!(!sel("!app").matches(&l));
    }

    #[test]
    fn comma_is_and_and_spaces_and_plus_are_tolerated() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        let s = sel(" app = web , tier in ( front , back ) , !legacy ");
        assert_eq!(s.requirements().len(), 3);
        assert!(s.matches(&l));
        assert!(!sel("app=web,tier=back").matches(&l));
        assert_eq!(sel("tier+in+(front,back)"), sel("tier in (back,front)"));
        assert_eq!(sel("").to_string(), "");
        assert!(sel("").matches(&l));
    }

    #[test]
    fn prefixed_keys_and_empty_values() {
        let l = labels(&[("app.kubernetes.io/instance", "pg"), ("e", "")]);
        assert!(sel("app.kubernetes.io/instance=pg").matches(&l));
        assert!(sel("e=").matches(&l));
        assert!(sel("e=,app.kubernetes.io/instance").matches(&l));
    }

    #[test]
    fn integer_comparisons() {
        let l = labels(&[("n", "5")]);
        assert!(sel("n>3").matches(&l));
        assert!(!sel("n<3").matches(&l));
        assert!(!sel("m>3").matches(&l));
        assert!(matches!("n>x".parse::<LabelSelector>(), Err(SelectorError::Syntax(_))));
    }

    #[test]
    fn parse_errors_say_what_is_wrong() {
        let err = |s: &str| s.parse::<LabelSelector>().unwrap_err().to_string();
        assert!(err("app in db").contains("expected '('"), "{}", err("app in db"));
        assert!(err("app in (db").contains("expected ')'"));
        let empty = Requirement::new("app", Operator::In, [String::new()]).unwrap();
        assert_eq!(sel("app in ()"), LabelSelector::from_requirements(vec![empty]));
        assert_eq!(sel("app in (a,)").requirements()[0].values().collect::<Vec<_>>(), ["", "a"]);
        assert!(sel("app in ()").matches(&labels(&[("app", "")])));
        assert!(err("app=web,").contains("end of string after ','"));
        assert!(err("=web").contains("expected a label key"));
        assert!(err("a b").contains("after key \"a\""));
        assert_eq!(
            err("-app=x"),
            "invalid label key \"-app\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue', or 'my_value', or '12345')"
        );
        assert!(err("Example.com/app=x").contains("prefix part must be a lowercase RFC 1123"));
        assert!(err("/app=x").contains("prefix part must be non-empty"));
        assert!(err(&format!("{}=x", "a".repeat(64))).contains("no more than 63"));
        assert!(err("app=bad value!").starts_with("unable to parse"));
        assert!(err("app=-x").starts_with("invalid label value: \"-x\""));
    }

    #[test]
    fn structured_selector_converts() {
        let s: metav1::LabelSelector = serde_json::from_value(serde_json::json!({
            "matchLabels": {"app.kubernetes.io/instance": "pg"},
            "matchExpressions": [
                {"key": "role", "operator": "In", "values": ["primary", "secondary"]},
                {"key": "tier", "operator": "NotIn", "values": ["x"]},
                {"key": "ready", "operator": "Exists"},
                {"key": "legacy", "operator": "DoesNotExist"}
            ]
        }))
        .unwrap();
        let s = LabelSelector::from_k8s(&s).unwrap();
        assert_eq!(
            s.to_string(),
            "app.kubernetes.io/instance=pg,role in (primary,secondary),tier notin (x),ready,!legacy"
        );
        assert!(s.matches(&labels(&[
            ("app.kubernetes.io/instance", "pg"),
            ("role", "primary"),
            ("ready", "true")
        ])));
        assert!(!s.matches(&labels(&[("app.kubernetes.io/instance", "pg"), ("role", "primary")])));
        assert!(LabelSelector::from_k8s(&metav1::LabelSelector::default()).unwrap().is_empty());
    }

    #[test]
    fn structured_selector_errors() {
        let conv = |v: serde_json::Value| {
            LabelSelector::from_k8s(&serde_json::from_value(v).unwrap()).unwrap_err()
        };
        let e = conv(
            serde_json::json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}),
        );
        assert_eq!(e, SelectorError::UnknownOperator("Gt".into()));
        let e = conv(serde_json::json!({"matchExpressions": [{"key": "a", "operator": "In"}]}));
        assert!(e.to_string().contains("can't be empty"));
        let e = conv(
            serde_json::json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}),
        );
        assert!(e.to_string().contains("must be empty"));
        let e = conv(serde_json::json!({"matchLabels": {"a": "b c"}}));
        assert!(matches!(e, SelectorError::InvalidValue { .. }));
    }

    #[test]
    fn matches_object_reads_metadata_labels() {
        let obj = serde_json::json!({"metadata": {"labels": {"app": "web"}}});
        assert!(sel("app=web").matches_object(&obj));
        assert!(!sel("app=web").matches_object(&serde_json::json!({"metadata": {}})));
        assert!(sel("!app").matches_object(&serde_json::json!({})));
    }

    fn name() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9]([a-zA-Z0-9_.-]{0,8}[a-zA-Z0-9])?"
    }

    fn key() -> impl Strategy<Value = String> {
        (proptest::option::of("[a-z0-9]{1,5}(\\.[a-z0-9]{1,5}){0,2}"), name())
            .prop_map(|(p, n)| p.map_or(n.clone(), |p| format!("{p}/{n}")))
            .prop_filter("set operators are keywords", |k| k != "in" && k != "notin")
    }

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![Just(String::new()), name()]
    }

    fn requirement() -> impl Strategy<Value = Requirement> {
        let values = || proptest::collection::vec(value(), 1..4);
        prop_oneof![
            (key(), value()).prop_map(|(k, v)| Requirement::new(&k, Operator::Equals, [v])),
            (key(), value()).prop_map(|(k, v)| Requirement::new(&k, Operator::NotEquals, [v])),
            (key(), values()).prop_map(|(k, v)| Requirement::new(&k, Operator::In, v)),
            (key(), values()).prop_map(|(k, v)| Requirement::new(&k, Operator::NotIn, v)),
            key().prop_map(|k| Requirement::new(&k, Operator::Exists, [])),
            key().prop_map(|k| Requirement::new(&k, Operator::DoesNotExist, [])),
            (key(), 0..i32::MAX).prop_map(|(k, n)| Requirement::new(
                &k,
                Operator::GreaterThan,
                [n.to_string()]
            )),
        ]
        .prop_map(|r| r.expect("generated requirements are valid"))
    }

    proptest! {
        #[test]
        fn display_round_trips(reqs in proptest::collection::vec(requirement(), 0..5)) {
            let s = LabelSelector::from_requirements(reqs);
            let text = s.to_string();
            let back: LabelSelector = text.parse().map_err(|e| TestCaseError::fail(format!("{text:?}: {e}")))?;
            prop_assert_eq!(back, s);
        }
    }
}
