//! Keyset pagination: bounded limits, opaque cursors, the page envelope.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use utoipa::ToSchema;

/// One page of a list: `{"items": [...], "next_cursor": "..." | null}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    /// The items of this page, in the list's stable order.
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<Cursor>,
}

impl<T> Page<T> {
    /// A page from up to `limit + 1` items fetched in list order (see
    /// [`PageLimit::overfetch`]): the extra item only says that another page
    /// follows, and the next cursor is the id of the last item kept.
    pub fn from_overfetch(
        mut items: Vec<T>,
        limit: PageLimit,
        id: impl Fn(&T) -> uuid::Uuid,
    ) -> Page<T> {
        let limit = usize::from(limit.get());
        let has_more = items.len() > limit;
        items.truncate(limit);
        let next_cursor = match items.last() {
            Some(last) if has_more => Some(Cursor::encode(&IdKey { id: id(last) })),
            _ => None,
        };
        Page { items, next_cursor }
    }

    /// A page from several sources of one list, each read after the same
    /// cursor in list order: `items` holds what every source gave (up to
    /// `limit + 1` each), `more` says a source holds items beyond those it
    /// gave. Sorted by id, duplicates dropped; the first `limit` are the
    /// list's next `limit` items, since no source left out an item that
    /// sorts before the ones it gave.
    pub fn merged(
        mut items: Vec<T>,
        limit: PageLimit,
        more: bool,
        id: impl Fn(&T) -> uuid::Uuid,
    ) -> Page<T> {
        items.sort_by_key(&id);
        items.dedup_by_key(|item| id(item));
        let limit = usize::from(limit.get());
        let has_more = more || items.len() > limit;
        items.truncate(limit);
        let next_cursor = match items.last() {
            Some(last) if has_more => Some(Cursor::encode(&IdKey { id: id(last) })),
            _ => None,
        };
        Page { items, next_cursor }
    }
}

/// Position in a list ordered by (time-ordered) id.
#[derive(Serialize, Deserialize)]
struct IdKey {
    id: uuid::Uuid,
}

/// How many items a page holds, between 1 and [`PageLimit::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimit(u16);

impl PageLimit {
    /// Largest page a client may ask for.
    pub const MAX: u16 = 100;
    /// Page size when the client does not say.
    pub const DEFAULT: PageLimit = PageLimit(20);

    /// Checks a client-supplied limit.
    ///
    /// # Errors
    /// When `raw` is 0 or above [`PageLimit::MAX`].
    pub fn new(raw: u32) -> Result<PageLimit, PageLimitError> {
        match u16::try_from(raw) {
            Ok(n) if (1..=Self::MAX).contains(&n) => Ok(PageLimit(n)),
            _ => Err(PageLimitError(raw)),
        }
    }

    /// The limit as a number.
    pub fn get(self) -> u16 {
        self.0
    }

    /// Rows to fetch: one more than the page holds, to tell whether another follows.
    pub fn overfetch(self) -> i64 {
        i64::from(self.0) + 1
    }
}

impl Default for PageLimit {
    fn default() -> PageLimit {
        PageLimit::DEFAULT
    }
}

/// A page limit out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("limit must be between 1 and {max}, got {0}", max = PageLimit::MAX)]
pub struct PageLimitError(pub u32);

/// An opaque position in a list. Clients pass it back unchanged.
///
/// Inside it is base64url-encoded JSON of the key of the last item seen; the
/// encoding is not part of the API and may change.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = String, example = "eyJpZCI6IjAxOTM...")]
pub struct Cursor(String);

/// A cursor that this list did not hand out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the cursor is not valid for this list")]
pub struct CursorError;

impl Cursor {
    /// Wraps a key into an opaque cursor.
    pub fn encode<K: Serialize>(key: &K) -> Cursor {
        // Serialising a plain key struct cannot fail; fall back to an empty
        // object rather than panic.
        let json = serde_json::to_vec(key).unwrap_or_else(|_| b"{}".to_vec());
        Cursor(URL_SAFE_NO_PAD.encode(json))
    }

