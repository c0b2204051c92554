//! Knowledge bases in LanceDB: one database per data directory, one table per knowledge base.
//!
//! A row is a chunk of a source file. Its id is a hash of the source path and the chunk
//! text, so re-ingesting an unchanged file yields the same ids and writes nothing. Every
//! write is one LanceDB commit (a new table version): a crash mid-ingest leaves the last
//! good version.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use arrow_array::{
    Array, FixedSizeListArray, Float32Array, Int64Array, RecordBatch, RecordBatchIterator, RecordBatchReader,
    StringArray, UInt32Array,
};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use futures::TryStreamExt;
use lancedb::index::scalar::{FtsIndexBuilder, FullTextSearchQuery};
use lancedb::index::vector::IvfHnswSqIndexBuilder;
use lancedb::index::Index;
use lancedb::query::{ExecutableQuery, QueryBase, Select};
use lancedb::table::Table;
use lancedb::DistanceType;
use lore_core::{cosine, Chunk, Hit};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("knowledge base name {0:?} is not valid: use letters, digits, '-' and '_'")]
    BadName(String),
    #[error("knowledge base {name:?} stores {stored}-dimensional vectors but the embedder makes {wanted}; re-ingest it into a new knowledge base (or delete {name}.lance)")]
    DimensionMismatch { name: String, stored: usize, wanted: usize },
    #[error("LanceDB: {0}")]
    Lance(#[from] lancedb::Error),
    #[error("Arrow: {0}")]
    Arrow(#[from] ArrowError),
    #[error("unexpected table layout: {0}")]
    Layout(String),
    #[error("knowledge base {0:?} is empty: add files with `lore ingest --kb {0} FILES...`")]
    Empty(String),
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// How stale a search may be: an open knowledge base checks for other writers' commits
/// at most this long after they land.
pub const READ_CONSISTENCY: std::time::Duration = std::time::Duration::from_secs(2);

/// Chunks in a knowledge base from which vector search uses an ANN index.
pub const VECTOR_INDEX_MIN_ROWS: usize = 5_000;

/// The LanceDB database holding every knowledge base of one data directory.
#[derive(Clone)]
pub struct KbStore {
    db: lancedb::Connection,
}

impl KbStore {
    pub async fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Layout(format!("cannot create {}: {e}", dir.display())))?;
        let uri =
            dir.to_str().ok_or_else(|| StoreError::Layout(format!("data directory {} is not UTF-8", dir.display())))?;
        // A long-running daemon must see what `lore ingest` (another process) writes.
        let db = lancedb::connect(uri).read_consistency_interval(READ_CONSISTENCY).execute().await?;
        Ok(Self { db })
    }

    pub async fn names(&self) -> Result<Vec<String>> {
        Ok(self.db.table_names().execute().await?)
    }

    /// Opens a knowledge base, if it exists.
    pub async fn open_kb(&self, name: &str) -> Result<Option<KnowledgeBase>> {
        check_name(name)?;
        if !self.names().await?.iter().any(|n| n == name) {
            return Ok(None);
        }
        let table = self.db.open_table(name).execute().await?;
        let dim = vector_dim(table.schema().await?.as_ref())?;
        Ok(Some(KnowledgeBase { name: name.to_string(), table, dim }))
    }

    /// Opens a knowledge base, creating it empty if needed.
    pub async fn open_or_create(&self, name: &str, dim: usize) -> Result<KnowledgeBase> {
        if let Some(kb) = self.open_kb(name).await? {
            if kb.dim != dim {
                return Err(StoreError::DimensionMismatch { name: name.into(), stored: kb.dim, wanted: dim });
            }
            return Ok(kb);
        }
        let table = self.db.create_empty_table(name, schema(dim)).execute().await?;
        Ok(KnowledgeBase { name: name.to_string(), table, dim })
    }
}

/// A knowledge base by name, opened on first use: a bot may be configured before its
/// knowledge base is first ingested, and starts answering from it once it is.
#[derive(Clone)]
pub struct KbHandle {
    store: KbStore,
    name: String,
    opened: Arc<tokio::sync::OnceCell<KnowledgeBase>>,
}

