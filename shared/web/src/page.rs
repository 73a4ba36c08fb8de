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
    // as `0` or `101`) is the same 422; what is not one is a 400.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page; omit for the first page.
    #[param(min_length = 1, pattern = r"^[A-Za-z0-9_-]+$")]
    pub cursor: Option<String>,
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
                    let message =
                        format!("limit must be between 1 and {}, got {raw}", PageLimit::MAX);
                    Problem::validation(vec![kernel::FieldError::new("limit", message)])
                })?,
        };
        Ok((limit, self.cursor.clone().map(Cursor::from_raw)))
    }
}
