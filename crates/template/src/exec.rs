//! Runs a parsed template against data: Go's evaluation of pipelines, variables, `if`, `with`,
//! `range` (over lists, maps in key order and integers) with `break`/`continue`, and lazy
//! `and`/`or`.

use crate::TemplateError;
use crate::funcs;
use crate::parse::{Branch, Command, Node, Operand, Pipeline, Term};
use crate::value::Value;

/// Rendering stops past this much output or this many steps: a template is configuration,
/// and a runaway `range` must not stall a controller.
const MAX_OUTPUT: usize = 4 << 20;
const MAX_STEPS: u64 = 5_000_000;

enum Flow {
    Normal,
    Break,
    Continue,
}

pub(crate) struct Exec<'a> {
    name: &'a str,
    src: &'a str,
    vars: Vec<(String, Value)>,
    out: String,
    steps: u64,
}

type Result<T> = std::result::Result<T, TemplateError>;

impl<'a> Exec<'a> {
    pub(crate) fn new(name: &'a str, src: &'a str, root: &Value) -> Self {
        Self { name, src, vars: vec![("$".to_owned(), root.clone())], out: String::new(), steps: 0 }
    }

    pub(crate) fn run(mut self, nodes: &[Node], root: &Value) -> Result<String> {
        self.nodes(root, nodes)?;
        Ok(self.out)
    }

    fn err(&self, pos: usize, msg: impl std::fmt::Display) -> TemplateError {
        TemplateError::exec(self.name, self.src, pos, msg.to_string())
    }

