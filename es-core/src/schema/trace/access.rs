//! What the tracer hands the visitors: the elements, entries, keys and variant it chose.

use std::collections::VecDeque;

use serde::de::{DeserializeSeed, EnumAccess, IntoDeserializer, MapAccess, SeqAccess, VariantAccess, Visitor};

use super::tracer::{Mode, Tracer};
use super::{Kind, Node, Step, TraceError};

/// The elements of a sequence or tuple, each at its own position.
pub(super) struct Elements<'s> {
    pub(super) parent: Tracer<'s>,
    pub(super) steps: VecDeque<Step>,
}

impl<'de> SeqAccess<'de> for Elements<'_> {
    type Error = TraceError;

    fn next_element_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<Option<S::Value>, TraceError> {
        match self.steps.pop_front() {
            Some(step) => seed.deserialize(self.parent.child(step)).map(Some),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.steps.len())
    }
}

/// The entries of a map: at most one, its key and value at their positions.
pub(super) struct Entries<'s> {
    pub(super) parent: Tracer<'s>,
    pub(super) left: usize,
}

impl<'de> MapAccess<'de> for Entries<'_> {
    type Error = TraceError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, TraceError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(self.parent.child(Step::Key)).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, TraceError> {
        seed.deserialize(self.parent.child(Step::Value))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

/// The keys of a struct, each value at the position of its key.
pub(super) struct Keys<'s> {
    pub(super) parent: Tracer<'s>,
    pub(super) keys: VecDeque<&'static str>,
    pub(super) current: Option<&'static str>,
}

impl<'s> Keys<'s> {
    pub(super) fn new(parent: Tracer<'s>, keys: Vec<&'static str>) -> Self {
        Self {
            parent,
            keys: keys.into(),
            current: None,
        }
    }
}

impl<'de> MapAccess<'de> for Keys<'_> {
    type Error = TraceError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, TraceError> {
        let Some(key) = self.keys.pop_front() else {
            return Ok(None);
        };
        self.current = Some(key);
        seed.deserialize(key.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, TraceError> {
        match self.current {
            Some(key) => seed.deserialize(self.parent.child(Step::Field(key))),
            None => Err(TraceError::of(Kind::Other("a value asked for before its key".into()))),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.keys.len())
    }
}

/// The variant chosen for an enum.
pub(super) struct Chosen<'s> {
    pub(super) tracer: Tracer<'s>,
    pub(super) variant: &'static str,
}

impl<'de, 's> EnumAccess<'de> for Chosen<'s> {
    type Error = TraceError;
    type Variant = Tracer<'s>;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Tracer<'s>), TraceError> {
        let value = seed.deserialize(self.variant.into_deserializer())?;
        Ok((value, self.tracer.child(Step::Variant(self.variant))))
    }
}

/// The content of a variant, at the variant's position.
impl<'de> VariantAccess<'de> for Tracer<'_> {
    type Error = TraceError;

    fn unit_variant(self) -> Result<(), TraceError> {
        self.record(Node::UnitVariant);
        match self.mode() {
            Mode::Goal => self.stop(),
            Mode::Route(_) => self.lost(),
            Mode::Make => Ok(()),
        }
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, TraceError> {
        self.newtype(|inner| seed.deserialize(inner))
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, TraceError> {
        self.elements(Some(len), visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        self.fields(fields, visitor)
    }
}
