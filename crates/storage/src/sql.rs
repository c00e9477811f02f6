//! Statements built, run and read back without naming the database, so that a
//! repository's rules and row mapping are written once (`repo`, `outbox`) and each backend
//! keeps only its SQL and how it starts a write transaction.
//!
//! The two databases store three things differently; `Dialect` maps them and nothing else
//! needs to know:
//! - timestamps: fixed-width RFC 3339 text on SQLite (so text order is time order),
//!   `timestamptz` on PostgreSQL;
//! - ids: canonical lowercase UUID text on SQLite, `uuid` on PostgreSQL;
//! - a write transaction: `BEGIN IMMEDIATE` on SQLite (the write lock up front), a plain
//!   `BEGIN` on PostgreSQL.
//!
//! JSON goes in and comes out as text on both; PostgreSQL's SQL casts it to and from
//! `jsonb`. Integers are `i64`, except the columns PostgreSQL keeps as `INTEGER`, which are
//! bound and read as `i32` (SQLite reads either from its one integer type).
use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use shared::{InvalidName, StoreError};
use sqlx::error::BoxDynError;
use sqlx::query::Query;
use sqlx::{
    Arguments, AssertSqlSafe, ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool,
    Row, Transaction, Type,
};
use uuid::Uuid;

use crate::error::db;

/// What one backend stores its own way.
pub(crate) trait Dialect: Database {
    /// The backend's name, as `StoreHealth::backend` reports it.
    const BACKEND: &'static str;
    /// A timestamp as stored.
    type Ts: for<'q> Encode<'q, Self> + for<'r> Decode<'r, Self> + Type<Self> + Send;
    /// An id (a UUID) as stored.
    type Id: for<'q> Encode<'q, Self> + for<'r> Decode<'r, Self> + Type<Self> + Send;

    fn ts(at: DateTime<Utc>) -> Self::Ts;
    /// # Errors
    /// `Backend` when stored text is no timestamp (a corrupt row).
    fn from_ts(raw: Self::Ts) -> Result<DateTime<Utc>, StoreError>;
    fn id(id: Uuid) -> Self::Id;
    /// # Errors
    /// `Backend` when stored text is no UUID (a corrupt row).
    fn from_id(raw: Self::Id) -> Result<Uuid, StoreError>;
    fn rows_affected(done: &Self::QueryResult) -> u64;
    /// Start a transaction that will write.
    fn begin_write(
        pool: &Pool<Self>,
    ) -> impl Future<Output = Result<Transaction<'static, Self>, StoreError>> + Send;
}

/// A backend the shared code can run statements on: its arguments take every `Value`, its
/// rows give every column type the schema uses.
pub(crate) trait Db:
    Dialect + Database<Arguments: Args + IntoArguments<Self>, Row: Cols>
{
    fn on_pool(pool: &Pool<Self>) -> impl Executor<'_, Database = Self>;
    fn on_conn(conn: &mut Self::Connection) -> impl Executor<'_, Database = Self>;
}

impl<DB> Db for DB
where
    DB: Dialect + Database<Arguments: Args + IntoArguments<DB>, Row: Cols>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    fn on_pool(pool: &Pool<DB>) -> impl Executor<'_, Database = DB> {
        pool
    }

    fn on_conn(conn: &mut DB::Connection) -> impl Executor<'_, Database = DB> {
        conn
    }
}

/// Where a statement runs: the pool (a connection of its own) or the caller's connection
/// or transaction (`&mut *tx`).
pub(crate) trait On<'c, DB: Db> {
    fn executor(self) -> impl Executor<'c, Database = DB>;
}

impl<'c, DB: Db> On<'c, DB> for &'c Pool<DB> {
    fn executor(self) -> impl Executor<'c, Database = DB> {
        DB::on_pool(self)
    }
}

impl<'c, DB: Db> On<'c, DB> for &'c mut <DB as Database>::Connection {
    fn executor(self) -> impl Executor<'c, Database = DB> {
        DB::on_conn(self)
    }
}

/// One statement and its arguments; `sqlx::query` for the shared code.
pub(crate) struct Stmt<DB: Db> {
    sql: Cow<'static, str>,
    args: DB::Arguments,
    /// The first argument that could not be encoded; reported when the statement runs.
    error: Option<BoxDynError>,
}

