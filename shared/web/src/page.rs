//! [`PageQuery`]: the `limit` and `cursor` query parameters of every list.

use kernel::{Cursor, PageLimit};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::Problem;

/// Query parameters of a paginated list.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1 to 100 (default 20).
    // Read as any integer, so that every whole number out of range (`-1`
    // as `0` or `101`, or past i64) is the same 422; what is not one is a
    // 400.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    #[serde(default, deserialize_with = "whole_number")]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page; omit for the first page.
    #[param(min_length = 1, pattern = r"^[A-Za-z0-9_-]+$")]
    pub cursor: Option<String>,
}

/// A query parameter's whole number, however many digits: one past
/// `i64` is clamped to its end (still out of any range a list takes, so
/// the same 422 as any other), instead of failing to parse (a 400 that
/// said it was no number). What is not a whole number fails to parse.
///
/// # Errors
/// The value is not a whole number (`+`/`-` and digits).
pub fn whole_number<'de, D>(deserializer: D) -> Result<Option<i64>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let raw = std::borrow::Cow::<str>::deserialize(deserializer)?;
    let digits = raw.strip_prefix(['-', '+']).unwrap_or(&raw);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(serde::de::Error::custom(format!(
            "expected a whole number, got `{raw}`"
        )));
    }
    Ok(Some(raw.parse().unwrap_or(if raw.starts_with('-') {
        i64::MIN
    } else {
        i64::MAX
    })))
}

impl PageQuery {
    /// The checked limit and the cursor.
    ///
    /// # Errors
    /// A 422 problem for a limit out of range.
    pub fn parse(&self) -> Result<(PageLimit, Option<Cursor>), Problem> {
        let limit = match self.limit {
            None => PageLimit::DEFAULT,
            Some(raw) => u32::try_from(raw)
                .ok()
                .and_then(|n| PageLimit::new(n).ok())
                .ok_or_else(|| {
                    // A number past 64 bits was clamped (`whole_number`):
                    // not the one sent, so not shown.
                    let got = if raw == i64::MAX || raw == i64::MIN {
                        String::new()
                    } else {
                        format!(", got {raw}")
                    };
                    let message = format!("limit must be between 1 and {}{got}", PageLimit::MAX);
                    Problem::validation(vec![kernel::FieldError::new("limit", message)])
                })?,
        };
        Ok((limit, self.cursor.clone().map(Cursor::from_raw)))
    }
}
