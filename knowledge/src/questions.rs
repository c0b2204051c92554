//! Generated questions (question generation, "doc2query"): questions a chunk
//! answers, written by the generator at ingest, kept as extra search keys that point to
//! their chunk. A user's question often matches a question about a passage better than
//! the passage itself (same form, same words).
//!
//! They live in a second table per knowledge base, `KB.questions` — a period cannot be in
//! a knowledge-base name, so it never collides with one: a row per question with its
//! chunk's id, how many questions were asked of that chunk (`wanted`, so a changed
//! setting is noticed), the question and its embedding, and a full-text index of its own.
//! A chunk the model wrote no usable question for gets one row with an empty text (never
//! searched), so it is not asked again at every ingest.
//! The knowledge base's searches read it too and return chunks (`store.rs`). It is derived
//! data: losing rows (a crash between a delete and a write) costs only their regeneration.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow_array::{ArrayRef, RecordBatch, StringArray, UInt32Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use futures::TryStreamExt;
use lancedb::query::{ExecutableQuery, QueryBase, Select};
use lancedb::table::Table;
use lancedb::DistanceType;

use crate::store::{
    ensure_fulltext_index, f32_col, full_text, index_on, refresh_table_indexes, sql_list, string_col, u32_col,
    vector_array, vector_field, FullText, StoreError, IDS_PER_STATEMENT, READ_CONSISTENCY, SEARCH_TEXT,
};

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// One chunk's generated questions, each with its embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkQuestions {
    pub chunk_id: String,
    pub questions: Vec<(String, Vec<f32>)>,
}

/// What is stored for one chunk: how many questions were asked for, how many are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub wanted: u32,
    pub kept: usize,
}

/// The questions table of one knowledge base, opened when it exists. A daemon that was
/// started before the first questions were written finds the table within
/// [`READ_CONSISTENCY`] of its creation.
#[derive(Clone)]
pub struct Questions {
    db: lancedb::Connection,
    name: String,
    dim: usize,
    /// The knowledge base's own table and name: its language is the questions' too.
    kb_table: Table,
    kb: String,
    table: Arc<Mutex<Lookup>>,
}

#[derive(Clone)]
enum Lookup {
    Unknown,
    Open(Table),
    /// Not there when last looked for.
    Absent(Instant),
}

impl Questions {
    pub(crate) fn new(db: lancedb::Connection, kb: &str, dim: usize, kb_table: Table) -> Self {
        let table = Arc::new(Mutex::new(Lookup::Unknown));
        Self { db, name: format!("{kb}.questions"), dim, kb_table, kb: kb.to_string(), table }
    }

    /// How the questions are searched by words: as their knowledge base's language, when
    /// their table was made for it (a knowledge base whose language changed drops its
    /// questions, and the next ingest makes them anew).
    async fn full_text(&self, table: &Table) -> Result<FullText> {
        let wanted = full_text(&self.kb_table, &self.kb).await?;
        let has_words = table.schema().await?.field_with_name(SEARCH_TEXT).is_ok();
        Ok(if !wanted.has_words() || has_words { wanted } else { FullText::default() })
    }

    fn lookup(&self) -> Lookup {
        self.table.lock().expect("questions lookup").clone()
    }

    fn remember(&self, lookup: Lookup) {
        *self.table.lock().expect("questions lookup") = lookup;
    }