impl KbHandle {
    pub fn new(store: KbStore, name: &str) -> Result<Self> {
        check_name(name)?;
        Ok(Self { store, name: name.to_string(), opened: Arc::default() })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The knowledge base, or `None` while nothing was ingested into it.
    pub async fn get(&self) -> Result<Option<KnowledgeBase>> {
        if let Some(kb) = self.opened.get() {
            return Ok(Some(kb.clone()));
        }
        let Some(kb) = self.store.open_kb(&self.name).await? else { return Ok(None) };
        Ok(Some(self.opened.get_or_init(|| async move { kb }).await.clone()))
    }

    /// The knowledge base, or [`StoreError::Empty`] while nothing was ingested into it.
    pub async fn require(&self) -> Result<KnowledgeBase> {
        self.get().await?.ok_or_else(|| StoreError::Empty(self.name.clone()))
    }

    /// Chunks stored (0 before the first ingest).
    pub async fn count(&self) -> Result<usize> {
        match self.get().await? {
            Some(kb) => kb.count().await,
            None => Ok(0),
        }
    }
}

/// Knowledge-base names become table names: letters, digits, '-' and '_', at most 64.
pub fn valid_kb_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn check_name(name: &str) -> Result<()> {
    if valid_kb_name(name) {
        Ok(())
    } else {
        Err(StoreError::BadName(name.into()))
    }
}

fn schema(dim: usize) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("position", DataType::UInt32, false),
        Field::new("line_start", DataType::UInt32, false),
        Field::new("line_end", DataType::UInt32, false),
        Field::new("text", DataType::Utf8, false),
        Field::new(
            "vector",
            DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float32, true)), dim as i32),
            false,
        ),
        Field::new("ingested_at", DataType::Int64, false),
    ]))
}

fn vector_dim(schema: &Schema) -> Result<usize> {
    match schema.field_with_name("vector").map(|f| f.data_type().clone()) {
        Ok(DataType::FixedSizeList(_, n)) => Ok(n as usize),
        _ => Err(StoreError::Layout("no fixed-size `vector` column".into())),
    }
}

/// What an ingest changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WriteSummary {
    pub added: usize,
    pub removed: usize,
}

/// One knowledge base (one LanceDB table).
#[derive(Clone)]
pub struct KnowledgeBase {
    name: String,
    table: Table,
    dim: usize,
}

impl KnowledgeBase {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub async fn count(&self) -> Result<usize> {
        Ok(self.table.count_rows(None).await?)
    }

    /// The table version; every write makes a new one.
    pub async fn version(&self) -> Result<u64> {
        Ok(self.table.version().await?)
    }

    /// Ids of the stored chunks, by source.
    pub async fn stored_ids(&self) -> Result<BTreeMap<String, BTreeSet<String>>> {
        let batches: Vec<RecordBatch> =
            self.table.query().select(Select::columns(&["id", "source"])).execute().await?.try_collect().await?;
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for b in &batches {
            let ids = string_col(b, "id")?;
            let sources = string_col(b, "source")?;
            for i in 0..b.num_rows() {
                out.entry(sources.value(i).to_string()).or_default().insert(ids.value(i).to_string());
            }
        }
        Ok(out)
    }

    /// Makes `sources` hold exactly `chunks` (which must all come from those sources):
    /// new chunks are added, chunks of those sources not in `chunks` are deleted. One
    /// commit. A source in `sources` with no chunks loses all of its rows.
    pub async fn replace_sources(&self, chunks: &[(Chunk, Vec<f32>)], sources: &[String]) -> Result<WriteSummary> {
        if sources.is_empty() {
            return Ok(WriteSummary::default());
        }
        let stored = self.stored_ids().await?;
        let existing: BTreeSet<&String> = sources.iter().filter_map(|s| stored.get(s)).flatten().collect();
        let incoming: BTreeSet<&String> = chunks.iter().map(|(c, _)| &c.id).collect();
        let summary = WriteSummary {
            added: incoming.difference(&existing).count(),
            removed: existing.difference(&incoming).count(),
        };
        if summary == WriteSummary::default() {
            // LanceDB would still commit a new version for an identical merge.
            return Ok(summary);
        }
        let filter = format!("source IN ({})", sources.iter().map(|s| sql_string(s)).collect::<Vec<_>>().join(", "));
        if chunks.is_empty() {
            self.table.delete(filter.as_str()).await?;
        } else {
            let batch = self.batch(chunks)?;
            let reader: Box<dyn RecordBatchReader + Send> =
                Box::new(RecordBatchIterator::new(vec![Ok(batch.clone())], batch.schema()));
            let mut merge = self.table.merge_insert(&["id"]);
            merge.when_not_matched_insert_all().when_not_matched_by_source_delete(Some(filter));
            merge.execute(reader).await?;
        }
        self.refresh_fts_index().await?;
        self.refresh_vector_index().await?;
        Ok(summary)
    }

