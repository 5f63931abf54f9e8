//! The deserializer the traced type talks to: one position, one run.

use std::cell::RefCell;
use std::collections::VecDeque;

use serde::de::{self, Visitor};

use super::super::shape::Shape;
use super::access::{Chosen, Elements, Entries, Keys};
use super::{extend, Kind, Node, Path, Said, State, Step, TraceError, MAX_DEPTH, STR_SAMPLES};

/// How the tracer behaves at a position in the current run.
pub(super) enum Mode {
    /// This is the goal.
    Goal,
    /// The goal is further along this step.
    Route(Step),
    /// Off the route: make up a value the visitor accepts.
    Make,
}

/// The deserializer handed to the traced type, at one position.
#[derive(Clone)]
pub(super) struct Tracer<'s> {
    state: &'s RefCell<State>,
    path: Path,
    /// The named types being traced further up (with their field or variant names, and the
    /// length of the path where they start), to cut recursion.
    ancestors: Vec<(&'static str, &'static [&'static str], usize)>,
}

impl<'s> Tracer<'s> {
    /// The tracer at the root of the payload.
    pub(super) fn root(state: &'s RefCell<State>) -> Self {
        Self {
            state,
            path: Vec::new(),
            ancestors: Vec::new(),
        }
    }

    pub(super) fn child(&self, step: Step) -> Self {
        Self {
            state: self.state,
            path: extend(&self.path, step),
            ancestors: self.ancestors.clone(),
        }
    }

    fn within(mut self, name: &'static str, names: &'static [&'static str]) -> Self {
        let depth = self.path.len();
        self.ancestors.push((name, names, depth));
        self
    }

    /// Where the type started further up this path, if it did.
    fn first_seen(&self, name: &'static str, names: &'static [&'static str]) -> Option<Path> {
        self.ancestors
            .iter()
            .find(|&&(seen, seen_names, _)| seen == name && seen_names == names)
            .map(|&(_, _, depth)| self.path[..depth].to_vec())
    }

    /// Records what was asked here (the first answer wins: types ask the same each run).
    pub(super) fn record(&self, node: Node) {
        self.state.borrow_mut().nodes.entry(self.path.clone()).or_insert(node);
    }

    pub(super) fn mode(&self) -> Mode {
        let state = self.state.borrow();
        let at = &state.goal.at;
        if *at == self.path {
            Mode::Goal
        } else if at.starts_with(&self.path) {
            Mode::Route(at[self.path.len()].clone())
        } else {
            Mode::Make
        }
    }

    fn choice(&self) -> usize {
        let state = self.state.borrow();
        state.choice.get(state.key(&self.path)).copied().unwrap_or(0)
    }

    pub(super) fn stop<V>(&self) -> Result<V, TraceError> {
        self.state.borrow_mut().reached = true;
        Err(TraceError::of(Kind::Stop))
    }

    /// Nothing can be made up here (any more): the parent must try something else.
    fn stuck<V>(&self) -> Result<V, TraceError> {
        let blame = (!self.path.is_empty()).then(|| self.path[..self.path.len() - 1].to_vec());
        Err(TraceError {
            kind: Kind::Stuck,
            blame,
        })
    }

    /// A position this run should not have come to (the goal lies elsewhere).
    pub(super) fn lost<V>(&self) -> Result<V, TraceError> {
        Err(TraceError {
            kind: Kind::Stuck,
            blame: None,
        })
    }

    /// Whether to give up making a value here before trying.
    fn cannot_make(&self) -> bool {
        let state = self.state.borrow();
        self.path.len() > MAX_DEPTH || state.exhausted.contains(state.key(&self.path))
    }

    /// Blames a fresh error from a visitor called here on the value that caused it: the last
    /// sample handed out below this position (a `try_from` type refuses after its inner value
    /// was accepted), else this position itself.
    fn settle<V>(&self, result: Result<V, TraceError>) -> Result<V, TraceError> {
        result.map_err(|error| self.blame(error))
    }

    fn blame(&self, mut error: TraceError) -> TraceError {
        if error.blame.is_none() && matches!(error.kind, Kind::Other(_) | Kind::Missing(_) | Kind::Duplicate(_)) {
            let state = self.state.borrow();
            let blame = match (&error.kind, &state.last_leaf) {
                (Kind::Other(_), Some(leaf)) if leaf.starts_with(&self.path) => leaf.clone(),
                _ => self.path.clone(),
            };
            error.blame = Some(blame);
        }
        error
    }

    fn leaf<'de, V: Visitor<'de>>(self, leaf: Node, visitor: V) -> Result<V::Value, TraceError> {
        self.record(leaf.clone());
        match self.mode() {
            Mode::Goal => self.stop(),
            Mode::Route(_) => self.lost(),
            Mode::Make => {
                if self.cannot_make() {
                    return self.stuck();
                }
                self.state.borrow_mut().last_leaf = Some(self.path.clone());
                let sample = self.choice();
                let result = feed(&leaf, sample, visitor, &self);
                self.settle(result)
            }
        }
    }

    fn option<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.record(Node::Option);
        let result = match self.mode() {
            Mode::Goal => return self.stop(),
            Mode::Route(Step::Some) => visitor.visit_some(self.child(Step::Some)),
            Mode::Route(_) => return self.lost(),
            Mode::Make if self.cannot_make() => return self.stuck(),
            Mode::Make if self.choice() == 0 => visitor.visit_none(),
            Mode::Make => visitor.visit_some(self.child(Step::Some)),
        };
        self.settle(result)
    }

    /// Sequences and tuples: `len` is `None` for a sequence (one element is enough to learn it).
    pub(super) fn elements<'de, V: Visitor<'de>>(self, len: Option<usize>, visitor: V) -> Result<V::Value, TraceError> {
        self.record(len.map_or(Node::Seq, Node::Tuple));
        let count = match (self.mode(), len) {
            (Mode::Goal, _) => return self.stop(),
            (Mode::Route(Step::Elem(0)), None) => 1,
            (Mode::Route(Step::Elem(index)), Some(len)) if index < len => index + 1,
            (Mode::Route(_), _) => return self.lost(),
            (Mode::Make, _) if self.cannot_make() => return self.stuck(),
            (Mode::Make, None) => self.choice(),
            (Mode::Make, Some(len)) => len,
        };
        let steps = (0..count).map(|index| Step::Elem(if len.is_some() { index } else { 0 }));
        let result = visitor.visit_seq(Elements {
            parent: self.clone(),
            steps: steps.collect(),
        });
        self.settle(result)
    }

    fn map<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.record(Node::Map);
        let entries = match self.mode() {
            Mode::Goal => return self.stop(),
            Mode::Route(Step::Key | Step::Value) => 1,
            Mode::Route(_) => return self.lost(),
            Mode::Make if self.cannot_make() => return self.stuck(),
            Mode::Make => self.choice(),
        };
        let result = visitor.visit_map(Entries {
            parent: self.clone(),
            left: entries,
        });
        self.settle(result)
    }

    pub(super) fn fields<'de, V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        self.record(Node::Struct(fields));
        let keys: Vec<&'static str> = match self.mode() {
            Mode::Goal => {
                let present = self.state.borrow().goal.present.clone();
                let Some(present) = present else {
                    return self.stop();
                };
                let result = visitor.visit_map(Keys::new(self.clone(), present));
                let said = match result {
                    Ok(_) => Ok(Said::Accepted),
                    Err(TraceError {
                        kind: Kind::Missing(field),
                        blame: None,
                    }) => Ok(Said::Missing(field)),
                    Err(TraceError {
                        kind: Kind::Duplicate(field),
                        blame: None,
                    }) => Ok(Said::Duplicate(field)),
                    Err(error) => Err(self.blame(error)),
                };
                self.state.borrow_mut().said = Some(said);
                return self.stop();
            }
            Mode::Route(Step::Field(field)) => vec![field],
            Mode::Route(_) => return self.lost(),
            Mode::Make if self.cannot_make() => return self.stuck(),
            Mode::Make => {
                // Leave out the fields nothing could be made for: they may be optional.
                let state = self.state.borrow();
                fields
                    .iter()
                    .copied()
                    .filter(|&field| !state.exhausted.contains(&extend(&self.path, Step::Field(field))))
                    .collect()
            }
        };
        let result = visitor.visit_map(Keys::new(self.clone(), keys));
        self.settle(result)
    }

    /// A newtype (struct or variant): its content is read by `read_inner` from the tracer one
    /// step in.
    pub(super) fn newtype<T>(
        self,
        read_inner: impl FnOnce(Tracer<'_>) -> Result<T, TraceError>,
    ) -> Result<T, TraceError> {
        self.record(Node::Newtype);
        let result = match self.mode() {
            Mode::Goal => return self.stop(),
            Mode::Route(Step::Inner) => read_inner(self.child(Step::Inner)),
            Mode::Route(_) => return self.lost(),
            Mode::Make if self.cannot_make() => return self.stuck(),
            Mode::Make => read_inner(self.child(Step::Inner)),
        };
        self.settle(result)
    }

    /// A named type: a type already being traced on this path is recursive. There the tracer
    /// stops reaching further (the content is the type's, traced above) but still makes up values
    /// (`Err` when the caller must not go on).
    fn named<V>(
        self,
        name: &'static str,
        names: &'static [&'static str],
        choices: usize,
    ) -> Result<Self, Result<V, TraceError>> {
        if let Some(first) = self.first_seen(name, names) {
            self.record(Node::Recursive(name, choices));
            // Values made up here follow the choices of the type's first position: one that ends
            // there (a leaf variant) ends the recursion everywhere.
            self.state
                .borrow_mut()
                .same_as
                .entry(self.path.clone())
                .or_insert(first);
            match self.mode() {
                Mode::Goal => return Err(self.stop()),
                Mode::Route(_) => return Err(self.lost()),
                Mode::Make => {}
            }
        }
        Ok(self.within(name, names))
    }
}

