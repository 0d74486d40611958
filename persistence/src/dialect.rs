//! The one place where Postgres and SQLite differ below the table traits.
//!
//! Every statement is written once, with numbered placeholders (`$1`, `$2`, …), which both
//! sqlx drivers accept (SQLite reads `$NNN` as the NNN-th argument). What differs between
//! the backends is kept here:
//!
//! - **values**: a bound [`Arg`] becomes `timestamptz`, `jsonb` and `uuid` in Postgres, and
//!   integer milliseconds, text and text in SQLite; [`Row`] reads them back the same way;
//! - **lists**: `= ANY($n)` with one array argument in Postgres, a spelled-out `IN ($n, …)`
//!   in SQLite, in chunks ([`Dialect::in_list`], [`Dialect::chunk`]); multi-row `VALUES`
//!   are the same text in both, in chunks of [`values_rows`] ([`values`]);
//! - **row locks**: `FOR UPDATE` / `FOR SHARE` in Postgres; nothing in SQLite, whose single
//!   writer already holds the whole database ([`Dialect::for_update`]);
//! - the few statements whose text really differs (the I-9 room links, which are a
//!   `tstzrange` in Postgres and two columns in SQLite) choose by [`Dialect`];
//! - row-level security (`set_config('app.tenant_id', …, true)`) and `BEGIN IMMEDIATE`
//!   live with the stores that open the transactions (`pg.rs`, `sqlite.rs`).

use chrono::DateTime;
use lockstep_domain::{TenantId, Timestamp};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Postgres, Row as _, Sqlite};

use crate::{StoreError, StoreResult};

/// Most bound values per statement when a list is spelled out as `IN ($n, …)` in SQLite;
/// well under SQLite's limit on host parameters.
const IN_CHUNK: usize = 500;

/// Which SQL a statement is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// Postgres: row-level security, `timestamptz`, `jsonb`, `uuid` tenants.
    Postgres,
    /// SQLite: tenant scoping by query, integer milliseconds, text JSON and tenants.
    Sqlite,
}

impl Dialect {
    /// A row lock for the rest of the transaction (Postgres); SQLite's single writer already
    /// excludes every other writer.
    pub(crate) fn for_update(self) -> &'static str {
        match self {
            Self::Postgres => " FOR UPDATE",
            Self::Sqlite => "",
        }
    }

    /// A shared row lock for the rest of the transaction (Postgres): the partition fence
    /// holds until commit because `take_partition` must wait for it.
    pub(crate) fn for_share(self) -> &'static str {
        match self {
            Self::Postgres => " FOR SHARE",
            Self::Sqlite => "",
        }
    }

    /// A row lock that skips rows another transaction holds (Postgres): concurrent
    /// claimers take disjoint rows. SQLite's single writer claims alone.
    pub(crate) fn for_update_skip_locked(self) -> &'static str {
        match self {
            Self::Postgres => " FOR UPDATE SKIP LOCKED",
            Self::Sqlite => "",
        }
    }

    /// The `WHERE` of an upsert keyed by a global id, so it never takes over another
    /// tenant's row: Postgres' row-level security refuses that row by itself; in SQLite
    /// the upsert leaves it alone (and the caller sees no row changed).
    pub(crate) fn upsert_guard(self, table: &str) -> String {
        match self {
            Self::Postgres => String::new(),
            Self::Sqlite => format!(" WHERE {table}.tenant_id = excluded.tenant_id"),
        }
    }

    /// `column` is one of `n` values bound from argument `$first` on (the list must be the
    /// statement's last argument, bound with [`Stmt::list`]): `= ANY($first)` in Postgres,
    /// `IN ($first, …)` in SQLite.
    pub(crate) fn in_list(self, column: &str, first: usize, n: usize) -> String {
        match self {
            Self::Postgres => format!("{column} = ANY(${first})"),
            Self::Sqlite => {
                let marks: Vec<String> = (first..first + n).map(|i| format!("${i}")).collect();
                format!("{column} IN ({})", marks.join(", "))
            }
        }
    }

    /// How many list values one statement takes ([`Dialect::in_list`]).
    pub(crate) fn chunk(self) -> usize {
        match self {
            Self::Postgres => usize::MAX,
            Self::Sqlite => IN_CHUNK,
        }
    }

    /// `items` in the chunks one statement takes (one chunk in Postgres); none when empty.
    pub(crate) fn chunks<'a, T>(self, items: &'a [T]) -> std::slice::Chunks<'a, T> {
        items.chunks(self.chunk())
    }
}

