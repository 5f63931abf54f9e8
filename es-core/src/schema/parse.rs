//! Reads the canonical text of a [`Shape`] back, so the lock file's shapes can be compared field
//! by field with the code's.

use std::fmt;
use std::str::FromStr;

use super::shape::{Field, Shape, Variant, VariantData};

/// Why a text is not a shape in the canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseShapeError {
    /// What was expected.
    pub message: String,
    /// The byte offset in the text where it went wrong.
    pub offset: usize,
}

impl fmt::Display for ParseShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at byte {})", self.message, self.offset)
    }
}

impl std::error::Error for ParseShapeError {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Token {
    /// A bare word: a keyword or a name.
    Word(String),
    /// A JSON string: always a name.
    Quoted(String),
    Punct(char),
}

/// Splits `text` into tokens with their byte offsets.
pub(crate) fn tokens(text: &str) -> Result<Vec<(Token, usize)>, ParseShapeError> {
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if "{}()<>,:?|[]".contains(c) {
            out.push((Token::Punct(c), start));
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut escaped = false;
            let mut end = None;
            for (index, c) in chars.by_ref() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '"' => {
                        end = Some(index);
                        break;
                    }
                    _ => {}
                }
            }
            let end = end.ok_or_else(|| error("an unterminated string", start))?;
            let name: String = serde_json::from_str(&text[start..=end]).map_err(|_| error("a JSON string", start))?;
            out.push((Token::Quoted(name), start));
        } else if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
            let mut word = String::new();
            while let Some(&(_, c)) = chars.peek() {
                if !(c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                    break;
                }
                word.push(c);
                chars.next();
            }
            out.push((Token::Word(word), start));
        } else {
            return Err(error(&format!("a shape, not `{c}`"), start));
        }
    }
    Ok(out)
}

fn error(expected: &str, offset: usize) -> ParseShapeError {
    ParseShapeError {
        message: format!("expected {expected}"),
        offset,
    }
}

impl FromStr for Shape {
    type Err = ParseShapeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut parser = Parser {
            tokens: tokens(text)?,
            next: 0,
            end: text.len(),
        };
        let shape = parser.shape()?;
        match parser.tokens.get(parser.next) {
            None => Ok(shape),
            Some((_, offset)) => Err(error("the end of the shape", *offset)),
        }
    }
}

struct Parser {
    tokens: Vec<(Token, usize)>,
    next: usize,
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.next).map(|(token, _)| token)
    }

    fn offset(&self) -> usize {
        self.tokens.get(self.next).map_or(self.end, |(_, offset)| *offset)
    }

    fn bump(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.next).map(|(token, _)| token.clone());
        self.next += 1;
        token
    }

    fn eat(&mut self, punct: char) -> bool {
        if self.peek() == Some(&Token::Punct(punct)) {
            self.next += 1;
            return true;
        }
        false
    }

    fn expect(&mut self, punct: char) -> Result<(), ParseShapeError> {
        if self.eat(punct) {
            return Ok(());
        }
        Err(error(&format!("`{punct}`"), self.offset()))
    }

    fn name(&mut self) -> Result<String, ParseShapeError> {
        let offset = self.offset();
        match self.bump() {
            Some(Token::Word(name) | Token::Quoted(name)) => Ok(name),
            _ => Err(error("a name", offset)),
        }
    }

    fn shape(&mut self) -> Result<Shape, ParseShapeError> {
        let offset = self.offset();
        match self.bump() {
            Some(Token::Punct('{')) => Ok(Shape::Struct(self.fields()?)),
            Some(Token::Punct('(')) => {
                let (items, trailing) = self.list()?;
                if items.len() == 1 && !trailing {
                    return Err(error("`,` after the only element of a tuple", self.offset()));
                }
                Ok(Shape::Tuple(items))
            }
            Some(Token::Word(word)) => match word.as_str() {
                "option" => Ok(Shape::Option(Box::new(self.inner()?))),
                "seq" => Ok(Shape::Seq(Box::new(self.inner()?))),
                "map" => {
                    self.expect('<')?;
                    let key = self.shape()?;
                    self.expect(',')?;
                    let value = self.shape()?;
                    self.expect('>')?;
                    Ok(Shape::Map(Box::new(key), Box::new(value)))
                }
                "recursive" => {
                    self.expect('(')?;
                    let name = self.name()?;
                    self.expect(')')?;
                    Ok(Shape::Recursive(name))
                }
                "enum" => {
                    self.expect('{')?;
                    Ok(Shape::Enum(self.variants()?))
                }
                other => Shape::primitive(other).ok_or_else(|| error("a shape", offset)),
            },
            _ => Err(error("a shape", offset)),
        }
    }

    fn inner(&mut self) -> Result<Shape, ParseShapeError> {
        self.expect('<')?;
        let inner = self.shape()?;
        self.expect('>')?;
        Ok(inner)
    }

    /// The shapes up to `)`, and whether a comma came after the last one.
    fn list(&mut self) -> Result<(Vec<Shape>, bool), ParseShapeError> {
        let mut items = Vec::new();
        let mut trailing = false;
        while !self.eat(')') {
            items.push(self.shape()?);
            trailing = self.eat(',');
            if !trailing {
                self.expect(')')?;
                break;
            }
        }
        Ok((items, trailing))
    }

    /// The fields after `{`, up to `}`.
    fn fields(&mut self) -> Result<Vec<Field>, ParseShapeError> {
        let mut fields = Vec::new();
        while !self.eat('}') {
            let name = self.name()?;
            let mut aliases = Vec::new();
            while self.eat('|') {
                aliases.push(self.name()?);
            }
            let optional = self.eat('?');
            self.expect(':')?;
            let shape = self.shape()?;
            fields.push(Field {
                name,
                aliases,
                shape,
                optional,
            });
            if !self.eat(',') {
                self.expect('}')?;
                break;
            }
        }
        Ok(fields)
    }

    /// The variants after `enum {`, up to `}`.
    fn variants(&mut self) -> Result<Vec<Variant>, ParseShapeError> {
        let mut variants = Vec::new();
        while !self.eat('}') {
            let name = self.name()?;
            let data = match self.peek() {
                Some(Token::Punct('(')) => {
                    self.next += 1;
                    let (mut items, trailing) = self.list()?;
                    match items.pop() {
                        Some(only) if items.is_empty() && !trailing => VariantData::Newtype(only),
                        Some(last) => {
                            items.push(last);
                            VariantData::Tuple(items)
                        }
                        None => VariantData::Tuple(items),
                    }
                }
                Some(Token::Punct('{')) => {
                    self.next += 1;
                    VariantData::Struct(self.fields()?)
                }
                Some(Token::Word(word)) if word == "unknown" => {
                    self.next += 1;
                    VariantData::Unknown
                }
                _ => VariantData::Unit,
            };
            variants.push(Variant { name, data });
            if !self.eat(',') {
                self.expect('}')?;
                break;
            }
        }
        Ok(variants)
    }
}