    /// The table, or `None` when this knowledge base has no generated questions.
    async fn table(&self) -> Result<Option<Table>> {
        match self.lookup() {
            Lookup::Open(table) => return Ok(Some(table)),
            Lookup::Absent(at) if at.elapsed() < READ_CONSISTENCY => return Ok(None),
            _ => {}
        }
        match self.db.open_table(&self.name).execute().await {
            Ok(table) => {
                self.remember(Lookup::Open(table.clone()));
                Ok(Some(table))
            }
            Err(lancedb::Error::TableNotFound { .. }) => {
                self.remember(Lookup::Absent(Instant::now()));
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn table_or_create(&self) -> Result<Table> {
        if let Some(table) = self.table().await? {
            return Ok(table);
        }
        let full_text = full_text(&self.kb_table, &self.kb).await?;
        let table = match self.db.create_empty_table(&self.name, schema(self.dim, full_text)).execute().await {
            Ok(table) => table,
            // Another process made it meanwhile.
            Err(lancedb::Error::TableAlreadyExists { .. }) => self.db.open_table(&self.name).execute().await?,
            Err(e) => return Err(e.into()),
        };
        self.remember(Lookup::Open(table.clone()));
        Ok(table)
    }

    /// What is stored, by chunk id (chunks without questions are absent).
    pub async fn stored(&self) -> Result<HashMap<String, Stored>> {
        let Some(table) = self.table().await? else { return Ok(HashMap::new()) };
        let batches: Vec<RecordBatch> = table
            .query()
            .select(Select::columns(&["chunk_id", "wanted", "text"]))
            .execute()
            .await?
            .try_collect()
            .await?;
        let mut out: HashMap<String, Stored> = HashMap::new();
        for b in &batches {
            let (ids, wanted, texts) = (string_col(b, "chunk_id")?, u32_col(b, "wanted")?, string_col(b, "text")?);
            for i in 0..b.num_rows() {
                let entry = out.entry(ids.value(i).to_string()).or_insert(Stored { wanted: wanted.value(i), kept: 0 });
                entry.kept += usize::from(!texts.value(i).is_empty());
            }
        }
        Ok(out)
    }

    /// Every stored question with its chunk id, sorted (for inspection and tests).
    pub async fn all(&self) -> Result<Vec<(String, String)>> {
        let Some(table) = self.table().await? else { return Ok(vec![]) };
        let batches: Vec<RecordBatch> =
            table.query().select(Select::columns(&["chunk_id", "text"])).execute().await?.try_collect().await?;
        let mut out = Vec::new();
        for b in &batches {
            let (ids, texts) = (string_col(b, "chunk_id")?, string_col(b, "text")?);
            let rows = (0..b.num_rows()).filter(|&i| !texts.value(i).is_empty());
            out.extend(rows.map(|i| (ids.value(i).to_string(), texts.value(i).to_string())));
        }
        out.sort();
        Ok(out)
    }

    /// Makes each of `chunks` hold exactly its given questions, asked for `wanted` at a time:
    /// its earlier questions are deleted, then the new ones written (two commits).
    pub async fn replace(&self, wanted: u32, chunks: &[ChunkQuestions]) -> Result<()> {
        if chunks.is_empty() {
            return Ok(());
        }
        let table = self.table_or_create().await?;
        let ids: Vec<String> = chunks.iter().map(|c| c.chunk_id.clone()).collect();
        delete_chunks(&table, &ids).await?;
        let full_text = self.full_text(&table).await?;
        let batch = self.batch(wanted, chunks, table.schema().await?, full_text)?;
        if batch.num_rows() == 0 {
            return Ok(());
        }
        table.add(batch).execute().await?;
        // Searches run while the rest is generated (hours, on a large knowledge base).
        ensure_fulltext_index(&table, full_text).await
    }

    /// Deletes the questions of `chunk_ids`.
    pub async fn delete(&self, chunk_ids: &[String]) -> Result<()> {
        if let Some(table) = self.table().await? {
            delete_chunks(&table, chunk_ids).await?;
        }
        Ok(())
    }

    /// Drops every generated question (the setting went back to 0). Whether there were any.
    pub async fn drop_all(&self) -> Result<bool> {
        if self.table().await?.is_none() {
            return Ok(false);
        }
        self.db.drop_table(&self.name, &[]).await?;
        self.remember(Lookup::Absent(Instant::now()));
        Ok(true)
    }

    /// Brings the full-text (and, when large, the vector) index up to date.
    pub async fn refresh_indexes(&self, changed: bool) -> Result<()> {
        match self.table().await? {
            Some(table) => {
                let full_text = self.full_text(&table).await?;
                refresh_table_indexes(&table, changed, full_text).await
            }
            None => Ok(()),
        }
    }

    /// The `k` questions nearest to `vector`, as (chunk id, cosine similarity), best first.
    pub(crate) async fn nearest(&self, vector: &[f32], k: usize) -> Result<Vec<(String, f32)>> {
        let search = |table: Table| async move {
            let batches: Vec<RecordBatch> = table
                .query()
                .nearest_to(vector)?
                .distance_type(DistanceType::Cosine)
                .only_if(ASKED_ROWS_LEFT_OUT)
                .select(Select::columns(&["chunk_id", "_distance"]))
                .limit(k)
                .execute()
                .await?
                .try_collect()
                .await?;
            // LanceDB's cosine distance is 1 - cosine similarity.
            keys(&batches, "_distance", |d| 1.0 - d)
        };
        self.search(search).await
    }

    /// The `k` best questions for `query` by BM25, as (chunk id, score), best first; their
    /// knowledge base is searched as `kb_words`, and they are too when made for it.
    pub(crate) async fn fulltext(&self, query: &str, kb_words: FullText, k: usize) -> Result<Vec<(String, f32)>> {
        let search = |table: Table| async move {
            let full_text = if !kb_words.has_words() { kb_words } else { self.full_text(&table).await? };
            // No index yet (a run stopped before building it): LanceDB refuses to search.
            if index_on(&table, full_text.column()).await?.is_none() {
                return Ok(vec![]);
            }
            let batches: Vec<RecordBatch> = table
                .query()
                .full_text_search(full_text.query(query)?)
                .select(Select::columns(&["chunk_id", "_score"]))
                .limit(k)
                .execute()
                .await?
                .try_collect()
                .await?;
            keys(&batches, "_score", |s| s)
        };
        self.search(search).await
    }

    /// Runs `search` on the table, if there is one. The table may have been dropped since
    /// it was opened (`generated_questions` set to 0 by another process): then it is
    /// looked up again, and without it there are no question keys.
    async fn search<F, Fut>(&self, search: F) -> Result<Vec<(String, f32)>>
    where
        F: Fn(Table) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<(String, f32)>>>,
    {
        let Some(table) = self.table().await? else { return Ok(vec![]) };
        match search(table).await {
            Ok(keys) => Ok(keys),
            Err(first) => {
                self.remember(Lookup::Unknown);
                match self.table().await? {
                    Some(table) => search(table).await.map_err(|_| first),
                    None => Ok(vec![]),
                }
            }
        }
    }

    fn batch(
        &self,
        wanted: u32,
        chunks: &[ChunkQuestions],
        table_schema: SchemaRef,
        full_text: FullText,
    ) -> Result<RecordBatch> {
        let (asked, unit) = (String::new(), unit_vector(self.dim));
        let rows: Vec<(&str, usize, &String, &Vec<f32>)> = chunks
            .iter()
            .flat_map(|c| {
                let marker = c.questions.is_empty().then_some((c.chunk_id.as_str(), 0, &asked, &unit));
                let questions = c.questions.iter().enumerate().map(move |(i, (q, v))| (c.chunk_id.as_str(), i, q, v));
                marker.into_iter().chain(questions)
            })
            .collect();
        let mut flat = Vec::with_capacity(rows.len() * self.dim);
        for (_, _, _, v) in &rows {
            if v.len() != self.dim {
                return Err(StoreError::Layout(format!(
                    "a question's vector has {} dimensions, the knowledge base {}",
                    v.len(),
                    self.dim
                )));
            }
            flat.extend_from_slice(v);
        }
        let vectors = vector_array(flat, self.dim)?;
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|(id, i, _, _)| format!("{id}:{i}")))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|(id, _, _, _)| *id))),
            Arc::new(UInt32Array::from_iter_values(rows.iter().map(|_| wanted))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|(_, _, q, _)| q.as_str()))),
            Arc::new(vectors),
        ];
        if table_schema.field_with_name(SEARCH_TEXT).is_ok() {
            columns.push(Arc::new(rows.iter().map(|(_, _, q, _)| full_text.words(q)).collect::<StringArray>()));
        }
        Ok(RecordBatch::try_new(table_schema, columns)?)
    }
}

