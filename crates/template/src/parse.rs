//! Builds the tree of a template from its pieces: text, actions, and the control structures
//! `if`/`else if`/`else`, `with`/`else with`, `range` (with `break`/`continue`) closed by `end`.

use crate::TemplateError;
use crate::funcs;
use crate::lex::{Piece, Tok, Token};
use crate::value::Value;

#[derive(Debug, Clone)]
pub(crate) enum Node {
    Text(String),
    /// An action that prints its pipeline (unless the pipeline declares or assigns variables).
    Action(Pipeline),
    If(Branch),
    With(Branch),
    Range(Branch),
    Break,
    Continue,
}

#[derive(Debug, Clone)]
pub(crate) struct Branch {
    pub pipe: Pipeline,
    pub body: Vec<Node>,
    pub otherwise: Vec<Node>,
}

#[derive(Debug, Clone)]
pub(crate) struct Pipeline {
    pub pos: usize,
    /// Variables declared (`:=`) or assigned (`=`) by this pipeline.
    pub vars: Vec<String>,
    pub assign: bool,
    pub cmds: Vec<Command>,
}

#[derive(Debug, Clone)]
pub(crate) struct Command {
    pub pos: usize,
    pub args: Vec<Operand>,
}

#[derive(Debug, Clone)]
pub(crate) struct Operand {
    pub pos: usize,
    pub term: Term,
    /// Field names applied in turn to the term's value (`$x.a.b`, `(f).a`).
    pub chain: Vec<String>,
}

#[derive(Debug, Clone)]
pub(crate) enum Term {
    Dot,
    /// `.a.b` – fields of dot.
    Field(Vec<String>),
    Variable(String),
    Function(String),
    Literal(Value),
    Nil,
    Pipeline(Box<Pipeline>),
}

/// How a list of nodes ended.
enum End {
    Eof,
    /// `end`, at its offset.
    Close(usize),
    /// `else` followed by the tokens after it (e.g. `if ...` for `else if`).
    Else(usize, Vec<Token>),
}

pub(crate) struct Parser<'a> {
    name: &'a str,
    src: &'a str,
    pieces: std::vec::IntoIter<Piece>,
    /// Variables in scope, to refuse undefined ones at parse time as Go does.
    vars: Vec<String>,
    range_depth: usize,
}

impl<'a> Parser<'a> {
    pub(crate) fn new(name: &'a str, src: &'a str, pieces: Vec<Piece>) -> Self {
        Self { name, src, pieces: pieces.into_iter(), vars: vec!["$".to_owned()], range_depth: 0 }
    }

    fn err(&self, pos: usize, msg: impl Into<String>) -> TemplateError {
        TemplateError::parse(self.name, self.src, pos, msg.into())
    }

    pub(crate) fn parse(mut self) -> Result<Vec<Node>, TemplateError> {
        let (nodes, end) = self.list()?;
        match end {
            End::Eof => Ok(nodes),
            End::Close(p) => Err(self.err(p, "unexpected {{end}}")),
            End::Else(pos, _) => Err(self.err(pos, "unexpected {{else}}")),
        }
    }

    fn list(&mut self) -> Result<(Vec<Node>, End), TemplateError> {
        let mut nodes = Vec::new();
        while let Some(piece) = self.pieces.next() {
            let (pos, tokens) = match piece {
                Piece::Text(t) => {
                    nodes.push(Node::Text(t));
                    continue;
                }
                Piece::Action { pos, tokens } => (pos, tokens),
            };
            let Some(first) = tokens.first() else {
                return Err(self.err(pos, "missing value for command"));
            };
            let keyword = match &first.kind {
                Tok::Ident(k) => k.as_str(),
                _ => "",
            };
            match keyword {
                "end" => {
                    self.expect_no_more(&tokens[1..], "end")?;
                    return Ok((nodes, End::Close(pos)));
                }
                "else" => return Ok((nodes, End::Else(pos, tokens[1..].to_vec()))),
                "if" | "with" | "range" => {
                    let node = self.control(keyword, pos, &tokens[1..])?;
                    nodes.push(node);
                }
                "break" | "continue" => {
                    self.expect_no_more(&tokens[1..], keyword)?;
                    if self.range_depth == 0 {
                        return Err(
                            self.err(pos, format!("{{{{{keyword}}}}} outside {{{{range}}}}"))
                        );
                    }
                    nodes.push(if keyword == "break" { Node::Break } else { Node::Continue });
                }
                "define" | "template" | "block" => {
                    return Err(self.err(pos, format!("{{{{{keyword}}}}} is not supported")));
                }
                _ => {
                    let pipe = self.pipeline(pos, &tokens, false)?;
                    nodes.push(Node::Action(pipe));
                }
            }
        }
        Ok((nodes, End::Eof))
    }