    /// Unwraps the key this cursor was made from.
    ///
    /// # Errors
    /// [`CursorError`] when the text is not a cursor of this key type, or
    /// holds a NUL character anywhere (no key the shop writes has one, and
    /// PostgreSQL refuses it in text: a forged cursor must be a 400, not a
    /// failed query).
    pub fn decode<K: DeserializeOwned>(&self) -> Result<K, CursorError> {
        let bytes = URL_SAFE_NO_PAD.decode(&self.0).map_err(|_| CursorError)?;
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| CursorError)?;
        if holds_nul(&value) {
            return Err(CursorError);
        }
        serde_json::from_value(value).map_err(|_| CursorError)
    }

    /// The id a cursor made by [`Page::from_overfetch`] points after.
    ///
    /// # Errors
    /// [`CursorError`] for a cursor of another list.
    pub fn after_id(cursor: Option<&Cursor>) -> Result<Option<uuid::Uuid>, CursorError> {
        cursor
            .map(|c| c.decode::<IdKey>().map(|k| k.id))
            .transpose()
    }

    /// Wraps text received from a client.
    pub fn from_raw(raw: impl Into<String>) -> Cursor {
        Cursor(raw.into())
    }

    /// The cursor as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether any string of `value`, a key or a value, holds a NUL.
fn holds_nul(value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(fields) => fields.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Key {
        id: u32,
    }

    #[test]
    fn cursor_roundtrips_and_rejects_garbage() {
        let cursor = Cursor::encode(&Key { id: 7 });
        assert_eq!(cursor.decode::<Key>().unwrap(), Key { id: 7 });
        assert_eq!(
            Cursor::from_raw("not base64!").decode::<Key>(),
            Err(CursorError)
        );
        let other = Cursor::encode(&serde_json::json!({"x": 1}));
        assert_eq!(other.decode::<Key>(), Err(CursorError));
    }

    #[test]
    fn a_cursor_holding_a_nul_anywhere_is_refused() {
        #[derive(Debug, PartialEq, Deserialize)]
        struct Named {
            id: u32,
            value: serde_json::Value,
        }
        let fine = Cursor::encode(&serde_json::json!({"id": 1, "value": "a\\u0000"}));
        assert_eq!(
            fine.decode::<Named>().unwrap().value,
            serde_json::json!("a\\u0000"),
            "a backslash and the letters u0000 are text like any other"
        );
        for forged in [
            serde_json::json!({"id": 1, "value": "\u{0}"}),
            serde_json::json!({"id": 1, "value": ["x", {"y": "a\u{0}b"}]}),
            serde_json::json!({"id": 1, "value": {"\u{0}": 1}}),
        ] {
            assert_eq!(
                Cursor::encode(&forged).decode::<Named>(),
                Err(CursorError),
                "{forged}"
            );
        }
    }

    #[test]
    fn pages_from_overfetched_rows() {
        let ids: Vec<uuid::Uuid> = (0..3).map(|_| uuid::Uuid::now_v7()).collect();
        let limit = PageLimit::new(2).unwrap();
        assert_eq!(limit.overfetch(), 3);
        let page = Page::from_overfetch(ids.clone(), limit, |id| *id);
        assert_eq!(page.items, ids[..2]);
        let after = Cursor::after_id(page.next_cursor.as_ref()).unwrap();
        assert_eq!(after, Some(ids[1]));
        let last = Page::from_overfetch(ids[2..].to_vec(), limit, |id| *id);
        assert_eq!(last.next_cursor, None);
        assert_eq!(
            Cursor::after_id(Some(&Cursor::from_raw("x"))),
            Err(CursorError)
        );
    }

    #[test]
    fn merged_sources_page_in_id_order_and_say_when_one_holds_more() {
        let ids: Vec<uuid::Uuid> = (0..5).map(|_| uuid::Uuid::now_v7()).collect();
        let limit = PageLimit::new(2).unwrap();
        // One source gave ids 0 and 3 and holds more; the other 1, 2 and 4.
        let page = Page::merged(
            vec![ids[3], ids[0], ids[1], ids[4], ids[2]],
            limit,
            true,
            |id| *id,
        );
        assert_eq!(page.items, ids[..2]);
        assert_eq!(
            Cursor::after_id(page.next_cursor.as_ref()).unwrap(),
            Some(ids[1])
        );
        // Exactly a page, but a source holds more: a next page follows.
        let full = Page::merged(vec![ids[1], ids[0]], limit, true, |id| *id);
        assert_eq!(full.items, ids[..2]);
        assert!(full.next_cursor.is_some());
        // Exactly a page and nothing beyond it; an item given twice counts once.
        let last = Page::merged(vec![ids[4], ids[3], ids[4]], limit, false, |id| *id);
        assert_eq!(last.items, ids[3..]);
        assert_eq!(last.next_cursor, None);
    }

    #[test]
    fn limit_is_bounded() {
        assert!(PageLimit::new(0).is_err());
        assert!(PageLimit::new(101).is_err());
        assert!(PageLimit::new(u32::MAX).is_err());
        assert_eq!(PageLimit::new(100).unwrap().get(), 100);
    }
}
