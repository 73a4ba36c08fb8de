//! [`sql`]: raw SQL that is prepared once per connection, not per call.
//!
//! `diesel::sql_query` marks every statement "unsafe to cache", so
//! diesel-async prepares it anew on each call: one more round trip (Parse
//! and Describe before Bind and Execute) and a parse and plan in PostgreSQL
//! every time. Measured on the checkout, that was most of the database's
//! work (docs/BENCHMARKS.md). A [`Sql`] statement is cached by its text and
//! bind types in the connection's statement cache, like the query builder's.
//!
//! The text must therefore be one of a fixed set per call site: values go in
//! binds, never into the text (a text per value would fill the cache).

use std::marker::PhantomData;

use diesel::QueryResult;
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{HasSqlType, Untyped};

/// Raw SQL with its binds, run like `diesel::sql_query` (`execute`, `load`,
/// `get_result` into `QueryableByName` rows), prepared once per connection.
#[derive(Debug, Clone)]
#[must_use = "a query does nothing until it is run"]
pub struct Sql<Binds = NoBinds> {
    text: String,
    binds: Binds,
}

/// A statement without binds yet.
#[derive(Debug, Clone, Copy)]
pub struct NoBinds;

/// One more bind value of SQL type `ST` after `Prev`.
#[derive(Debug, Clone)]
pub struct Bind<Prev, Value, ST> {
    prev: Prev,
    value: Value,
    sql_type: PhantomData<ST>,
}

/// `text` as a statement prepared once per connection; bind its
/// parameters (`$1`, `$2` ...) in order with [`Sql::bind`].
pub fn sql(text: impl Into<String>) -> Sql {
    Sql {
        text: text.into(),
        binds: NoBinds,
    }
}

impl<Binds> Sql<Binds> {
    /// Binds the next parameter, of SQL type `ST`.
    pub fn bind<ST, Value>(self, value: Value) -> Sql<Bind<Binds, Value, ST>> {
        Sql {
            text: self.text,
            binds: Bind {
                prev: self.binds,
                value,
                sql_type: PhantomData,
            },
        }
    }
}

impl QueryFragment<Pg> for NoBinds {
    fn walk_ast<'b>(&'b self, _out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        Ok(())
    }
}

impl<Prev, Value, ST> QueryFragment<Pg> for Bind<Prev, Value, ST>
where
    Pg: HasSqlType<ST>,
    Prev: QueryFragment<Pg>,
    Value: ToSql<ST, Pg>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        self.prev.walk_ast(out.reborrow())?;
        out.push_bind_param_value_only(&self.value)
    }
}

impl<Binds: QueryFragment<Pg>> QueryFragment<Pg> for Sql<Binds> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        // Unlike `sql_query`, no `unsafe_to_cache_prepared()`: the text is
        // the cache key (with the bind types), which is right for a text
        // that does not vary with the values.
        self.binds.walk_ast(out.reborrow())?;
        out.push_sql(&self.text);
        Ok(())
    }
}

impl<Binds> QueryId for Sql<Binds> {
    type QueryId = ();
    // Not static: the statement cache keys it by its SQL text.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Binds> Query for Sql<Binds> {
    type SqlType = Untyped;
}

/// A query-builder statement that diesel would prepare anew on every call,
/// prepared once per connection instead.
///
/// diesel marks every `UPDATE`, every `ON CONFLICT ... DO UPDATE` and every
/// multi-row `INSERT` "unsafe to cache", because their text can vary with
/// the values (an `Option` field of a changeset, the number of rows).
/// diesel-async then prepares them on each call: a Parse round trip before
/// the statement's own, a parse and plan in PostgreSQL, and, inside a
/// pipelined transaction, every statement behind it waiting for that
/// round trip (the statement cache is locked meanwhile). On the checkout
/// that was some ten statements per checkout (docs/BENCHMARKS.md).
///
/// The same contract as [`sql`]: the statement's text at a call site must
/// be one of a small fixed set (no optional fields in its changeset; a
/// multi-row `INSERT` bounded in rows), since each text is cached by the
/// connection for as long as it lives.
///
/// A cached statement may run on a generic plan (PostgreSQL picks one after
/// five executions if it costs no more than theirs), which is right for a
/// lookup by key and can be wrong where the best plan depends on a value:
/// `id = ANY($1)` over a table that was small when it was planned stayed a
/// sequential scan as the relay's outbox grew (docs/BENCHMARKS.md), so the
/// relays' and handlers' marks by a list of ids are left uncached.
pub fn cached<Q>(query: Q) -> Cached<Q> {
    Cached(query)
}

/// See [`cached`].
#[derive(Debug, Clone, Copy)]
#[must_use = "a query does nothing until it is run"]
pub struct Cached<Q>(Q);

impl<Q: QueryFragment<Pg>> QueryFragment<Pg> for Cached<Q> {
    fn walk_ast<'b>(&'b self, out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        self.0.walk_ast(out)
    }

    fn is_safe_to_cache_prepared(&self, _backend: &Pg) -> QueryResult<bool> {
        Ok(true)
    }
}

impl<Q> QueryId for Cached<Q> {
    type QueryId = ();
    // Not static: the statement cache keys it by its SQL text.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q: Query> Query for Cached<Q> {
    type SqlType = Q::SqlType;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_is_the_statement_and_the_binds_follow_in_order() {
        let query = sql("UPDATE t SET a = $2 WHERE id = $1")
            .bind::<diesel::sql_types::Integer, _>(7)
            .bind::<diesel::sql_types::Text, _>("x");
        let text = diesel::debug_query::<Pg, _>(&query).to_string();
        assert!(
            text.starts_with("UPDATE t SET a = $2 WHERE id = $1"),
            "{text}"
        );
        assert!(text.contains("binds: [7, \"x\"]"), "{text}");
    }
}
