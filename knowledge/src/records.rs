//! Small records kept beside the knowledge bases: a table of JSON documents by key, with
//! the few fields they are looked up by (bot, person, time) as columns of their own. The
//! daemon keeps its answers, votes and gold cases in such tables; this crate knows only
//! that they are records.
//!
//! They are LanceDB tables in the same database as the knowledge bases, named with a
//! period (which a knowledge-base name cannot have), so daemons sharing an `s3://` data
//! directory share them, and every write is one commit: a crash (`kill -9` included)
//! leaves the table as the last commit left it. Writes of one process are taken one at a
//! time (LanceDB retries a commit that raced another process's).

use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, RecordBatchIterator, RecordBatchReader, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use futures::TryStreamExt;
use lancedb::query::{ExecutableQuery, QueryBase};
use lancedb::table::{OptimizeAction, Table};

use crate::store::{sql_list, sql_string, string_col, StoreError, IDS_PER_STATEMENT};

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// One stored record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Unique in its table: writing a record with a stored key replaces that record.
    pub key: String,
    pub bot: String,
    /// Whose record it is (a salted hash; empty when nobody's), for deleting a person's.
    pub person: String,
    /// Milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// The record itself, as JSON.
    pub body: String,
}

/// Which records a read or a delete is about; every field left `None` matches all.
#[derive(Debug, Clone, Default)]
pub struct Select<'a> {
    pub bot: Option<&'a str>,
    pub person: Option<&'a str>,
    /// Records at or after this time (ms since the epoch).
    pub since_ms: Option<i64>,
    /// Records before this time.
    pub before_ms: Option<i64>,
}

impl Select<'_> {
    fn filter(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(bot) = self.bot {
            parts.push(format!("bot = {}", sql_string(bot)));
        }
        if let Some(person) = self.person {
            parts.push(format!("person = {}", sql_string(person)));
        }
        if let Some(since) = self.since_ms {
            parts.push(format!("time_ms >= {since}"));
        }
        if let Some(before) = self.before_ms {
            parts.push(format!("time_ms < {before}"));
        }
        (!parts.is_empty()).then(|| parts.join(" AND "))
    }
}

/// A records table, created on its first write.
#[derive(Clone)]
pub struct Records {
    db: lancedb::Connection,
    name: String,
    table: Arc<tokio::sync::OnceCell<Table>>,
    /// One write at a time from this process.
    writing: Arc<tokio::sync::Mutex<()>>,
}

