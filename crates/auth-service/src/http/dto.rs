//! What the route modules share about bodies: timestamps as RFC 3339 UTC strings and the
//! `?limit=&cursor=` of the paginated listings. Each route module holds its own request and
//! response bodies; unknown request fields are ignored.

use serde::Deserialize;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// `?limit=&cursor=` of the paginated listings. `limit` is read as text so that a bad one is
/// a 422 naming it; the document shows the number it must be.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Entries per page, 1 to 100 (default 20).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
    /// The `next_cursor` of the page before.
    pub cursor: Option<String>,
}
