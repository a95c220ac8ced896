//! Splits a template into text and actions, and an action into tokens, with Go's rules for
//! delimiters, trim markers (`{{- ` / ` -}}`) and comments (`{{/* */}}`).

use crate::TemplateError;

/// A piece of the template source: literal text or the tokens of one `{{ }}` action.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Piece {
    Text(String),
    Action { pos: usize, tokens: Vec<Token> },
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub kind: Tok,
    /// Byte offset in the template source.
    pub pos: usize,
    /// Whether whitespace precedes the token; `.a.b` chains only without it.
    pub space_before: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    Ident(String),
    /// `.name`, without the dot.
    Field(String),
    Dot,
    /// `$name`, with the dollar sign (`$` alone is the root variable).
    Variable(String),
    Declare,
    Assign,
    Pipe,
    LParen,
    RParen,
    Comma,
    Str(String),
    Char(char),
    Number(String),
}

const LEFT: &str = "{{";
const RIGHT: &str = "}}";

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// Splits `src` into pieces, applying trim markers to the neighbouring text.
pub(crate) fn lex(name: &str, src: &str) -> Result<Vec<Piece>, TemplateError> {
    let mut pieces = Vec::new();
    let mut rest_at = 0;
    let mut trim_next_text = false;
    while rest_at <= src.len() {
        let rest = &src[rest_at..];
        let Some(open) = rest.find(LEFT) else {
            push_text(&mut pieces, rest, trim_next_text, false);
            break;
        };
        let action_at = rest_at + open;
        let mut inner_at = action_at + LEFT.len();
        let trim_left = src[inner_at..].starts_with('-')
            && src[inner_at + 1..].chars().next().is_some_and(is_space);
        if trim_left {
            inner_at += 2;
        }
        push_text(&mut pieces, &rest[..open], trim_next_text, trim_left);
        let (tokens, end_at, trim_right) = lex_action(name, src, inner_at, action_at)?;
        if let Some(tokens) = tokens {
            pieces.push(Piece::Action { pos: action_at, tokens });
        }
        trim_next_text = trim_right;
        rest_at = end_at;
        if rest_at == src.len() {
            break;
        }
    }
    Ok(pieces)
}

fn push_text(pieces: &mut Vec<Piece>, text: &str, trim_start: bool, trim_end: bool) {
    let mut text = text;
    if trim_start {
        text = text.trim_start_matches(is_space);
    }
    if trim_end {
        text = text.trim_end_matches(is_space);
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text.to_owned()));
    }
}

/// Lexes one action starting at `at` (just after `{{` and any trim marker). Returns the tokens
/// (None for a comment), the offset just after `}}`, and whether the action ends with `-}}`.
fn lex_action(
    name: &str,
    src: &str,
    mut at: usize,
    action_at: usize,
) -> Result<(Option<Vec<Token>>, usize, bool), TemplateError> {
    let err = |pos: usize, msg: &str| TemplateError::parse(name, src, pos, msg.to_owned());
    // A comment must directly follow the delimiter (and its trim marker).
    if src[at..].starts_with("/*") {
        let Some(close) = src[at + 2..].find("*/") else {
            return Err(err(action_at, "unclosed comment"));
        };
        let after = at + 2 + close + 2;
        let tail = &src[after..];
        if tail.starts_with(RIGHT) {
            return Ok((None, after + RIGHT.len(), false));
        }
        let trimmed = tail.trim_start_matches(is_space);
        if trimmed.len() < tail.len() && trimmed.starts_with("-}}") {
            return Ok((None, after + (tail.len() - trimmed.len()) + 3, true));
        }
        return Err(err(after, "comment ends before closing delimiter"));
    }
    let mut tokens = Vec::new();
    let mut space_before = true;
    loop {
        let rest = &src[at..];
        let Some(c) = rest.chars().next() else {
            return Err(err(action_at, "unclosed action"));
        };
        if is_space(c) {
            // ` -}}` closes with a trim marker.
            let trimmed = rest.trim_start_matches(is_space);
            let skipped = rest.len() - trimmed.len();
            if trimmed.starts_with("-}}") {
                return Ok((Some(tokens), at + skipped + 3, true));
            }
            at += skipped;
            space_before = true;
            continue;
        }
        if rest.starts_with(RIGHT) {
            return Ok((Some(tokens), at + RIGHT.len(), false));
        }
        let start = at;
        let kind = match c {
            '|' => {
                at += 1;
                Tok::Pipe
            }
            '(' => {
                at += 1;
                Tok::LParen
            }
            ')' => {
                at += 1;
                Tok::RParen
            }
            ',' => {
                at += 1;
                Tok::Comma
            }
            ':' if rest.starts_with(":=") => {
                at += 2;
                Tok::Declare
            }
            '=' => {
                at += 1;
                Tok::Assign
            }
            '"' => {
                let (s, len) = lex_quoted(rest).map_err(|m| err(start, &m))?;
                at += len;
                Tok::Str(s)
            }
            '`' => {
                let Some(close) = rest[1..].find('`') else {
                    return Err(err(start, "unterminated raw quoted string"));
                };
                at += close + 2;
                Tok::Str(rest[1..=close].to_owned())
            }
            '\'' => {
                let (ch, len) = lex_char(rest).map_err(|m| err(start, &m))?;
                at += len;
                Tok::Char(ch)
            }
            '$' => {
                let len = 1 + ident_len(&rest[1..]);
                at += len;
                Tok::Variable(rest[..len].to_owned())
            }
            '.' => {
                let len = ident_len(&rest[1..]);
                if len == 0 {
                    if rest[1..].starts_with(|c: char| c.is_ascii_digit()) {
                        let len = number_len(rest);
                        at += len;
                        Tok::Number(rest[..len].to_owned())
                    } else {
                        at += 1;
                        Tok::Dot
                    }
                } else {
                    at += 1 + len;
                    Tok::Field(rest[1..=len].to_owned())
                }
            }
            '-' | '+' | '0'..='9' => {
                let len = number_len(rest);
                if len == 0 || (len == 1 && !c.is_ascii_digit()) {
                    return Err(err(start, &format!("bad character {c:?}")));
                }
                at += len;
                Tok::Number(rest[..len].to_owned())
            }
            c if c == '_' || c.is_alphabetic() => {
                let len = ident_len(rest);
                at += len;
                Tok::Ident(rest[..len].to_owned())
            }
            c => return Err(err(start, &format!("bad character {c:?}"))),
        };
        tokens.push(Token { kind, pos: start, space_before });
        space_before = false;
    }
}

