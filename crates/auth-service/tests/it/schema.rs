//! The two dialects' migrations describe one schema: applied to live databases, PostgreSQL
//! (`information_schema`, `pg_indexes`) and SQLite (`pragma_table_info`, `pragma_index_list`)
//! report the same tables, columns, types, nullability, defaults, unique constraints and
//! indexes, compared as data rather than as migration text.

use std::collections::BTreeSet;

use sqlx::Row as _;

use crate::helpers::{Backend, RawStore, spawn_app};

/// One column: table, name, type family, not null, normalised default.
type Column = (String, String, &'static str, bool, Option<String>);
/// One index: table, columns in order, unique, partial.
type Index = (String, Vec<String>, bool, bool);

const BOOKKEEPING: &str = "_sqlx_migrations";

/// Type families both dialects share.
fn family(declared: &str) -> &'static str {
    match declared.to_ascii_lowercase().as_str() {
        "text" | "character varying" => "text",
        "bigint" | "integer" | "int8" | "int4" | "bigserial" => "integer",
        "boolean" | "bool" => "boolean",
        _ => "other",
    }
}

/// `'member'::text` and `'member'` alike, `false` and `FALSE` alike; a sequence default (and
/// SQLite's rowid key) is `autoincrement`.
fn default(raw: Option<String>) -> Option<String> {
    let raw = raw?;
    if raw.starts_with("nextval(") {
        return Some("autoincrement".to_owned());
    }
    let value = raw.split("::").next().unwrap_or(&raw).trim().trim_matches(|c| c == '(' || c == ')');
    Some(value.to_ascii_lowercase())
}

async fn postgres_schema(pool: &sqlx::PgPool) -> (BTreeSet<Column>, BTreeSet<Index>) {
    let rows = sqlx::query(
        "SELECT c.table_name::text AS t, c.column_name::text AS c, c.data_type::text AS ty,
                c.is_nullable::text AS n, c.column_default::text AS d,
                EXISTS (SELECT 1 FROM information_schema.table_constraints tc
                        JOIN information_schema.key_column_usage k
                          ON k.constraint_name = tc.constraint_name AND k.table_name = tc.table_name
                        WHERE tc.constraint_type = 'PRIMARY KEY' AND tc.table_name = c.table_name
                          AND k.column_name = c.column_name) AS pk
         FROM information_schema.columns c WHERE c.table_schema = 'public'",
    )
    .fetch_all(pool)
    .await
    .expect("columns");
    let mut columns = BTreeSet::new();
    for row in rows {
        let table: String = row.get("t");
        if table == BOOKKEEPING {
            continue;
        }
        let pk: bool = row.get("pk");
        let not_null = row.get::<String, _>("n") == "NO" || pk;
        let ty: String = row.get("ty");
        columns.insert((table, row.get("c"), family(&ty), not_null, default(row.get("d"))));
    }
    let rows = sqlx::query("SELECT tablename::text AS t, indexname::text AS i, indexdef::text AS d FROM pg_indexes WHERE schemaname = 'public'")
        .fetch_all(pool)
        .await
        .expect("indexes");
    let mut indexes = BTreeSet::new();
    for row in rows {
        let (table, name, def): (String, String, String) = (row.get("t"), row.get("i"), row.get("d"));
        if table == BOOKKEEPING || name.ends_with("_pkey") {
            continue;
        }
        let inside = def.split_once('(').and_then(|(_, rest)| rest.split_once(')')).map_or("", |(cols, _)| cols);
        let cols = inside.split(',').map(|c| c.trim().trim_matches('"').to_owned()).collect();
        indexes.insert((table, cols, def.starts_with("CREATE UNIQUE"), def.contains(" WHERE ")));
    }
    (columns, indexes)
}