    fn expect_no_more(&self, rest: &[Token], keyword: &str) -> Result<(), TemplateError> {
        match rest.first() {
            Some(t) => Err(self.err(t.pos, format!("unexpected token in {{{{{keyword}}}}}"))),
            None => Ok(()),
        }
    }

    /// Parses `if`/`with`/`range` after the keyword, through the matching `end`.
    fn control(
        &mut self,
        keyword: &str,
        pos: usize,
        tokens: &[Token],
    ) -> Result<Node, TemplateError> {
        let outer = self.vars.len();
        let pipe = self.pipeline(pos, tokens, keyword == "range")?;
        // Variables the pipeline declares are visible in both branches; those declared in
        // a branch end with it.
        let scope = self.vars.len();
        if keyword == "range" {
            self.range_depth += 1;
        }
        let listed = self.list();
        if keyword == "range" {
            self.range_depth -= 1;
        }
        let (body, end) = listed?;
        self.vars.truncate(scope);
        let otherwise = match end {
            End::Eof => return Err(self.err(pos, format!("unexpected EOF in {{{{{keyword}}}}}"))),
            End::Close(_) => Vec::new(),
            End::Else(else_pos, rest) => match rest.first().map(|t| &t.kind) {
                None => {
                    let (otherwise, end) = self.list()?;
                    self.vars.truncate(scope);
                    match end {
                        End::Close(_) => otherwise,
                        End::Eof => {
                            return Err(
                                self.err(pos, format!("unexpected EOF in {{{{{keyword}}}}}"))
                            );
                        }
                        End::Else(p, _) => return Err(self.err(p, "expected end; found {{else}}")),
                    }
                }
                // `else if` / `else with` chain: the nested structure consumes the shared `end`.
                Some(Tok::Ident(k)) if (k == "if" || k == "with") && keyword != "range" => {
                    let k = k.clone();
                    vec![self.control(&k, else_pos, &rest[1..])?]
                }
                Some(_) => return Err(self.err(rest[0].pos, "unexpected token in {{else}}")),
            },
        };
        self.vars.truncate(outer);
        let branch = Branch { pipe, body, otherwise };
        Ok(match keyword {
            "if" => Node::If(branch),
            "with" => Node::With(branch),
            _ => Node::Range(branch),
        })
    }

    fn pipeline(
        &mut self,
        pos: usize,
        tokens: &[Token],
        in_range: bool,
    ) -> Result<Pipeline, TemplateError> {
        let mut i = 0;
        let mut vars = Vec::new();
        let mut assign = false;
        // Declarations: `$x :=`, `$x =`, and in range `$i, $v :=`.
        if let Some(Tok::Variable(v)) = tokens.first().map(|t| &t.kind) {
            match tokens.get(1).map(|t| &t.kind) {
                Some(Tok::Declare) => {
                    vars.push(v.clone());
                    i = 2;
                }
                Some(Tok::Assign) => {
                    vars.push(v.clone());
                    assign = true;
                    i = 2;
                }
                Some(Tok::Comma) if in_range => {
                    if let (Some(Tok::Variable(v2)), Some(Tok::Declare | Tok::Assign)) =
                        (tokens.get(2).map(|t| &t.kind), tokens.get(3).map(|t| &t.kind))
                    {
                        assign = tokens[3].kind == Tok::Assign;
                        vars.push(v.clone());
                        vars.push(v2.clone());
                        i = 4;
                    } else {
                        return Err(self.err(tokens[1].pos, "range can only initialize variables"));
                    }
                }
                _ => {}
            }
        }
        if assign {
            for v in &vars {
                if !self.vars.contains(v) {
                    return Err(self.err(pos, format!("undefined variable \"{v}\"")));
                }
            }
        }
        let (pipe, used) = self.commands(pos, &tokens[i..])?;
        if used != tokens.len() - i {
            return Err(self.err(tokens[i + used].pos, "unexpected \")\" in operand"));
        }
        if !assign {
            self.vars.extend(vars.iter().cloned());
        }
        Ok(Pipeline { pos, vars, assign, cmds: pipe })
    }

