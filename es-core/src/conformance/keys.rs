//! Key stores of data subjects ([`KeyStore`]): keys created once and agreed on by concurrent
//! writers, forgotten for good, and the subjects of each stream.

use crate::pii::{KeyStore, KeyStoreError};
use crate::store::StreamId;

/// A subject no other check or run uses.
fn fresh_subject(kind: &str) -> String {
    format!("{kind}/{}", uuid::Uuid::now_v7())
}

/// A subject's key is created on first use and the same afterwards, also for writers racing to
/// create it; only subjects with a key are listed.
pub async fn keys_are_created_once<K: KeyStore + Clone + 'static>(keys: &K) {
    let subject = fresh_subject("lead");
    let first = keys.key_for_writing(&subject).await;
    let first = first.unwrap_or_else(|error| panic!("creating a key failed: {error}"));
    let again = keys.key_for_writing(&subject).await.ok();
    assert_eq!(again.as_ref(), Some(&first), "the same key on the second write");
    let unseen = fresh_subject("lead");
    let listed = keys.keys(&[subject.as_str(), unseen.as_str()]).await;
    let listed = listed.unwrap_or_else(|error| panic!("reading keys failed: {error}"));
    assert_eq!(listed.len(), 1, "a subject without a key is left out");
    assert_eq!(listed.get(&subject), Some(&first));
    assert!(keys.keys(&[]).await.is_ok_and(|keys| keys.is_empty()));

    let raced = fresh_subject("person");
    let writers = (0..8).map(|_| {
        let (keys, raced) = (keys.clone(), raced.clone());
        tokio::spawn(async move { keys.key_for_writing(&raced).await.ok() })
    });
    let mut created = Vec::new();
    for writer in writers {
        match writer.await {
            Ok(Some(key)) => created.push(key),
            Ok(None) => panic!("a racing writer got no key"),
            Err(error) => panic!("a racing writer failed: {error}"),
        }
    }
    assert!(
        created.windows(2).all(|pair| pair[0] == pair[1]),
        "racing writers agree on one key"
    );
}

/// Forgetting destroys a key for good: it is no longer listed, the subject gets no new one,
/// and forgetting again (or a subject never seen) is harmless and says there was no key.
pub async fn forgotten_keys_stay_forgotten<K: KeyStore>(keys: &K) {
    let subject = fresh_subject("lead");
    if let Err(error) = keys.key_for_writing(&subject).await {
        panic!("creating a key failed: {error}");
    }
    assert!(keys.forget(&subject).await.is_ok_and(|had_key| had_key));
    assert!(
        keys.forget(&subject).await.is_ok_and(|had_key| !had_key),
        "nothing left to forget"
    );
    assert!(keys.keys(&[subject.as_str()]).await.is_ok_and(|keys| keys.is_empty()));
    assert!(matches!(
        keys.key_for_writing(&subject).await,
        Err(KeyStoreError::Forgotten { .. })
    ));
    let unseen = fresh_subject("lead");
    assert!(keys.forget(&unseen).await.is_ok_and(|had_key| !had_key));
    assert!(
        matches!(
            keys.key_for_writing(&unseen).await,
            Err(KeyStoreError::Forgotten { .. })
        ),
        "a subject forgotten before any data never gets a key"
    );
}

/// The subjects noted for a stream are listed once each, in order, and only for that stream.
pub async fn streams_list_their_subjects<K: KeyStore>(keys: &K) {
    let stream = StreamId::new("conformance", uuid::Uuid::now_v7().to_string());
    let other = StreamId::new("conformance", uuid::Uuid::now_v7().to_string());
    for subject in ["person/b", "person/a", "person/b"] {
        if let Err(error) = keys.note_stream(subject, &stream).await {
            panic!("noting a subject failed: {error}");
        }
    }
    assert_eq!(
        keys.subjects_of(&stream).await.ok(),
        Some(vec!["person/a".to_owned(), "person/b".to_owned()])
    );
    assert_eq!(keys.subjects_of(&other).await.ok(), Some(Vec::new()));
}
