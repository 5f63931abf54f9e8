//! `#[pii]` fields and the subject field are known by their stored (JSON) names, whatever
//! serde renames them to.
use es_core::pii::Forgettable;
use es_core::{event, EventSet, EventType};

#[event(subject = person_id)]
#[derive(Debug)]
#[serde(rename_all = "camelCase")]
pub struct PersonMoved {
    pub person_id: String,
    #[pii]
    pub street_address: Forgettable<String>,
    #[pii]
    #[serde(rename = "zip")]
    pub postal_code: Forgettable<String>,
    pub moved_on: String,
}

#[event]
#[derive(Debug)]
pub struct PersonNoted {
    pub text: String,
}

#[event]
#[derive(Debug)]
pub enum PersonEvent {
    Moved(PersonMoved),
    Noted(PersonNoted),
}

fn main() {
    assert_eq!(PersonMoved::PII_FIELDS, ["streetAddress", "zip"]);
    assert_eq!(PersonMoved::PII_SUBJECT, Some("personId"));
    assert!(PersonNoted::PII_FIELDS.is_empty() && PersonNoted::PII_SUBJECT.is_none());
    let moved = PersonEvent::EVENTS[0];
    assert_eq!((moved.pii_fields, moved.pii_subject), (&["streetAddress", "zip"][..], Some("personId")));
    let stored = serde_json::json!({
        "personId": "p-1", "streetAddress": "1 Main St", "zip": "12345", "movedOn": "2026-01-01"
    });
    let read: PersonMoved = serde_json::from_value(stored).unwrap();
    assert_eq!(read.postal_code.known().map(String::as_str), Some("12345"));
}
