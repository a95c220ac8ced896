//! Go's `fmt.Sprintf` for template values: the verbs templates use (`%s %v %d %q %t %f %e %g
//! %x %X %o %b %c %%`) with flags, width and precision, and Go's in-band error notation
//! (`%!d(string=x)`, `%!s(MISSING)`, `%!(EXTRA ...)`).

use crate::value::{Value, format_float};

#[derive(Default, Clone, Copy)]
struct Spec {
    minus: bool,
    plus: bool,
    sharp: bool,
    space: bool,
    zero: bool,
    width: Option<usize>,
    precision: Option<usize>,
}

pub(crate) fn sprintf(format: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let mut next = 0;
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = Spec::default();
        while let Some(&f) = chars.peek() {
            match f {
                '-' => spec.minus = true,
                '+' => spec.plus = true,
                '#' => spec.sharp = true,
                ' ' => spec.space = true,
                '0' => spec.zero = true,
                _ => break,
            }
            chars.next();
        }
        spec.width = digits(&mut chars);
        if chars.peek() == Some(&'.') {
            chars.next();
            spec.precision = Some(digits(&mut chars).unwrap_or(0));
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(next) else {
            out.push_str(&format!("%!{verb}(MISSING)"));
            continue;
        };
        next += 1;
        out.push_str(&format_one(verb, spec, arg));
    }
    if next < args.len() {
        let extra: Vec<String> = args[next..].iter().map(|a| typed(a, 'v')).collect();
        out.push_str(&format!("%!(EXTRA {})", extra.join(", ")));
    }
    out
}

fn digits(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<usize> {
    let mut n: Option<usize> = None;
    while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
        n = Some(n.unwrap_or(0).saturating_mul(10).saturating_add(d as usize));
        chars.next();
    }
    n
}

/// `type=value` as Go writes it inside `%!verb(...)`.
fn typed(arg: &Value, verb: char) -> String {
    if arg.is_nil() {
        return "<nil>".to_owned();
    }
    let shown = if verb == 'v' { arg.to_string() } else { plain(arg) };
    format!("{}={shown}", arg.type_name())
}

fn plain(arg: &Value) -> String {
    match arg {
        Value::Missing => "<nil>".to_owned(),
        other => other.to_string(),
    }
}

fn bad(verb: char, arg: &Value) -> String {
    if arg.is_nil() {
        return format!("%!{verb}(<nil>)");
    }
    format!("%!{verb}({})", typed(arg, 'v'))
}

fn format_one(verb: char, spec: Spec, arg: &Value) -> String {
    let body = match (verb, arg) {
        ('v', Value::Missing | Value::Nil) => "<nil>".to_owned(),
        ('v', Value::Float(f)) => float(*f, 'g', spec),
        ('v', Value::Int(i)) => int(*i, 10, spec, false),
        ('v', other) => truncate(&other.to_string(), spec.precision),
        ('s', Value::String(s)) => truncate(s, spec.precision),
        ('s', Value::List(items)) => {
            let inner: Vec<String> =
                items.iter().map(|i| format_one('s', Spec::default(), i)).collect();
            format!("[{}]", inner.join(" "))
        }
        ('q', Value::String(s)) => go_quote(s),
        ('q', Value::Int(i)) => {
            let c = u32::try_from(*i).ok().and_then(char::from_u32).unwrap_or('\u{fffd}');
            format!("'{}'", go_quote(&c.to_string()).trim_matches('"'))
        }
        ('t', Value::Bool(b)) => b.to_string(),
        ('d', Value::Int(i)) => int(*i, 10, spec, false),
        ('o', Value::Int(i)) => int(*i, 8, spec, false),
        ('b', Value::Int(i)) => int(*i, 2, spec, false),
        ('x', Value::Int(i)) => int(*i, 16, spec, false),
        ('X', Value::Int(i)) => int(*i, 16, spec, true),
        ('x', Value::String(s)) => s.bytes().map(|b| format!("{b:02x}")).collect(),
        ('X', Value::String(s)) => s.bytes().map(|b| format!("{b:02X}")).collect(),
        ('c', Value::Int(i)) => {
            u32::try_from(*i).ok().and_then(char::from_u32).unwrap_or('\u{fffd}').to_string()
        }
        ('f' | 'F' | 'e' | 'E' | 'g' | 'G', Value::Float(f)) => float(*f, verb, spec),
        _ => return bad(verb, arg),
    };
    pad(body, spec, matches!(arg, Value::Int(_) | Value::Float(_)))
}

fn truncate(s: &str, precision: Option<usize>) -> String {
    match precision {
        Some(p) => s.chars().take(p).collect(),
        None => s.to_owned(),
    }
}