    /// Whether vector search goes through an ANN index (see [`VECTOR_INDEX_MIN_ROWS`]).
    pub async fn has_vector_index(&self) -> Result<bool> {
        Ok(self.table.list_indices().await?.iter().any(|i| i.columns.iter().any(|c| c == "vector")))
    }

    /// Above [`VECTOR_INDEX_MIN_ROWS`] chunks, vector search goes through an ANN index
    /// (IVF-HNSW with scalar quantization, cosine), rebuilt after each write; below, an
    /// exact scan is fast enough and exact.
    async fn refresh_vector_index(&self) -> Result<()> {
        if self.count().await? < VECTOR_INDEX_MIN_ROWS {
            return Ok(());
        }
        self.table
            .create_index(
                &["vector"],
                Index::IvfHnswSq(IvfHnswSqIndexBuilder::default().distance_type(DistanceType::Cosine)),
            )
            .replace(true)
            .execute()
            .await?;
        Ok(())
    }

    async fn refresh_fts_index(&self) -> Result<()> {
        if self.count().await? == 0 {
            return Ok(());
        }
        self.table.create_index(&["text"], Index::FTS(FtsIndexBuilder::default())).replace(true).execute().await?;
        Ok(())
    }

    fn batch(&self, chunks: &[(Chunk, Vec<f32>)]) -> Result<RecordBatch> {
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        let mut flat = Vec::with_capacity(chunks.len() * self.dim);
        for (_, v) in chunks {
            if v.len() != self.dim {
                return Err(StoreError::DimensionMismatch {
                    name: self.name.clone(),
                    stored: self.dim,
                    wanted: v.len(),
                });
            }
            flat.extend_from_slice(v);
        }
        let vectors = FixedSizeListArray::try_new(
            Arc::new(Field::new("item", DataType::Float32, true)),
            self.dim as i32,
            Arc::new(Float32Array::from(flat)),
            None,
        )?;
        let col = |f: fn(&Chunk) -> &str| Arc::new(StringArray::from_iter_values(chunks.iter().map(|(c, _)| f(c))));
        let num = |f: fn(&Chunk) -> u32| Arc::new(UInt32Array::from_iter_values(chunks.iter().map(|(c, _)| f(c))));
        Ok(RecordBatch::try_new(
            schema(self.dim),
            vec![
                col(|c| &c.id),
                col(|c| &c.source),
                num(|c| c.position),
                num(|c| c.line_start),
                num(|c| c.line_end),
                col(|c| &c.text),
                Arc::new(vectors),
                Arc::new(Int64Array::from_iter_values(chunks.iter().map(|_| now))),
            ],
        )?)
    }

    /// The `k` chunks nearest to `vector` by cosine similarity (exact scan without an index).
    pub async fn search_vector(&self, vector: &[f32], k: usize) -> Result<Vec<Hit>> {
        if k == 0 {
            return Ok(vec![]);
        }
        let batches: Vec<RecordBatch> = self
            .table
            .query()
            .nearest_to(vector)?
            .distance_type(DistanceType::Cosine)
            .select(Select::columns(&[&CHUNK_COLUMNS[..], &["_distance"]].concat()))
            .limit(k)
            .execute()
            .await?
            .try_collect()
            .await?;
        // LanceDB's cosine distance is 1 - cosine similarity.
        let mut hits = hits(&batches, "_distance", |d| 1.0 - d)?;
        for h in &mut hits {
            h.similarity = Some(h.score);
        }
        Ok(hits)
    }

