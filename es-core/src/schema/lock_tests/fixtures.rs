//! Versions of one `note` aggregate's event, as the lock tests meet them in turn.

/// The rest of a version of the `note` aggregate: its event enum of one `$variant`, with
/// `$attr`s, the aggregate and its `Apply`.
macro_rules! note {
    ($(#[$attr:meta])* $variant:ident($event:ident)) => {
        #[crate::event]
        #[derive(Debug)]
        $(#[$attr])*
        pub enum NoteEvent {
            $variant($event),
        }
        #[derive(Default, serde::Serialize, serde::Deserialize, crate::Aggregate)]
        #[aggregate(name = "note", event = NoteEvent)]
        pub struct Note;
        impl crate::Apply<$event> for Note {
            fn apply(&mut self, _: &$event) {}
        }
    };
}

/// The event as first written.
pub mod v1 {
    use crate::event;

    #[event(name = "Noted")]
    #[derive(Debug)]
    pub struct Noted {
        pub text: String,
        pub priority: u8,
    }
    note!(Noted(Noted));
}

/// `text` and `priority` declared the other way round: JSON objects keep no order.
pub mod reordered {
    use crate::event;

    #[event(name = "Noted")]
    #[derive(Debug)]
    pub struct Noted {
        pub priority: u8,
        pub text: String,
    }
    note!(Noted(Noted));
}

/// `text` retyped, no version bump.
pub mod retyped {
    use crate::event;

    #[event(name = "Noted")]
    #[derive(Debug)]
    pub struct Noted {
        pub text: u32,
        pub priority: u8,
    }
    note!(Noted(Noted));
}

/// `text` renamed to `body`, no version bump.
pub mod renamed {
    use crate::event;

    #[event(name = "Noted")]
    #[derive(Debug)]
    pub struct Noted {
        pub body: String,
        pub priority: u8,
    }
    note!(Noted(Noted));
}

/// `text` retyped the right way: version 2 with an upcast from 1.
pub mod bumped {
    use crate::{event, UpcastError};
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
    note!(Noted(Noted));
}

/// Version 2 with `text` retyped and a typed step from version 1, whose old type `NotedV1` has
/// `priority: $priority`, converted with `$priority_now`.
macro_rules! typed_step {
    ($priority:ty, $priority_now:expr) => {
        #[derive(Debug, serde::Deserialize)]
        pub struct NotedV1 {
            pub text: String,
            pub priority: $priority,
        }

        #[crate::event(name = "Noted", version = 2)]
        #[upcast(from = 1, typed = NotedV1)]
        #[derive(Debug)]
        pub struct Noted {
            pub text: u32,
            pub priority: u8,
        }
        impl From<NotedV1> for Noted {
            fn from(old: NotedV1) -> Self {
                Self {
                    text: u32::try_from(old.text.len()).unwrap_or(u32::MAX),
                    priority: $priority_now(old.priority),
                }
            }
        }
        note!(Noted(Noted));
    };
}

/// `text` retyped with a typed step: version 1 payloads decode as `NotedV1`, which converts.
pub mod typed_step {
    typed_step!(u8, |priority| priority);
}

/// The same step after someone "tidied" the old type: `priority` is no longer what v1 stored.
pub mod typed_step_drifted {
    typed_step!(String, |priority: String| priority.parse().unwrap_or_default());
}

/// An optional field added: old payloads still decode.
pub mod widened {
    use crate::event;

    #[event(name = "Noted")]
    #[derive(Debug)]
    pub struct Noted {
        pub text: String,
        pub priority: u8,
        #[serde(default)]
        pub tags: Vec<String>,
    }
    note!(Noted(Noted));
}

/// The event renamed: the old stored name is an alias now (and `priority` widened).
pub mod aliased {
    use crate::event;

    #[event(name = "NoteTaken", alias = "Noted")]
    #[derive(Debug)]
    pub struct NoteTaken {
        pub text: String,
        pub priority: u16,
    }
    note!(Taken(NoteTaken));
}

/// `Noted` is gone; another event took its place.
pub mod removed {
    use crate::event;

    #[event(name = "Archived")]
    #[derive(Debug)]
    pub struct Archived;
    note!(Archived(Archived));
}

/// `Noted` is retired: a `#[replaced]` rule turns stored ones into `Archived` events.
pub mod retired {
    use crate::{event, UpcastError};

    #[event(name = "Archived")]
    #[derive(Debug)]
    pub struct Archived;
    fn archived(_: serde_json::Value) -> Result<Vec<NoteEvent>, UpcastError> {
        Ok(vec![Archived.into()])
    }
    note!(
        #[replaced(name = "Noted", by = archived)]
        Archived(Archived)
    );
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