/// How many rows of `columns` bound values one multi-row `VALUES` statement takes: as many
/// bound values as an SQLite `IN` list ([`IN_CHUNK`]), far under either backend's limit.
pub(crate) fn values_rows(columns: usize) -> usize {
    (IN_CHUNK / columns.max(1)).max(1)
}

/// `($1, …, $k), ($k+1, …), …`: the placeholders of `rows` rows of `columns` values of a
/// multi-row `VALUES`, the same text in both backends (at most [`values_rows`] rows).
pub(crate) fn values(rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|r| {
            let row: Vec<String> = (1..=columns)
                .map(|c| format!("${}", r * columns + c))
                .collect();
            format!("({})", row.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A value bound to a statement, converted to each backend's column type when bound.
#[derive(Debug)]
pub(crate) enum Arg<'a> {
    /// Text.
    Str(Option<&'a str>),
    /// Owned text.
    Text(Option<String>),
    /// A 64-bit integer.
    I64(Option<i64>),
    /// A 32-bit integer.
    I32(Option<i32>),
    /// A `smallint` in Postgres, an integer in SQLite.
    I16(Option<i16>),
    /// A boolean.
    Bool(bool),
    /// `timestamptz` / integer milliseconds.
    Ts(Option<Timestamp>),
    /// `jsonb` / text.
    Json(serde_json::Value),
    /// `uuid` / text.
    Tenant(TenantId),
    /// `bytea` / blob.
    Bytes(Option<Vec<u8>>),
    /// A list of text: one `text[]` argument in Postgres, one argument per value in SQLite
    /// (see [`Dialect::in_list`]).
    List(Vec<String>),
}

macro_rules! arg_from {
    ($($t:ty => $v:ident($e:expr)),+ $(,)?) => {
        $(impl<'a> From<$t> for Arg<'a> {
            fn from(x: $t) -> Self {
                #[allow(clippy::redundant_closure_call)]
                Arg::$v(($e)(x))
            }
        })+
    };
}

arg_from! {
    &'a str => Str(Some),
    &'a String => Str(|s: &'a String| Some(s.as_str())),
    Option<&'a str> => Str(|s| s),
    &'a Option<String> => Str(|s: &'a Option<String>| s.as_deref()),
    String => Text(Some),
    Option<String> => Text(|s| s),
    i64 => I64(Some),
    Option<i64> => I64(|v| v),
    i32 => I32(Some),
    Option<i32> => I32(|v| v),
    Option<i16> => I16(|v| v),
    bool => Bool(|b| b),
    Timestamp => Ts(Some),
    Option<Timestamp> => Ts(|t| t),
    serde_json::Value => Json(|v| v),
    &'a serde_json::Value => Json(|v: &serde_json::Value| v.clone()),
    TenantId => Tenant(|t| t),
    Vec<u8> => Bytes(Some),
    Option<Vec<u8>> => Bytes(|b| b),
}

/// A statement and its arguments, written once for both backends.
#[derive(Debug)]
pub(crate) struct Stmt<'a> {
    sql: std::borrow::Cow<'a, str>,
    args: Vec<Arg<'a>>,
}

impl<'a> Stmt<'a> {
    /// A statement with numbered placeholders.
    pub(crate) fn new(sql: impl Into<std::borrow::Cow<'a, str>>) -> Self {
        Self {
            sql: sql.into(),
            args: Vec::new(),
        }
    }

    /// Binds the next argument.
    pub(crate) fn bind(mut self, arg: impl Into<Arg<'a>>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Binds a list as the last argument (see [`Dialect::in_list`]).
    pub(crate) fn list<S: AsRef<str>>(self, items: &[S]) -> Self {
        self.bind(Arg::List(
            items.iter().map(|s| s.as_ref().to_owned()).collect(),
        ))
    }

    /// The statement's text.
    #[cfg(feature = "testing")]
    pub(crate) fn sql(&self) -> &str {
        &self.sql
    }

    pub(crate) fn pg(&self) -> Query<'_, Postgres, PgArguments> {
        self.pg_with(&self.sql)
    }

    /// `sql` (this statement's text, or one around it such as its `EXPLAIN`) with this
    /// statement's arguments bound.
    pub(crate) fn pg_with<'q>(&'q self, sql: &'q str) -> Query<'q, Postgres, PgArguments> {
        let mut q = sqlx::query(sql);
        for a in &self.args {
            q = match a {
                Arg::Str(v) => q.bind(*v),
                Arg::Text(v) => q.bind(v.as_deref()),
                Arg::I64(v) => q.bind(*v),
                Arg::I32(v) => q.bind(*v),
                Arg::I16(v) => q.bind(*v),
                Arg::Bool(v) => q.bind(*v),
                Arg::Ts(v) => q.bind(*v),
                Arg::Json(v) => q.bind(v),
                Arg::Tenant(t) => q.bind(t.as_uuid()),
                Arg::Bytes(v) => q.bind(v.as_deref()),
                Arg::List(v) => q.bind(v),
            };
        }
        q
    }