/// A statement of `sql`, its arguments bound next in placeholder order.
pub(crate) fn sql<DB: Db>(sql: &'static str) -> Stmt<DB> {
    Stmt {
        sql: Cow::Borrowed(sql),
        args: DB::Arguments::default(),
        error: None,
    }
}

/// A statement assembled at run time from names the code itself holds (never from input):
/// the backup's statements, built from its table list.
pub(crate) fn sql_built<DB: Db>(sql: String) -> Stmt<DB> {
    Stmt {
        sql: Cow::Owned(sql),
        args: DB::Arguments::default(),
        error: None,
    }
}

impl<DB: Db> Stmt<DB> {
    pub(crate) fn bind(mut self, value: impl Value) -> Self {
        if self.error.is_none()
            && let Err(e) = value.add_to(&mut self.args)
        {
            self.error = Some(e);
        }
        self
    }

    fn query(self) -> Result<Query<'static, DB, DB::Arguments>, sqlx::Error> {
        match self.error {
            Some(e) => Err(sqlx::Error::Encode(e)),
            None => Ok(sqlx::query_with(AssertSqlSafe(self.sql), self.args)),
        }
    }

    // The methods below return boxed futures, as sqlx's `Executor` does: the executor's
    // lifetime stays a named parameter here, so an `async_trait` method that awaits them
    // can be proven `Send` for every `DB`.

    /// Run it; returns how many rows it changed.
    pub(crate) fn execute<'c>(self, on: impl On<'c, DB> + 'c) -> Pending<'c, u64> {
        let (query, on) = (self.query(), on.executor());
        Box::pin(async move {
            let done = query?.execute(on).await?;
            Ok(DB::rows_affected(&done))
        })
    }

    pub(crate) fn fetch_all<'c>(self, on: impl On<'c, DB> + 'c) -> Pending<'c, Vec<DB::Row>> {
        let (query, on) = (self.query(), on.executor());
        Box::pin(async move { query?.fetch_all(on).await })
    }

    pub(crate) fn fetch_optional<'c>(
        self,
        on: impl On<'c, DB> + 'c,
    ) -> Pending<'c, Option<DB::Row>> {
        let (query, on) = (self.query(), on.executor());
        Box::pin(async move { query?.fetch_optional(on).await })
    }

    pub(crate) fn fetch_one<'c>(self, on: impl On<'c, DB> + 'c) -> Pending<'c, DB::Row> {
        let (query, on) = (self.query(), on.executor());
        Box::pin(async move { query?.fetch_one(on).await })
    }
}

/// A running statement.
pub(crate) type Pending<'c, T> = Pin<Box<dyn Future<Output = Result<T, sqlx::Error>> + Send + 'c>>;

/// The argument types the statements use, encoded the backend's way.
pub(crate) trait Args {
    fn text(&mut self, v: Option<&str>) -> Result<(), BoxDynError>;
    fn int(&mut self, v: Option<i64>) -> Result<(), BoxDynError>;
    fn int4(&mut self, v: Option<i32>) -> Result<(), BoxDynError>;
    fn flag(&mut self, v: bool) -> Result<(), BoxDynError>;
    fn bytes(&mut self, v: &[u8]) -> Result<(), BoxDynError>;
    fn ts(&mut self, v: Option<DateTime<Utc>>) -> Result<(), BoxDynError>;
    fn uuid(&mut self, v: Option<Uuid>) -> Result<(), BoxDynError>;
}