    fn step(&mut self, pos: usize) -> Result<()> {
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return Err(self.err(pos, "template runs too long"));
        }
        if self.out.len() > MAX_OUTPUT {
            return Err(self.err(pos, "template output is too large"));
        }
        Ok(())
    }

    fn nodes(&mut self, dot: &Value, nodes: &[Node]) -> Result<Flow> {
        for node in nodes {
            match node {
                Node::Text(t) => self.out.push_str(t),
                Node::Action(pipe) => {
                    self.step(pipe.pos)?;
                    let v = self.pipeline(dot, pipe)?;
                    if pipe.vars.is_empty() {
                        self.out.push_str(&v.to_string());
                    }
                }
                Node::If(b) | Node::With(b) => {
                    self.step(b.pipe.pos)?;
                    let scope = self.vars.len();
                    let v = self.pipeline(dot, &b.pipe)?;
                    let flow = if v.is_true() {
                        let inner = if matches!(node, Node::With(_)) { &v } else { dot };
                        self.nodes(inner, &b.body)?
                    } else {
                        self.nodes(dot, &b.otherwise)?
                    };
                    self.vars.truncate(scope);
                    if !matches!(flow, Flow::Normal) {
                        return Ok(flow);
                    }
                }
                Node::Range(b) => {
                    let scope = self.vars.len();
                    self.range(dot, b)?;
                    self.vars.truncate(scope);
                }
                Node::Break => return Ok(Flow::Break),
                Node::Continue => return Ok(Flow::Continue),
            }
        }
        Ok(Flow::Normal)
    }

    fn range(&mut self, dot: &Value, b: &Branch) -> Result<()> {
        let value = self.commands(dot, &b.pipe.cmds)?;
        let items: Vec<(Value, Value)> = match value {
            Value::List(l) => {
                l.into_iter().enumerate().map(|(i, v)| (Value::Int(index(i)), v)).collect()
            }
            Value::Map(m) => m.into_iter().map(|(k, v)| (Value::String(k), v)).collect(),
            Value::StringMap(m) => {
                m.into_iter().map(|(k, v)| (Value::String(k), Value::String(v))).collect()
            }
            Value::Int(n) => (0..n.max(0)).map(|i| (Value::Int(i), Value::Int(i))).collect(),
            Value::Missing | Value::Nil => Vec::new(),
            other => return Err(self.err(b.pipe.pos, format!("range can't iterate over {other}"))),
        };
        if items.is_empty() {
            self.nodes(dot, &b.otherwise)?;
            return Ok(());
        }
        for (key, elem) in items {
            self.step(b.pipe.pos)?;
            let scope = self.vars.len();
            match b.pipe.vars.as_slice() {
                [] => {}
                [v] => self.bind(b.pipe.pos, v, elem.clone(), b.pipe.assign)?,
                [k, v, ..] => {
                    self.bind(b.pipe.pos, k, key, b.pipe.assign)?;
                    self.bind(b.pipe.pos, v, elem.clone(), b.pipe.assign)?;
                }
            }
            let flow = self.nodes(&elem, &b.body)?;
            self.vars.truncate(scope);
            if matches!(flow, Flow::Break) {
                break;
            }
        }
        Ok(())
    }

    fn bind(&mut self, pos: usize, name: &str, value: Value, assign: bool) -> Result<()> {
        if !assign {
            self.vars.push((name.to_owned(), value));
            return Ok(());
        }
        match self.vars.iter_mut().rev().find(|(n, _)| n == name) {
            Some(slot) => {
                slot.1 = value;
                Ok(())
            }
            None => Err(self.err(pos, format!("undefined variable: {name}"))),
        }
    }

    fn pipeline(&mut self, dot: &Value, pipe: &Pipeline) -> Result<Value> {
        let value = self.commands(dot, &pipe.cmds)?;
        for name in &pipe.vars {
            self.bind(pipe.pos, name, value.clone(), pipe.assign)?;
        }
        Ok(value)
    }

    fn commands(&mut self, dot: &Value, cmds: &[Command]) -> Result<Value> {
        let mut value = None;
        for cmd in cmds {
            value = Some(self.command(dot, cmd, value.take())?);
        }
        Ok(value.unwrap_or(Value::Missing))
    }

    fn command(&mut self, dot: &Value, cmd: &Command, piped: Option<Value>) -> Result<Value> {
        let first = &cmd.args[0];
        let Term::Function(name) = &first.term else {
            if cmd.args.len() > 1 || piped.is_some() {
                return Err(self.err(cmd.pos, "can't give argument to non-function"));
            }
            if matches!(first.term, Term::Nil) {
                return Err(self.err(cmd.pos, "nil is not a command"));
            }
            return self.operand(dot, first);
        };
        if name == "and" || name == "or" {
            // Go evaluates `and`/`or` arguments only as far as needed.
            let n = cmd.args.len() - 1 + usize::from(piped.is_some());
            if n == 0 {
                return Err(self.err(
                    cmd.pos,
                    format!("wrong number of args for {name}: want at least 1 got 0"),
                ));
            }
            let mut last = Value::Missing;
            for arg in &cmd.args[1..] {
                last = self.operand(dot, arg)?;
                if last.is_true() != (name == "and") {
                    return Ok(last);
                }
            }
            return Ok(piped.unwrap_or(last));
        }
        let mut args = Vec::with_capacity(cmd.args.len());
        for arg in &cmd.args[1..] {
            args.push(self.operand(dot, arg)?);
        }
        args.extend(piped);
        funcs::call(name, args).map_err(|e| self.err(cmd.pos, format!("error calling {name}: {e}")))
    }

    fn operand(&mut self, dot: &Value, op: &Operand) -> Result<Value> {
        let mut value = match &op.term {
            Term::Dot => dot.clone(),
            Term::Field(fields) => {
                let mut v = dot.clone();
                for f in fields {
                    v = v.field(f).map_err(|e| self.err(op.pos, e))?;
                }
                v
            }
            Term::Variable(name) => match self.vars.iter().rev().find(|(n, _)| n == name) {
                Some((_, v)) => v.clone(),
                None => return Err(self.err(op.pos, format!("undefined variable: {name}"))),
            },
            // A function name as an argument is a call without arguments.
            Term::Function(name) => funcs::call(name, Vec::new())
                .map_err(|e| self.err(op.pos, format!("error calling {name}: {e}")))?,
            Term::Literal(v) => v.clone(),
            Term::Nil => Value::Nil,
            Term::Pipeline(p) => self.commands(dot, &p.cmds)?,
        };
        for f in &op.chain {
            value = value.field(f).map_err(|e| self.err(op.pos, e))?;
        }
        Ok(value)
    }
}

fn index(i: usize) -> i64 {
    i64::try_from(i).unwrap_or(i64::MAX)
}