    /// The `k` best chunks for `query` by BM25 over the full-text index, each with its
    /// cosine similarity to `query_vector` (the question's embedding), so that abstention
    /// compares the same signal whichever retriever found a chunk.
    pub async fn search_fulltext(&self, query: &str, query_vector: &[f32], k: usize) -> Result<Vec<Hit>> {
        if k == 0 || query.trim().is_empty() || self.count().await? == 0 {
            return Ok(vec![]);
        }
        let batches: Vec<RecordBatch> = self
            .table
            .query()
            .full_text_search(FullTextSearchQuery::new(query.to_string()))
            .select(Select::columns(&[&CHUNK_COLUMNS[..], &["_score", "vector"]].concat()))
            .limit(k)
            .execute()
            .await?
            .try_collect()
            .await?;
        let mut hits = hits(&batches, "_score", |s| s)?;
        let vectors = vectors(&batches, self.dim)?;
        for h in &mut hits {
            h.similarity = vectors.get(&h.chunk.id).map(|v| cosine(query_vector, v));
        }
        Ok(hits)
    }

    /// Every chunk, in source and position order (for inspection and tests).
    pub async fn all_chunks(&self) -> Result<Vec<Chunk>> {
        let batches: Vec<RecordBatch> =
            self.table.query().select(Select::columns(&CHUNK_COLUMNS)).execute().await?.try_collect().await?;
        let mut out = Vec::new();
        for b in &batches {
            for i in 0..b.num_rows() {
                out.push(chunk_at(b, i)?);
            }
        }
        out.sort_by(|a, b| (&a.source, a.position).cmp(&(&b.source, b.position)));
        Ok(out)
    }
}

const CHUNK_COLUMNS: [&str; 6] = ["id", "source", "position", "line_start", "line_end", "text"];

fn hits(batches: &[RecordBatch], score_col: &str, to_score: impl Fn(f32) -> f32) -> Result<Vec<Hit>> {
    let mut out = Vec::new();
    for b in batches {
        let scores = b
            .column_by_name(score_col)
            .and_then(|c| c.as_any().downcast_ref::<Float32Array>())
            .ok_or_else(|| StoreError::Layout(format!("search result has no {score_col}")))?;
        for i in 0..b.num_rows() {
            out.push(Hit { chunk: chunk_at(b, i)?, score: to_score(scores.value(i)), similarity: None });
        }
    }
    out.sort_by(|a, b| b.score.total_cmp(&a.score));
    Ok(out)
}

/// The `vector` column of search results, by chunk id.
fn vectors(batches: &[RecordBatch], dim: usize) -> Result<std::collections::HashMap<String, Vec<f32>>> {
    let mut out = std::collections::HashMap::new();
    for b in batches {
        let ids = string_col(b, "id")?;
        let lists = b
            .column_by_name("vector")
            .and_then(|c| c.as_any().downcast_ref::<FixedSizeListArray>())
            .ok_or_else(|| StoreError::Layout("search result has no vector column".into()))?;
        let values = lists
            .values()
            .as_any()
            .downcast_ref::<Float32Array>()
            .ok_or_else(|| StoreError::Layout("vectors are not f32".into()))?;
        for i in 0..b.num_rows() {
            let start = lists.value_offset(i) as usize;
            out.insert(ids.value(i).to_string(), values.values()[start..start + dim].to_vec());
        }
    }
    Ok(out)
}

fn chunk_at(b: &RecordBatch, i: usize) -> Result<Chunk> {
    Ok(Chunk {
        id: string_col(b, "id")?.value(i).to_string(),
        source: string_col(b, "source")?.value(i).to_string(),
        position: u32_col(b, "position")?.value(i),
        line_start: u32_col(b, "line_start")?.value(i),
        line_end: u32_col(b, "line_end")?.value(i),
        text: string_col(b, "text")?.value(i).to_string(),
    })
}

fn string_col<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a StringArray> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .ok_or_else(|| StoreError::Layout(format!("no string column {name}")))
}

fn u32_col<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a UInt32Array> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<UInt32Array>())
        .ok_or_else(|| StoreError::Layout(format!("no u32 column {name}")))
}

/// A SQL string literal (single quotes doubled).
fn sql_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}