impl<A, DB> Args for A
where
    A: Arguments<Database = DB>,
    DB: Dialect,
    for<'a> Option<&'a str>: Encode<'a, DB> + Type<DB>,
    for<'a> &'a [u8]: Encode<'a, DB> + Type<DB>,
    for<'a> Option<i64>: Encode<'a, DB> + Type<DB>,
    for<'a> Option<i32>: Encode<'a, DB> + Type<DB>,
    for<'a> bool: Encode<'a, DB> + Type<DB>,
    for<'a> Option<DB::Ts>: Encode<'a, DB>,
    for<'a> Option<DB::Id>: Encode<'a, DB>,
{
    fn text(&mut self, v: Option<&str>) -> Result<(), BoxDynError> {
        self.add(v)
    }

    fn int(&mut self, v: Option<i64>) -> Result<(), BoxDynError> {
        self.add(v)
    }

    fn int4(&mut self, v: Option<i32>) -> Result<(), BoxDynError> {
        self.add(v)
    }

    fn flag(&mut self, v: bool) -> Result<(), BoxDynError> {
        self.add(v)
    }

    fn bytes(&mut self, v: &[u8]) -> Result<(), BoxDynError> {
        self.add(v)
    }

    fn ts(&mut self, v: Option<DateTime<Utc>>) -> Result<(), BoxDynError> {
        self.add(v.map(DB::ts))
    }

    fn uuid(&mut self, v: Option<Uuid>) -> Result<(), BoxDynError> {
        self.add(v.map(DB::id))
    }
}

/// A value `Stmt::bind` takes.
pub(crate) trait Value {
    /// # Errors
    /// When the backend cannot encode it.
    fn add_to(self, args: &mut impl Args) -> Result<(), BoxDynError>;
}

impl Value for &str {
    fn add_to(self, args: &mut impl Args) -> Result<(), BoxDynError> {
        args.text(Some(self))
    }
}

impl Value for &String {
    fn add_to(self, args: &mut impl Args) -> Result<(), BoxDynError> {
        args.text(Some(self))
    }
}

impl Value for String {
    fn add_to(self, args: &mut impl Args) -> Result<(), BoxDynError> {
        args.text(Some(&self))
    }
}

impl Value for Option<&str> {
    fn add_to(self, args: &mut impl Args) -> Result<(), BoxDynError> {
        args.text(self)
    }
}

impl Value for Option<String> {
    fn add_to(self, args: &mut impl Args) -> Result<(), BoxDynError> {
        args.text(self.as_deref())
    }
}

impl Value for i64 {
    fn add_to(self, args: &mut impl Args) -> Result<(), BoxDynError> {
        args.int(Some(self))
    }
}

impl Value for Option<i64> {
    fn add_to(self, args: &mut impl Args) -> Result<(), BoxDynError> {
        args.int(self)
    }
}

impl Value for i32 {
    fn add_to(self, args: &mut impl Args) -> Result<(), BoxDynError> {
        args.int4(Some(self))
    }
}

impl Value for Option<i32> {
    fn add_to(self, args: &mut impl Args) -> Result<(), BoxDynError> {
        args.int4(self)
    }
}

impl Value for bool {
    fn add_to(self, args: &mut impl Args) -> Result<(), BoxDynError> {
        args.flag(self)
    }
}

impl Value for &[u8] {
    fn add_to(self, args: &mut impl Args) -> Result<(), BoxDynError> {
        args.bytes(self)
    }
}

impl Value for &Vec<u8> {
    fn add_to(self, args: &mut impl Args) -> Result<(), BoxDynError> {
        args.bytes(self)
    }
}

impl Value for DateTime<Utc> {
    fn add_to(self, args: &mut impl Args) -> Result<(), BoxDynError> {
        args.ts(Some(self))
    }
}

impl Value for Option<DateTime<Utc>> {
    fn add_to(self, args: &mut impl Args) -> Result<(), BoxDynError> {
        args.ts(self)
    }
}

impl Value for Uuid {
    fn add_to(self, args: &mut impl Args) -> Result<(), BoxDynError> {
        args.uuid(Some(self))
    }
}

impl Value for Option<Uuid> {
    fn add_to(self, args: &mut impl Args) -> Result<(), BoxDynError> {
        args.uuid(self)
    }
}