async fn sqlite_schema(pool: &sqlx::SqlitePool) -> (BTreeSet<Column>, BTreeSet<Index>) {
    let rows = sqlx::query(
        "SELECT m.name AS t, p.name AS c, p.type AS ty, p.\"notnull\" AS n, p.dflt_value AS d, p.pk AS pk
         FROM sqlite_master m JOIN pragma_table_info(m.name) p
         WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'",
    )
    .fetch_all(pool)
    .await
    .expect("columns");
    let mut columns = BTreeSet::new();
    for row in rows {
        let table: String = row.get("t");
        if table == BOOKKEEPING {
            continue;
        }
        let (ty, pk): (String, i64) = (row.get("ty"), row.get("pk"));
        let not_null = row.get::<i64, _>("n") == 1 || pk > 0;
        // An INTEGER PRIMARY KEY is the rowid: it counts up like a sequence.
        let dflt = if pk > 0 && ty.eq_ignore_ascii_case("integer") {
            Some("autoincrement".to_owned())
        } else {
            default(row.get("d"))
        };
        columns.insert((table, row.get("c"), family(&ty), not_null, dflt));
    }
    let rows = sqlx::query(
        "SELECT m.name AS t, l.name AS i, l.\"unique\" AS u, l.origin AS o, l.partial AS p
         FROM sqlite_master m JOIN pragma_index_list(m.name) l WHERE m.type = 'table'",
    )
    .fetch_all(pool)
    .await
    .expect("indexes");
    let mut indexes = BTreeSet::new();
    for row in rows {
        let (table, name, origin): (String, String, String) = (row.get("t"), row.get("i"), row.get("o"));
        if table == BOOKKEEPING || origin == "pk" {
            continue;
        }
        let cols: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_index_info(?) ORDER BY seqno")
            .bind(&name)
            .fetch_all(pool)
            .await
            .expect("index columns");
        indexes.insert((table, cols, row.get::<i64, _>("u") == 1, row.get::<i64, _>("p") == 1));
    }
    (columns, indexes)
}

fn difference<T: Ord + std::fmt::Debug + Clone>(a: &BTreeSet<T>, b: &BTreeSet<T>) -> Vec<T> {
    a.difference(b).cloned().collect()
}

/// Both dialects' migrations, applied, describe the same schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_describe_one_schema() {
    let Some(shared) = Backend::shared() else { return };
    let sqlite = spawn_app(Backend::Sqlite).await;
    let postgres = spawn_app(shared).await;
    let (RawStore::Sqlite(lite), RawStore::Postgres(pg)) = (&sqlite.raw, &postgres.raw) else {
        panic!("unexpected backends");
    };
    let (lite_columns, lite_indexes) = sqlite_schema(lite.pool()).await;
    let (pg_columns, pg_indexes) = postgres_schema(pg.pool()).await;
    assert!(lite_columns.len() > 40, "the schema was not read: {lite_columns:?}");
    assert!(lite_columns.iter().all(|c| c.2 != "other"), "a column of an unknown type: {lite_columns:?}");
    assert_eq!(
        (difference(&lite_columns, &pg_columns), difference(&pg_columns, &lite_columns)),
        (vec![], vec![]),
        "columns only in SQLite, only in PostgreSQL"
    );
    assert!(lite_indexes.iter().any(|i| i.2), "no unique index was read: {lite_indexes:?}");
    assert_eq!(
        (difference(&lite_indexes, &pg_indexes), difference(&pg_indexes, &lite_indexes)),
        (vec![], vec![]),
        "indexes only in SQLite, only in PostgreSQL"
    );
}

/// Instances started at once on a new database (two replicas of a service, or a service and
/// `cargo xtask migrate`) all come up, and each migration is applied, and reported, once: the
/// migrations are applied one run at a time, the bookkeeping table's creation included.
#[tokio::test]
async fn runs_migrating_a_new_database_at_once_all_succeed_and_apply_each_migration_once() {
    let Some(testkit::Backend::Postgres { database_url, .. }) = testkit::Backend::shared() else { return };
    let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations/postgres"))
        .expect("the migrations directory")
        .count();
    for _ in 0..5 {
        let fresh = testkit::fresh_postgres_database(&database_url).await;
        // Four runs at once, each with its own connections.
        let runs = futures::future::join_all((0..4).map(|_| auth_service::store::migrate(&fresh))).await;
        let mut applied = 0;
        for run in runs {
            applied += run.unwrap_or_else(|e| panic!("a run failed: {e}")).applied.len();
        }
        assert_eq!(applied, migrations, "every migration applied once across the runs");
    }
}
