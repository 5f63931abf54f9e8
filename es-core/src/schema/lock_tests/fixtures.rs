//! Versions of one `note` aggregate's event, as the lock tests meet them in turn.

/// The event as first written.
pub mod v1 {
    use crate::{event, Aggregate, Apply};
    use serde::{Deserialize, Serialize};

    #[event(name = "Noted")]
    #[derive(Debug)]
    pub struct Noted {
        pub text: String,
        pub priority: u8,
    }
    #[event]
    #[derive(Debug)]
    pub enum NoteEvent {
        Noted(Noted),
    }
    #[derive(Default, Serialize, Deserialize, Aggregate)]
    #[aggregate(name = "note", event = NoteEvent)]
    pub struct Note;
    impl Apply<Noted> for Note {
        fn apply(&mut self, _: &Noted) {}
    }
}

/// `text` retyped, no version bump.
pub mod retyped {
    use crate::{event, Aggregate, Apply};
    use serde::{Deserialize, Serialize};

    #[event(name = "Noted")]
    #[derive(Debug)]
    pub struct Noted {
        pub text: u32,
        pub priority: u8,
    }
    #[event]
    #[derive(Debug)]
    pub enum NoteEvent {
        Noted(Noted),
    }
    #[derive(Default, Serialize, Deserialize, Aggregate)]
    #[aggregate(name = "note", event = NoteEvent)]
    pub struct Note;
    impl Apply<Noted> for Note {
        fn apply(&mut self, _: &Noted) {}
    }
}

/// `text` renamed to `body`, no version bump.
pub mod renamed {
    use crate::{event, Aggregate, Apply};
    use serde::{Deserialize, Serialize};

    #[event(name = "Noted")]
    #[derive(Debug)]
    pub struct Noted {
        pub body: String,
        pub priority: u8,
    }
    #[event]
    #[derive(Debug)]
    pub enum NoteEvent {
        Noted(Noted),
    }
    #[derive(Default, Serialize, Deserialize, Aggregate)]
    #[aggregate(name = "note", event = NoteEvent)]
    pub struct Note;
    impl Apply<Noted> for Note {
        fn apply(&mut self, _: &Noted) {}
    }
}

/// `text` retyped the right way: version 2 with an upcast from 1.
pub mod bumped {
    use crate::{event, Aggregate, Apply, UpcastError};
    use serde::{Deserialize, Serialize};
    use serde_json::Value;

    #[event(name = "Noted", version = 2)]
    #[upcast(from = 1, json = text_to_length)]
    #[derive(Debug)]
    pub struct Noted {
        pub text: u32,
        pub priority: u8,
    }
    fn text_to_length(mut payload: Value) -> Result<Value, UpcastError> {
        let length = payload["text"].as_str().map_or(0, str::len);
        payload["text"] = length.into();
        Ok(payload)
    }
    #[event]
    #[derive(Debug)]
    pub enum NoteEvent {
        Noted(Noted),
    }
    #[derive(Default, Serialize, Deserialize, Aggregate)]
    #[aggregate(name = "note", event = NoteEvent)]
    pub struct Note;
    impl Apply<Noted> for Note {
        fn apply(&mut self, _: &Noted) {}
    }
}

/// An optional field added: old payloads still decode.
pub mod widened {
    use crate::{event, Aggregate, Apply};
    use serde::{Deserialize, Serialize};

    #[event(name = "Noted")]
    #[derive(Debug)]
    pub struct Noted {
        pub text: String,
        pub priority: u8,
        #[serde(default)]
        pub tags: Vec<String>,
    }
    #[event]
    #[derive(Debug)]
    pub enum NoteEvent {
        Noted(Noted),
    }
    #[derive(Default, Serialize, Deserialize, Aggregate)]
    #[aggregate(name = "note", event = NoteEvent)]
    pub struct Note;
    impl Apply<Noted> for Note {
        fn apply(&mut self, _: &Noted) {}
    }
}

/// The event renamed: the old stored name is an alias now (and `priority` widened).
pub mod aliased {
    use crate::{event, Aggregate, Apply};
    use serde::{Deserialize, Serialize};

    #[event(name = "NoteTaken", alias = "Noted")]
    #[derive(Debug)]
    pub struct NoteTaken {
        pub text: String,
        pub priority: u16,
    }
    #[event]
    #[derive(Debug)]
    pub enum NoteEvent {
        Taken(NoteTaken),
    }
    #[derive(Default, Serialize, Deserialize, Aggregate)]
    #[aggregate(name = "note", event = NoteEvent)]
    pub struct Note;
    impl Apply<NoteTaken> for Note {
        fn apply(&mut self, _: &NoteTaken) {}
    }
}

/// `Noted` is gone; another event took its place.
pub mod removed {
    use crate::{event, Aggregate, Apply};
    use serde::{Deserialize, Serialize};

    #[event(name = "Archived")]
    #[derive(Debug)]
    pub struct Archived;
    #[event]
    #[derive(Debug)]
    pub enum NoteEvent {
        Archived(Archived),
    }
    #[derive(Default, Serialize, Deserialize, Aggregate)]
    #[aggregate(name = "note", event = NoteEvent)]
    pub struct Note;
    impl Apply<Archived> for Note {
        fn apply(&mut self, _: &Archived) {}
    }
}

/// `Noted` is retired: a `#[replaced]` rule turns stored ones into `Archived` events.
pub mod retired {
    use crate::{event, Aggregate, Apply, UpcastError};
    use serde::{Deserialize, Serialize};

    #[event(name = "Archived")]
    #[derive(Debug)]
    pub struct Archived;
    #[event]
    #[derive(Debug)]
    #[replaced(name = "Noted", by = archived)]
    pub enum NoteEvent {
        Archived(Archived),
    }
    fn archived(_: serde_json::Value) -> Result<Vec<NoteEvent>, UpcastError> {
        Ok(vec![Archived.into()])
    }
    #[derive(Default, Serialize, Deserialize, Aggregate)]
    #[aggregate(name = "note", event = NoteEvent)]
    pub struct Note;
    impl Apply<Archived> for Note {
        fn apply(&mut self, _: &Archived) {}
    }
}

/// An event whose shape cannot be traced: it deserializes through a type that asks for nothing.
pub mod opaque {
    use crate::{event, Aggregate, Apply};
    use serde::{Deserialize, Serialize};

    pub struct Silent;
    impl<'de> Deserialize<'de> for Silent {
        fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
            Err(serde::de::Error::custom("this type never says what it reads"))
        }
    }
    #[event(name = "Sealed")]
    #[serde(from = "Silent")]
    #[derive(Debug)]
    pub struct Sealed {
        pub secret: String,
    }
    impl From<Silent> for Sealed {
        fn from(_: Silent) -> Self {
            Self { secret: String::new() }
        }
    }
    #[event]
    #[derive(Debug)]
    pub enum VaultEvent {
        Sealed(Sealed),
    }
    #[derive(Default, Serialize, Deserialize, Aggregate)]
    #[aggregate(name = "vault", event = VaultEvent)]
    pub struct Vault;
    impl Apply<Sealed> for Vault {
        fn apply(&mut self, _: &Sealed) {}
    }
}