    /// Parses commands separated by `|` until the tokens end or an unmatched `)`.
    /// Returns the commands and how many tokens were used.
    fn commands(
        &mut self,
        pos: usize,
        tokens: &[Token],
    ) -> Result<(Vec<Command>, usize), TemplateError> {
        let mut cmds = Vec::new();
        let mut i = 0;
        loop {
            let cmd_pos = tokens.get(i).map_or(pos, |t| t.pos);
            let mut args = Vec::new();
            while let Some(tok) = tokens.get(i) {
                match tok.kind {
                    Tok::Pipe | Tok::RParen => break,
                    _ => {}
                }
                if !args.is_empty() && !tok.space_before && !matches!(tok.kind, Tok::LParen) {
                    return Err(self.err(tok.pos, "missing space between operands"));
                }
                let (operand, used) = self.operand(&tokens[i..])?;
                args.push(operand);
                i += used;
            }
            if args.is_empty() {
                return Err(self.err(cmd_pos, "missing value for command"));
            }
            if let Term::Function(name) = &args[0].term
                && !funcs::exists(name)
            {
                return Err(self.err(args[0].pos, format!("function \"{name}\" not defined")));
            }
            cmds.push(Command { pos: cmd_pos, args });
            match tokens.get(i).map(|t| &t.kind) {
                Some(Tok::Pipe) => i += 1,
                _ => return Ok((cmds, i)),
            }
        }
    }

    fn operand(&mut self, tokens: &[Token]) -> Result<(Operand, usize), TemplateError> {
        let tok = &tokens[0];
        let mut used = 1;
        let term = match &tok.kind {
            Tok::Dot => Term::Dot,
            Tok::Field(f) => {
                let mut fields = vec![f.clone()];
                while let Some(Token { kind: Tok::Field(f), space_before: false, .. }) =
                    tokens.get(used)
                {
                    fields.push(f.clone());
                    used += 1;
                }
                Term::Field(fields)
            }
            Tok::Variable(v) => {
                if !self.vars.contains(v) {
                    return Err(self.err(tok.pos, format!("undefined variable \"{v}\"")));
                }
                Term::Variable(v.clone())
            }
            Tok::Ident(id) => match id.as_str() {
                "true" => Term::Literal(Value::Bool(true)),
                "false" => Term::Literal(Value::Bool(false)),
                "nil" => Term::Nil,
                _ => Term::Function(id.clone()),
            },
            Tok::Str(s) => Term::Literal(Value::String(s.clone())),
            Tok::Char(c) => Term::Literal(Value::Int(i64::from(u32::from(*c)))),
            Tok::Number(n) => Term::Literal(
                parse_number(n)
                    .ok_or_else(|| self.err(tok.pos, format!("bad number syntax: {n:?}")))?,
            ),
            Tok::LParen => {
                let (cmds, n) = self.commands(tok.pos, &tokens[1..])?;
                match tokens.get(1 + n).map(|t| &t.kind) {
                    Some(Tok::RParen) => {}
                    _ => return Err(self.err(tok.pos, "unclosed left paren")),
                }
                used = n + 2;
                Term::Pipeline(Box::new(Pipeline {
                    pos: tok.pos,
                    vars: Vec::new(),
                    assign: false,
                    cmds,
                }))
            }
            Tok::Declare | Tok::Assign => return Err(self.err(tok.pos, "unexpected assignment")),
            Tok::Pipe | Tok::RParen | Tok::Comma => {
                return Err(self.err(tok.pos, "unexpected token in operand"));
            }
        };
        let mut chain = Vec::new();
        if matches!(term, Term::Variable(_) | Term::Pipeline(_) | Term::Dot) {
            while let Some(Token { kind: Tok::Field(f), space_before: false, .. }) =
                tokens.get(used)
            {
                chain.push(f.clone());
                used += 1;
            }
        }
        Ok((Operand { pos: tok.pos, term, chain }, used))
    }
}