/// Hands the visitor sample number `sample` of the leaf's kind.
fn feed<'de, V: Visitor<'de>>(leaf: &Node, sample: usize, visitor: V, at: &Tracer<'_>) -> Result<V::Value, TraceError> {
    let one = sample == 1;
    match leaf {
        Node::Leaf(Shape::Bool) => visitor.visit_bool(one),
        Node::Leaf(Shape::I8) => visitor.visit_i8(i8::from(one)),
        Node::Leaf(Shape::I16) => visitor.visit_i16(i16::from(one)),
        Node::Leaf(Shape::I32) => visitor.visit_i32(i32::from(one)),
        Node::Leaf(Shape::I64) => visitor.visit_i64(i64::from(one)),
        Node::Leaf(Shape::I128) => visitor.visit_i128(i128::from(one)),
        Node::Leaf(Shape::U8) => visitor.visit_u8(u8::from(one)),
        Node::Leaf(Shape::U16) => visitor.visit_u16(u16::from(one)),
        Node::Leaf(Shape::U32) => visitor.visit_u32(u32::from(one)),
        Node::Leaf(Shape::U64) => visitor.visit_u64(u64::from(one)),
        Node::Leaf(Shape::U128) => visitor.visit_u128(u128::from(one)),
        Node::Leaf(Shape::F32) => visitor.visit_f32(f32::from(u8::from(one))),
        Node::Leaf(Shape::F64) => visitor.visit_f64(f64::from(u8::from(one))),
        Node::Leaf(Shape::Char) => visitor.visit_char(if one { '0' } else { 'a' }),
        Node::Leaf(Shape::Str) | Node::Identifier => visitor.visit_str(STR_SAMPLES.get(sample).copied().unwrap_or("")),
        Node::Leaf(Shape::Bytes) => visitor.visit_bytes(if one { b"0" } else { b"" }),
        Node::Leaf(Shape::Unit) => visitor.visit_unit(),
        Node::Leaf(Shape::Any) => match sample {
            0 => visitor.visit_unit(),
            1 => visitor.visit_str(""),
            2 => visitor.visit_u64(0),
            3 => visitor.visit_bool(false),
            4 => visitor.visit_map(Entries {
                parent: at.clone(),
                left: 0,
            }),
            _ => visitor.visit_seq(Elements {
                parent: at.clone(),
                steps: VecDeque::new(),
            }),
        },
        // Only scalars are fed; the other nodes have visitors of their own.
        _ => visitor.visit_unit(),
    }
}

