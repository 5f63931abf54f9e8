//! The shape, put together from what the runs recorded.

use super::super::shape::{Field, Shape, Variant, VariantData};
use super::{extend, Node, Path, State, Step};

impl State {
    pub(super) fn build(&self, path: &Path) -> Shape {
        let Some(node) = self.nodes.get(path) else {
            return Shape::Unknown;
        };
        let at = |step| extend(path, step);
        match node {
            Node::Leaf(shape) => shape.clone(),
            Node::Identifier => Shape::Str,
            Node::Option => Shape::Option(Box::new(self.build(&at(Step::Some)))),
            Node::Seq => Shape::Seq(Box::new(self.build(&at(Step::Elem(0))))),
            Node::Map => {
                // A struct read as a map (`#[serde(flatten)]`) asks for its keys as identifiers.
                if self.nodes.get(&at(Step::Key)) == Some(&Node::Identifier) {
                    return Shape::Any;
                }
                Shape::Map(
                    Box::new(self.build(&at(Step::Key))),
                    Box::new(self.build(&at(Step::Value))),
                )
            }
            Node::Tuple(len) => Shape::Tuple(self.tuple(path, *len)),
            Node::Struct(fields) => Shape::Struct(self.fields(path, fields)),
            Node::UnitStruct | Node::UnitVariant => Shape::Unit,
            Node::Newtype => self.build(&at(Step::Inner)),
            Node::Enum(variants) => Shape::Enum(
                variants
                    .iter()
                    .map(|&name| Variant {
                        name: name.to_owned(),
                        data: self.variant(&at(Step::Variant(name))),
                    })
                    .collect(),
            ),
            Node::Recursive(name, _) => Shape::Recursive((*name).to_owned()),
        }
    }

    fn tuple(&self, path: &Path, len: usize) -> Vec<Shape> {
        (0..len)
            .map(|index| self.build(&extend(path, Step::Elem(index))))
            .collect()
    }

    fn variant(&self, path: &Path) -> VariantData {
        match self.nodes.get(path) {
            None => VariantData::Unknown,
            Some(Node::UnitVariant) => VariantData::Unit,
            Some(Node::Newtype) => VariantData::Newtype(self.build(&extend(path, Step::Inner))),
            Some(Node::Tuple(len)) => VariantData::Tuple(self.tuple(path, *len)),
            Some(Node::Struct(fields)) => VariantData::Struct(self.fields(path, fields)),
            Some(_) => VariantData::Unknown,
        }
    }

    /// The fields of a struct in declaration order, aliases folded into the field they name.
    fn fields(&self, path: &Path, keys: &[&'static str]) -> Vec<Field> {
        let facts = self.facts.get(path);
        let primary_of = |key: &'static str| facts.and_then(|facts| facts.primary.get(key)).copied().unwrap_or(key);
        let mut fields: Vec<Field> = Vec::new();
        for &key in keys {
            let primary = primary_of(key);
            if let Some(field) = fields.iter_mut().find(|field| field.name == primary) {
                if key != primary {
                    field.aliases.push(key.to_owned());
                }
                continue;
            }
            let shape = self.build(&extend(path, Step::Field(primary)));
            let optional = match facts {
                Some(facts) if facts.required.contains(primary) => false,
                Some(facts) if facts.settled => true,
                // Not settled: only what could not be missing for sure is claimed optional.
                _ => matches!(shape, Shape::Option(_)),
            };
            let mut field = Field {
                name: primary.to_owned(),
                aliases: Vec::new(),
                shape,
                optional,
            };
            if key != primary {
                field.aliases.push(key.to_owned());
            }
            fields.push(field);
        }
        for field in &mut fields {
            field.aliases.sort();
        }
        fields
    }
}