fn parse_number(n: &str) -> Option<Value> {
    let clean: String = n.chars().filter(|c| *c != '_').collect();
    let (neg, digits) = match clean.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, clean.strip_prefix('+').unwrap_or(&clean)),
    };
    let radix = |prefix: &[&str], radix: u32| {
        prefix
            .iter()
            .find_map(|p| digits.strip_prefix(p))
            .and_then(|d| i64::from_str_radix(d, radix).ok())
    };
    let int = radix(&["0x", "0X"], 16)
        .or_else(|| radix(&["0o", "0O"], 8))
        .or_else(|| radix(&["0b", "0B"], 2))
        .or_else(|| {
            if digits.len() > 1
                && digits.starts_with('0')
                && digits.bytes().all(|b| b.is_ascii_digit())
            {
                i64::from_str_radix(&digits[1..], 8).ok()
            } else {
                digits.parse::<i64>().ok()
            }
        });
    if let Some(i) = int {
        return Some(Value::Int(if neg { -i } else { i }));
    }
    clean.parse::<f64>().ok().filter(|f| f.is_finite()).map(Value::Float)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lex::lex;

    fn parse(src: &str) -> Result<Vec<Node>, TemplateError> {
        Parser::new("t", src, lex("t", src)?).parse()
    }

    fn error(src: &str) -> String {
        parse(src).unwrap_err().to_string()
    }

    #[test]
    fn else_if_chains_nest_and_share_one_end() {
        let nodes = parse("a{{ if .x }}b{{ else if .y }}c{{ else }}d{{ end }}e").unwrap();
        let [Node::Text(a), Node::If(outer), Node::Text(e)] = nodes.as_slice() else {
            panic!("{nodes:?}")
        };
        assert_eq!((a.as_str(), e.as_str()), ("a", "e"));
        assert!(matches!(outer.body.as_slice(), [Node::Text(b)] if b == "b"));
        let [Node::If(inner)] = outer.otherwise.as_slice() else { panic!("{outer:?}") };
        assert!(matches!(inner.body.as_slice(), [Node::Text(c)] if c == "c"));
        assert!(matches!(inner.otherwise.as_slice(), [Node::Text(d)] if d == "d"));
    }

    #[test]
    fn pipelines_declare_variables_and_chain_commands() {
        let nodes = parse("{{ $v := .a.b | printf \"%s\" }}{{ $v = (len $v) }}").unwrap();
        let [Node::Action(declare), Node::Action(assign)] = nodes.as_slice() else {
            panic!("{nodes:?}")
        };
        assert_eq!(
            (declare.vars.as_slice(), declare.assign),
            (["$v".to_owned()].as_slice(), false)
        );
        assert_eq!(declare.cmds.len(), 2);
        assert!(
            matches!(&declare.cmds[0].args[0].term, Term::Field(f) if f == &["a", "b"]),
            "{declare:?}"
        );
        assert!(matches!(&declare.cmds[1].args[0].term, Term::Function(f) if f == "printf"));
        assert!(assign.assign);
        assert!(matches!(&assign.cmds[0].args[0].term, Term::Pipeline(_)), "{assign:?}");
    }

    #[test]
    fn range_takes_index_and_element_variables() {
        let nodes =
            parse("{{ range $i, $v := .l }}{{ $i }}{{ break }}{{ else }}none{{ end }}").unwrap();
        let [Node::Range(r)] = nodes.as_slice() else { panic!("{nodes:?}") };
        assert_eq!(r.pipe.vars, ["$i", "$v"]);
        assert!(matches!(r.body.as_slice(), [Node::Action(_), Node::Break]), "{r:?}");
        assert!(matches!(r.otherwise.as_slice(), [Node::Text(t)] if t == "none"));
    }

    #[test]
    fn numbers_follow_go_literal_syntax() {
        assert_eq!(parse_number("0x1F"), Some(Value::Int(31)));
        assert_eq!(parse_number("0o17"), Some(Value::Int(15)));
        assert_eq!(parse_number("017"), Some(Value::Int(15)));
        assert_eq!(parse_number("0b101"), Some(Value::Int(5)));
        assert_eq!(parse_number("-1_000"), Some(Value::Int(-1000)));
        assert_eq!(parse_number("1.5e+3"), Some(Value::Float(1500.0)));
        assert_eq!(parse_number("1x"), None);
    }

    #[test]
    fn variables_end_with_their_branch() {
        assert_eq!(
            error("{{ if true }}{{ $x := 1 }}{{ end }}{{ $x }}"),
            "template: t:1:39: undefined variable \"$x\""
        );
        assert_eq!(error("{{ $y = 1 }}"), "template: t:1:1: undefined variable \"$y\"");
    }

    #[test]
    fn structural_errors_name_their_position() {
        assert_eq!(error("{{ break }}"), "template: t:1:1: {{break}} outside {{range}}");
        assert_eq!(error("{{ define \"x\" }}"), "template: t:1:1: {{define}} is not supported");
        assert_eq!(
            error("{{ if 1 }}{{ else }}{{ else }}"),
            "template: t:1:21: expected end; found {{else}}"
        );
        assert_eq!(error("{{ else }}"), "template: t:1:1: unexpected {{else}}");
        assert_eq!(error("{{ end 1 }}"), "template: t:1:8: unexpected token in {{end}}");
        assert_eq!(error("{{ (print 1 }}"), "template: t:1:4: unclosed left paren");
        assert_eq!(
            error("{{ print \"a\"\"b\" }}"),
            "template: t:1:13: missing space between operands"
        );
        assert_eq!(error("{{ 1 | }}"), "template: t:1:1: missing value for command");
        assert_eq!(error("{{ 1x }}"), "template: t:1:4: bad number syntax: \"1x\"");
    }
}