fn int(i: i64, radix: u32, spec: Spec, upper: bool) -> String {
    let magnitude = i.unsigned_abs();
    let mut digits = match radix {
        2 => format!("{magnitude:b}"),
        8 => format!("{magnitude:o}"),
        16 if upper => format!("{magnitude:X}"),
        16 => format!("{magnitude:x}"),
        _ => magnitude.to_string(),
    };
    if let Some(p) = spec.precision
        && digits.len() < p
    {
        digits = format!("{}{digits}", "0".repeat(p - digits.len()));
    }
    if spec.sharp {
        match radix {
            8 => digits.insert(0, '0'),
            16 if upper => digits.insert_str(0, "0X"),
            16 => digits.insert_str(0, "0x"),
            _ => {}
        }
    }
    sign(i < 0, spec) + &digits
}

fn sign(negative: bool, spec: Spec) -> String {
    if negative {
        "-".to_owned()
    } else if spec.plus {
        "+".to_owned()
    } else if spec.space {
        " ".to_owned()
    } else {
        String::new()
    }
}

fn float(f: f64, verb: char, spec: Spec) -> String {
    let negative = f.is_sign_negative() && f != 0.0;
    let a = f.abs();
    let body = match verb {
        'f' | 'F' => format!("{a:.*}", spec.precision.unwrap_or(6)),
        'e' | 'E' => {
            let s = go_exponent(&format!("{a:.*e}", spec.precision.unwrap_or(6)));
            if verb == 'E' { s.to_uppercase() } else { s }
        }
        _ => match spec.precision {
            None => format_float(a),
            Some(p) => {
                // %.Pg: P significant digits, exponent form for very large or small values.
                let p = p.max(1);
                let exp = if a == 0.0 { 0 } else { a.log10().floor() as i64 };
                if exp < -4 || exp >= p as i64 {
                    go_exponent(&format!("{a:.*e}", p - 1))
                } else {
                    let decimals = usize::try_from(p as i64 - 1 - exp).unwrap_or(0);
                    let s = format!("{a:.decimals$}");
                    if s.contains('.') {
                        s.trim_end_matches('0').trim_end_matches('.').to_owned()
                    } else {
                        s
                    }
                }
            }
        },
    };
    sign(negative, spec) + &body
}

/// Rust writes `1.5e0`, Go `1.5e+00`.
fn go_exponent(s: &str) -> String {
    match s.split_once('e') {
        Some((m, e)) => {
            let (sign, d) = e.strip_prefix('-').map_or(("+", e), |d| ("-", d));
            format!("{m}e{sign}{d:0>2}")
        }
        None => s.to_owned(),
    }
}

fn pad(body: String, spec: Spec, numeric: bool) -> String {
    let Some(width) = spec.width else { return body };
    let len = body.chars().count();
    if len >= width {
        return body;
    }
    let fill = width - len;
    if spec.minus {
        body + &" ".repeat(fill)
    } else if spec.zero && numeric {
        // Zeros go after the sign.
        let (sign, digits) = match body.chars().next() {
            Some(c @ ('-' | '+' | ' ')) => (c.to_string(), body[1..].to_owned()),
            _ => (String::new(), body),
        };
        sign + &"0".repeat(fill) + &digits
    } else {
        " ".repeat(fill) + &body
    }
}

/// Go's `strconv.Quote`.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => {
                if (c as u32) < 0x10000 {
                    out.push_str(&format!("\\u{:04x}", c as u32));
                } else {
                    out.push_str(&format!("\\U{:08x}", c as u32));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(format: &str, args: &[Value]) -> String {
        sprintf(format, args)
    }

    #[test]
    fn verbs_flags_and_widths() {
        assert_eq!(
            f("https://s3.%s.amazonaws.com", &["us-east-1".into()]),
            "https://s3.us-east-1.amazonaws.com"
        );
        assert_eq!(
            f(
                "%05d|%-4d|%+d|%x|%#X",
                &[Value::Int(42), Value::Int(7), Value::Int(3), Value::Int(255), Value::Int(255)]
            ),
            "00042|7   |+3|ff|0XFF"
        );
        assert_eq!(
            f(
                "%.2f %e %g %v",
                &[
                    Value::Float(1.23456),
                    Value::Float(1500.0),
                    Value::Float(0.5),
                    Value::Float(2.0)
                ]
            ),
            "1.23 1.500000e+03 0.5 2"
        );
        assert_eq!(
            f(
                "%q %t %5s|%-5s|%.2s %%",
                &["a\"b\n".into(), Value::Bool(true), "ab".into(), "cd".into(), "xyz".into()]
            ),
            "\"a\\\"b\\n\" true    ab|cd   |xy %"
        );
    }

    #[test]
    fn mismatches_are_reported_in_band_like_go() {
        assert_eq!(f("%d", &["x".into()]), "%!d(string=x)");
        assert_eq!(f("%s", &[Value::Int(5)]), "%!s(int=5)");
        assert_eq!(f("%s %s", &["a".into()]), "a %!s(MISSING)");
        assert_eq!(f("%s", &["a".into(), Value::Int(1)]), "a%!(EXTRA int=1)");
        assert_eq!(f("%s", &[Value::Missing]), "%!s(<nil>)");
    }
}