macro_rules! leaves {
    ($($method:ident => $leaf:ident,)*) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
            self.leaf(Node::Leaf(Shape::$leaf), visitor)
        })*
    };
}

impl<'de> de::Deserializer<'de> for Tracer<'_> {
    type Error = TraceError;

    leaves! {
        deserialize_any => Any,
        deserialize_ignored_any => Any,
        deserialize_bool => Bool,
        deserialize_i8 => I8,
        deserialize_i16 => I16,
        deserialize_i32 => I32,
        deserialize_i64 => I64,
        deserialize_i128 => I128,
        deserialize_u8 => U8,
        deserialize_u16 => U16,
        deserialize_u32 => U32,
        deserialize_u64 => U64,
        deserialize_u128 => U128,
        deserialize_f32 => F32,
        deserialize_f64 => F64,
        deserialize_char => Char,
        deserialize_str => Str,
        deserialize_string => Str,
        deserialize_bytes => Bytes,
        deserialize_byte_buf => Bytes,
        deserialize_unit => Unit,
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.leaf(Node::Identifier, visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.option(visitor)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value, TraceError> {
        self.record(Node::UnitStruct);
        match self.mode() {
            Mode::Goal => self.stop(),
            Mode::Route(_) => self.lost(),
            Mode::Make => {
                let result = visitor.visit_unit();
                self.settle(result)
            }
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        match self.named(name, &[], 1) {
            Ok(tracer) => tracer.newtype(|inner| visitor.visit_newtype_struct(inner)),
            Err(done) => done,
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.elements(None, visitor)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, TraceError> {
        self.elements(Some(len), visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        match self.named(name, &[], 1) {
            Ok(tracer) => tracer.elements(Some(len), visitor),
            Err(done) => done,
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.map(visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        match self.named(name, fields, 1) {
            Ok(tracer) => tracer.fields(fields, visitor),
            Err(done) => done,
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let tracer = match self.named(name, variants, variants.len()) {
            Ok(tracer) => tracer,
            Err(done) => return done,
        };
        tracer.record(Node::Enum(variants));
        let variant = match tracer.mode() {
            Mode::Goal => return tracer.stop(),
            Mode::Route(Step::Variant(variant)) => variant,
            Mode::Route(_) => return tracer.lost(),
            Mode::Make if tracer.cannot_make() => return tracer.stuck(),
            Mode::Make => match variants.get(tracer.choice()) {
                Some(&variant) => variant,
                None => return tracer.stuck(),
            },
        };
        let result = visitor.visit_enum(Chosen {
            tracer: tracer.clone(),
            variant,
        });
        tracer.settle(result)
    }

    fn is_human_readable(&self) -> bool {
        // Events are stored as JSON: types that store differently in binary formats (timestamps,
        // UUIDs) must show their JSON form.
        true
    }
}