    pub(crate) fn sqlite(&self) -> Query<'_, Sqlite, SqliteArguments<'_>> {
        let mut q = sqlx::query(&self.sql);
        for a in &self.args {
            q = match a {
                Arg::Str(v) => q.bind(*v),
                Arg::Text(v) => q.bind(v.as_deref()),
                Arg::I64(v) => q.bind(*v),
                Arg::I32(v) => q.bind(*v),
                Arg::I16(v) => q.bind(v.map(i64::from)),
                Arg::Bool(v) => q.bind(*v),
                Arg::Ts(v) => q.bind(v.map(|t| t.timestamp_millis())),
                Arg::Json(v) => q.bind(v.to_string()),
                Arg::Tenant(t) => q.bind(t.to_string()),
                Arg::Bytes(v) => q.bind(v.as_deref()),
                Arg::List(v) => {
                    let mut q = q;
                    for s in v {
                        q = q.bind(s.as_str());
                    }
                    q
                }
            };
        }
        q
    }
}

/// A result row of either backend, read by column name into the store's types.
pub(crate) enum Row {
    /// Postgres.
    Pg(PgRow),
    /// SQLite.
    Sqlite(SqliteRow),
}

impl Row {
    /// A column whose Rust type is the same in both backends (text, integers, booleans,
    /// blobs, and their `Option`s).
    pub(crate) fn get<'r, T>(&'r self, column: &str) -> StoreResult<T>
    where
        T: sqlx::Decode<'r, Postgres>
            + sqlx::Type<Postgres>
            + sqlx::Decode<'r, Sqlite>
            + sqlx::Type<Sqlite>,
    {
        Ok(match self {
            Self::Pg(r) => r.try_get(column)?,
            Self::Sqlite(r) => r.try_get(column)?,
        })
    }

    /// A `timestamptz` / integer-milliseconds column that may be NULL.
    pub(crate) fn opt_ts(&self, column: &str) -> StoreResult<Option<Timestamp>> {
        match self {
            Self::Pg(r) => Ok(r.try_get(column)?),
            Self::Sqlite(r) => r
                .try_get::<Option<i64>, _>(column)?
                .map(|ms| {
                    DateTime::from_timestamp_millis(ms)
                        .ok_or_else(|| corrupt("timestamp out of range"))
                })
                .transpose(),
        }
    }

    /// A `timestamptz` / integer-milliseconds column.
    pub(crate) fn ts(&self, column: &str) -> StoreResult<Timestamp> {
        self.opt_ts(column)?
            .ok_or_else(|| corrupt(&format!("{column} is null")))
    }

    /// A `jsonb` / text column.
    pub(crate) fn json(&self, column: &str) -> StoreResult<serde_json::Value> {
        match self {
            Self::Pg(r) => Ok(r.try_get(column)?),
            Self::Sqlite(r) => serde_json::from_str(r.try_get::<&str, _>(column)?)
                .map_err(|_| corrupt("stored json does not parse")),
        }
    }

    /// A `uuid` / text tenant column.
    pub(crate) fn tenant(&self, column: &str) -> StoreResult<TenantId> {
        match self {
            Self::Pg(r) => Ok(TenantId::from_uuid(r.try_get(column)?)),
            Self::Sqlite(r) => Ok(TenantId::parse(r.try_get::<&str, _>(column)?)?),
        }
    }

    /// A `smallint` / integer column that may be NULL.
    pub(crate) fn opt_small(&self, column: &str) -> StoreResult<Option<i32>> {
        match self {
            Self::Pg(r) => Ok(r.try_get::<Option<i16>, _>(column)?.map(i32::from)),
            Self::Sqlite(r) => Ok(r
                .try_get::<Option<i64>, _>(column)?
                .map(|v| i32::try_from(v).unwrap_or(i32::MAX))),
        }
    }

    /// A `smallint` / integer column.
    pub(crate) fn small(&self, column: &str) -> StoreResult<i32> {
        self.opt_small(column)?
            .ok_or_else(|| corrupt(&format!("{column} is null")))
    }
}

/// A stored value that does not decode.
pub(crate) fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}