/// Leaves out the rows that only say a chunk was asked.
const ASKED_ROWS_LEFT_OUT: &str = "text != ''";

/// The vector of a row that only says a chunk was asked: never searched (see
/// [`ASKED_ROWS_LEFT_OUT`]), but a vector index may be trained on it, so not zero.
fn unit_vector(dim: usize) -> Vec<f32> {
    let mut v = vec![0.0; dim];
    if let Some(first) = v.first_mut() {
        *first = 1.0;
    }
    v
}

/// A questions table's columns; a Hebrew knowledge base's also has the words its
/// questions are searched by, last.
fn schema(dim: usize, full_text: FullText) -> SchemaRef {
    let mut fields = vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("chunk_id", DataType::Utf8, false),
        Field::new("wanted", DataType::UInt32, false),
        Field::new("text", DataType::Utf8, false),
        vector_field(dim),
    ];
    if full_text.has_words() {
        fields.push(Field::new(SEARCH_TEXT, DataType::Utf8, true));
    }
    Arc::new(Schema::new(fields))
}

async fn delete_chunks(table: &Table, chunk_ids: &[String]) -> Result<()> {
    for group in chunk_ids.chunks(IDS_PER_STATEMENT) {
        table.delete(&format!("chunk_id IN ({})", sql_list(group))).await?;
    }
    Ok(())
}

/// (chunk id, score) of search results, best first.
fn keys(batches: &[RecordBatch], score_col: &str, to_score: impl Fn(f32) -> f32) -> Result<Vec<(String, f32)>> {
    let mut out = Vec::new();
    for b in batches {
        let (ids, scores) = (string_col(b, "chunk_id")?, f32_col(b, score_col)?);
        out.extend((0..b.num_rows()).map(|i| (ids.value(i).to_string(), to_score(scores.value(i)))));
    }
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    Ok(out)
}