impl Records {
    /// The table `name` (which must contain a period, so it is never taken for a
    /// knowledge base).
    pub(crate) fn new(db: lancedb::Connection, name: &str) -> Self {
        assert!(name.contains('.'), "records table {name:?} must have a period in its name");
        Self { db, name: name.to_string(), table: Arc::default(), writing: Arc::default() }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The table, or `None` while nothing was ever written to it.
    async fn table(&self) -> Result<Option<Table>> {
        if let Some(table) = self.table.get() {
            return Ok(Some(table.clone()));
        }
        match self.db.open_table(&self.name).execute().await {
            Ok(table) => Ok(Some(self.table.get_or_init(|| async { table }).await.clone())),
            Err(lancedb::Error::TableNotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn table_or_create(&self) -> Result<Table> {
        if let Some(table) = self.table().await? {
            return Ok(table);
        }
        let table = match self.db.create_empty_table(&self.name, schema()).execute().await {
            Ok(table) => table,
            // Another process made it meanwhile.
            Err(lancedb::Error::TableAlreadyExists { .. }) => self.db.open_table(&self.name).execute().await?,
            Err(e) => return Err(e.into()),
        };
        Ok(self.table.get_or_init(|| async { table }).await.clone())
    }

    /// Stores `records` in one commit, each replacing a stored record with its key.
    pub async fn put(&self, records: &[Record]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let _one_writer = self.writing.lock().await;
        let table = self.table_or_create().await?;
        let batch = batch(records)?;
        let reader: Box<dyn RecordBatchReader + Send> =
            Box::new(RecordBatchIterator::new(vec![Ok(batch.clone())], batch.schema()));
        let mut merge = table.merge_insert(&["key"]);
        merge.when_matched_update_all(None).when_not_matched_insert_all();
        merge.execute(reader).await?;
        Ok(())
    }

    /// The records with these keys (those stored), in no particular order.
    pub async fn get(&self, keys: &[String]) -> Result<Vec<Record>> {
        let Some(table) = self.table().await? else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        for group in keys.chunks(IDS_PER_STATEMENT) {
            out.extend(read(&table, Some(format!("key IN ({})", sql_list(group)))).await?);
        }
        Ok(out)
    }

    /// The records `select` matches, oldest first.
    pub async fn list(&self, select: &Select<'_>) -> Result<Vec<Record>> {
        let Some(table) = self.table().await? else { return Ok(Vec::new()) };
        let mut records = read(&table, select.filter()).await?;
        records.sort_by(|a, b| (a.time_ms, &a.key).cmp(&(b.time_ms, &b.key)));
        Ok(records)
    }

    /// Deletes the records `select` matches (every record when it matches all); returns
    /// how many went.
    pub async fn delete(&self, select: &Select<'_>) -> Result<usize> {
        let Some(table) = self.table().await? else { return Ok(0) };
        let _one_writer = self.writing.lock().await;
        let filter = select.filter().unwrap_or_else(|| "true".to_string());
        let before = table.count_rows(Some(filter.clone())).await?;
        if before > 0 {
            table.delete(&filter).await?;
        }
        Ok(before)
    }

    /// Deletes the records with these keys.
    pub async fn delete_keys(&self, keys: &[String]) -> Result<()> {
        let Some(table) = self.table().await? else { return Ok(()) };
        let _one_writer = self.writing.lock().await;
        for group in keys.chunks(IDS_PER_STATEMENT) {
            table.delete(&format!("key IN ({})", sql_list(group))).await?;
        }
        Ok(())
    }

    /// Merges the small files many single-record commits leave and drops old versions:
    /// worth doing now and then (hourly), not after every write.
    pub async fn compact(&self) -> Result<()> {
        let Some(table) = self.table().await? else { return Ok(()) };
        let _one_writer = self.writing.lock().await;
        table.optimize(OptimizeAction::All).await?;
        Ok(())
    }
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("bot", DataType::Utf8, false),
        Field::new("person", DataType::Utf8, false),
        Field::new("time_ms", DataType::Int64, false),
        Field::new("body", DataType::Utf8, false),
    ]))
}

fn batch(records: &[Record]) -> Result<RecordBatch> {
    let strings =
        |f: fn(&Record) -> &str| -> ArrayRef { Arc::new(StringArray::from_iter_values(records.iter().map(f))) };
    let columns: Vec<ArrayRef> = vec![
        strings(|r| &r.key),
        strings(|r| &r.bot),
        strings(|r| &r.person),
        Arc::new(Int64Array::from_iter_values(records.iter().map(|r| r.time_ms))),
        strings(|r| &r.body),
    ];
    Ok(RecordBatch::try_new(schema(), columns)?)
}

async fn read(table: &Table, filter: Option<String>) -> Result<Vec<Record>> {
    let mut query = table.query();
    if let Some(filter) = filter {
        query = query.only_if(filter);
    }
    let batches: Vec<RecordBatch> = query.execute().await?.try_collect().await?;
    let mut out = Vec::new();
    for b in &batches {
        let (keys, bots, people, bodies) =
            (string_col(b, "key")?, string_col(b, "bot")?, string_col(b, "person")?, string_col(b, "body")?);
        let times = b
            .column_by_name("time_ms")
            .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
            .ok_or_else(|| StoreError::Layout("time_ms is not a 64-bit integer column".into()))?;
        for i in 0..b.num_rows() {
            out.push(Record {
                key: keys.value(i).to_string(),
                bot: bots.value(i).to_string(),
                person: people.value(i).to_string(),
                time_ms: times.value(i),
                body: bodies.value(i).to_string(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KbStore;

    fn record(key: &str, bot: &str, person: &str, time_ms: i64) -> Record {
        let body = format!("{{\"k\":\"{key}\"}}");
        Record { key: key.into(), bot: bot.into(), person: person.into(), time_ms, body }
    }

    #[tokio::test]
    async fn records_are_replaced_by_key_selected_and_deleted_and_kept_out_of_the_knowledge_bases() {
        let dir = tempfile::tempdir().unwrap();
        let store = KbStore::open(dir.path()).await.unwrap();
        let votes = store.records("feedback.votes");
        assert!(votes.list(&Select::default()).await.unwrap().is_empty(), "nothing before the first write");
        votes.put(&[record("a/p1", "docs", "p1", 10), record("a/p2", "docs", "p2", 20)]).await.unwrap();
        votes.put(&[record("a/p1", "docs", "p1", 30), record("b/p1", "help", "p1", 40)]).await.unwrap();
        let all = votes.list(&Select::default()).await.unwrap();
        let keys: Vec<(&str, i64)> = all.iter().map(|r| (r.key.as_str(), r.time_ms)).collect();
        assert_eq!(keys, [("a/p2", 20), ("a/p1", 30), ("b/p1", 40)], "a second write of a key replaces it");
        let docs = votes.list(&Select { bot: Some("docs"), since_ms: Some(25), ..Select::default() }).await.unwrap();
        assert_eq!(docs, [record("a/p1", "docs", "p1", 30)]);
        assert_eq!(votes.get(&["b/p1".into(), "zz".into()]).await.unwrap(), [record("b/p1", "help", "p1", 40)]);
        // A quote in a value is data, not SQL.
        assert!(votes.list(&Select { bot: Some("x' OR '1'='1"), ..Select::default() }).await.unwrap().is_empty());
        assert_eq!(votes.delete(&Select { person: Some("p1"), ..Select::default() }).await.unwrap(), 2);
        assert_eq!(votes.list(&Select::default()).await.unwrap(), [record("a/p2", "docs", "p2", 20)]);
        votes.compact().await.unwrap();
        assert_eq!(votes.list(&Select::default()).await.unwrap().len(), 1, "compacting keeps every record");
        assert!(store.names().await.unwrap().is_empty(), "a records table is not a knowledge base");
        let reopened = KbStore::open(dir.path()).await.unwrap().records("feedback.votes");
        assert_eq!(reopened.list(&Select::default()).await.unwrap().len(), 1, "records outlive the process");
    }
}