fn ident_len(s: &str) -> usize {
    s.char_indices().find(|(_, c)| !(c.is_alphanumeric() || *c == '_')).map_or(s.len(), |(i, _)| i)
}

/// Length of a number literal (sign, digits, `.`, exponent, hex/octal/binary prefixes, `_`).
fn number_len(s: &str) -> usize {
    let bytes = s.as_bytes();
    let mut i = 0;
    if matches!(bytes.first(), Some(b'+' | b'-')) {
        i += 1;
    }
    let hex = bytes[i..].starts_with(b"0x") || bytes[i..].starts_with(b"0X");
    while let Some(&b) = bytes.get(i) {
        let exponent_sign =
            matches!(b, b'+' | b'-') && i > 0 && matches!(bytes[i - 1], b'e' | b'E') && !hex;
        if b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || exponent_sign {
            i += 1;
        } else {
            break;
        }
    }
    i
}

fn lex_quoted(s: &str) -> Result<(String, usize), String> {
    let mut out = String::new();
    let mut chars = s.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, i + 1)),
            '\n' => break,
            '\\' => {
                let Some((_, e)) = chars.next() else { break };
                match e {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    '\\' => out.push('\\'),
                    '"' => out.push('"'),
                    '\'' => out.push('\''),
                    'a' => out.push('\u{7}'),
                    'b' => out.push('\u{8}'),
                    'f' => out.push('\u{c}'),
                    'v' => out.push('\u{b}'),
                    'x' | 'u' | 'U' => {
                        let n = match e {
                            'x' => 2,
                            'u' => 4,
                            _ => 8,
                        };
                        let hex: String =
                            (0..n).filter_map(|_| chars.next().map(|(_, c)| c)).collect();
                        let code = u32::from_str_radix(&hex, 16)
                            .ok()
                            .and_then(char::from_u32)
                            .ok_or_else(|| format!("invalid escape \\{e}{hex}"))?;
                        out.push(code);
                    }
                    other => return Err(format!("unknown escape sequence \\{other}")),
                }
            }
            c => out.push(c),
        }
    }
    Err("unterminated quoted string".to_owned())
}

fn lex_char(s: &str) -> Result<(char, usize), String> {
    let mut chars = s.char_indices().skip(1);
    let c = match chars.next() {
        Some((_, '\\')) => match chars.next() {
            Some((_, 'n')) => '\n',
            Some((_, 't')) => '\t',
            Some((_, '\\')) => '\\',
            Some((_, '\'')) => '\'',
            _ => return Err("unsupported character escape".to_owned()),
        },
        Some((_, c)) => c,
        None => return Err("unterminated character constant".to_owned()),
    };
    match chars.next() {
        Some((i, '\'')) => Ok((c, i + 1)),
        _ => Err("unterminated character constant".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<Tok> {
        match &lex("t", src).unwrap()[0] {
            Piece::Action { tokens, .. } => tokens.iter().map(|t| t.kind.clone()).collect(),
            other => panic!("not an action: {other:?}"),
        }
    }

    #[test]
    fn trim_markers_eat_whitespace_on_their_side_only() {
        let pieces = lex("t", "a  \n{{- 1 -}}\n  b {{ 2 }} c").unwrap();
        assert_eq!(pieces[0], Piece::Text("a".into()));
        assert_eq!(pieces[2], Piece::Text("b ".into()));
        assert_eq!(pieces[4], Piece::Text(" c".into()));
    }

    #[test]
    fn a_dash_without_space_is_a_number() {
        assert_eq!(kinds("{{-3}}"), [Tok::Number("-3".into())]);
    }

    #[test]
    fn tokens_of_an_action() {
        assert_eq!(
            kinds(r#"{{ $x := index .Parameters "a\tb" | printf `%s` 'c' 1.5e+3 }}"#),
            [
                Tok::Variable("$x".into()),
                Tok::Declare,
                Tok::Ident("index".into()),
                Tok::Field("Parameters".into()),
                Tok::Str("a\tb".into()),
                Tok::Pipe,
                Tok::Ident("printf".into()),
                Tok::Str("%s".into()),
                Tok::Char('c'),
                Tok::Number("1.5e+3".into()),
            ]
        );
    }

    #[test]
    fn comments_vanish_and_may_trim() {
        let pieces = lex("t", "a {{- /* note */ -}} b{{/* x */}}").unwrap();
        assert_eq!(pieces, [Piece::Text("a".into()), Piece::Text("b".into())]);
    }

    #[test]
    fn unclosed_action_names_the_position() {
        let e = lex("tpl", "line\n  {{ .x ").unwrap_err();
        assert_eq!(e.to_string(), "template: tpl:2:3: unclosed action");
    }
}