/// A row's columns by name, decoded the backend's way. A column that does not decode is a
/// backend error: the row is corrupt.
pub(crate) trait Cols {
    fn text(&self, col: &str) -> Result<&str, StoreError>;
    fn opt_text(&self, col: &str) -> Result<Option<&str>, StoreError>;
    fn int(&self, col: &str) -> Result<i64, StoreError>;
    fn opt_int(&self, col: &str) -> Result<Option<i64>, StoreError>;
    fn int4(&self, col: &str) -> Result<i32, StoreError>;
    fn opt_int4(&self, col: &str) -> Result<Option<i32>, StoreError>;
    fn flag(&self, col: &str) -> Result<bool, StoreError>;
    fn bytes(&self, col: &str) -> Result<Vec<u8>, StoreError>;
    fn ts(&self, col: &str) -> Result<DateTime<Utc>, StoreError>;
    fn opt_ts(&self, col: &str) -> Result<Option<DateTime<Utc>>, StoreError>;
    fn uuid(&self, col: &str) -> Result<Uuid, StoreError>;
    fn opt_uuid(&self, col: &str) -> Result<Option<Uuid>, StoreError>;

    fn string(&self, col: &str) -> Result<String, StoreError> {
        self.text(col).map(str::to_owned)
    }

    fn opt_string(&self, col: &str) -> Result<Option<String>, StoreError> {
        Ok(self.opt_text(col)?.map(str::to_owned))
    }

    /// A stored name, checked again as it is read back.
    fn name<T>(
        &self,
        col: &str,
        parse: impl FnOnce(&str) -> Result<T, InvalidName>,
    ) -> Result<T, StoreError> {
        crate::decode(self.text(col)?, parse)
    }

    /// A JSON column (stored as text, or read as text).
    fn json<T: DeserializeOwned>(&self, col: &str) -> Result<T, StoreError> {
        serde_json::from_str(self.text(col)?).map_err(StoreError::backend)
    }

    /// A count or size that is never negative.
    fn count(&self, col: &str) -> Result<u64, StoreError> {
        u64::try_from(self.int(col)?).map_err(StoreError::backend)
    }

    /// An attempt counter (`INTEGER` on PostgreSQL).
    fn attempts(&self, col: &str) -> Result<u32, StoreError> {
        u32::try_from(self.int4(col)?).map_err(StoreError::backend)
    }
}

impl<R, DB> Cols for R
where
    R: Row<Database = DB>,
    DB: Dialect,
    for<'a> &'a str: ColumnIndex<R> + Decode<'a, DB> + Type<DB>,
    for<'a> i64: Decode<'a, DB> + Type<DB>,
    for<'a> i32: Decode<'a, DB> + Type<DB>,
    for<'a> bool: Decode<'a, DB> + Type<DB>,
    for<'a> Vec<u8>: Decode<'a, DB> + Type<DB>,
{
    fn text(&self, col: &str) -> Result<&str, StoreError> {
        self.try_get(col).map_err(db)
    }

    fn opt_text(&self, col: &str) -> Result<Option<&str>, StoreError> {
        self.try_get(col).map_err(db)
    }

    fn int(&self, col: &str) -> Result<i64, StoreError> {
        self.try_get(col).map_err(db)
    }

    fn opt_int(&self, col: &str) -> Result<Option<i64>, StoreError> {
        self.try_get(col).map_err(db)
    }

    fn int4(&self, col: &str) -> Result<i32, StoreError> {
        self.try_get(col).map_err(db)
    }

    fn opt_int4(&self, col: &str) -> Result<Option<i32>, StoreError> {
        self.try_get(col).map_err(db)
    }

    fn flag(&self, col: &str) -> Result<bool, StoreError> {
        self.try_get(col).map_err(db)
    }

    fn bytes(&self, col: &str) -> Result<Vec<u8>, StoreError> {
        self.try_get(col).map_err(db)
    }

    fn ts(&self, col: &str) -> Result<DateTime<Utc>, StoreError> {
        DB::from_ts(self.try_get(col).map_err(db)?)
    }

    fn opt_ts(&self, col: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let raw: Option<DB::Ts> = self.try_get(col).map_err(db)?;
        raw.map(DB::from_ts).transpose()
    }

    fn uuid(&self, col: &str) -> Result<Uuid, StoreError> {
        DB::from_id(self.try_get(col).map_err(db)?)
    }

    fn opt_uuid(&self, col: &str) -> Result<Option<Uuid>, StoreError> {
        let raw: Option<DB::Id> = self.try_get(col).map_err(db)?;
        raw.map(DB::from_id).transpose()
    }
}
