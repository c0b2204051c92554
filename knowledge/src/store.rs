//! Knowledge bases in LanceDB: one database per data directory, one table per knowledge base.
//!
//! A row is a chunk of a source file. Its id is a hash of the source path and the chunk
//! text, so re-ingesting an unchanged file yields the same ids and writes nothing. Every
//! write is one LanceDB commit (a new table version, its manifest written last), so a
//! crash leaves the table as the last commit left it. Ingest writes new chunks before it
//! deletes old ones: whatever commit a crash stops at, every earlier chunk is still there,
//! and a rerun finds the new ones already stored.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, FixedSizeListArray, Float32Array, Int64Array, RecordBatch, RecordBatchIterator, RecordBatchReader,
    StringArray, UInt32Array,
};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use futures::TryStreamExt;
use lancedb::index::scalar::{FtsIndexBuilder, FullTextSearchQuery};
use lancedb::index::vector::IvfHnswSqIndexBuilder;
use lancedb::index::Index;
use lancedb::query::{ExecutableQuery, QueryBase, Select};
use lancedb::table::{NewColumnTransform, Table};
use lancedb::DistanceType;
use lore_core::{cosine, Chunk, Hit};

use crate::hebrew;
use crate::language::Language;
use crate::questions::Questions;

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
    #[error("knowledge base {name:?} was ingested as language {code:?}, which this lore does not know: ingest it again with a `language` it knows")]
    UnknownLanguage { name: String, code: String },
    #[error("cannot use the knowledge bases at {uri}: {problem}")]
    ObjectStore { uri: String, problem: String },
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// How stale a search may be: an open knowledge base checks for other writers' commits
/// at most this long after they land.
pub const READ_CONSISTENCY: std::time::Duration = std::time::Duration::from_secs(2);

/// Generated questions read per hit wanted: a chunk has several, and the best `k` chunks
/// must be among them.
const QUESTIONS_PER_HIT: usize = 8;

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

    /// Opens the database at an object-store URI (`s3://bucket/prefix`) with LanceDB storage
    /// options (endpoint, region, allow_http; credentials come from the environment), and
    /// lists it once, so a wrong endpoint, bucket or credentials stop the caller at start
    /// rather than at the first question.
    pub async fn open_object_store(uri: &str, options: &BTreeMap<String, String>) -> Result<Self> {
        if !cfg!(feature = "s3") {
            let problem = "this lore was built without object storage: build it with `--features s3`".to_string();
            return Err(StoreError::ObjectStore { uri: uri.into(), problem });
        }
        let failed = |e: &dyn std::error::Error| StoreError::ObjectStore { uri: uri.into(), problem: explain(e) };
        let db = lancedb::connect(uri)
            .storage_options(options.iter().map(|(k, v)| (k.clone(), v.clone())))
            .read_consistency_interval(READ_CONSISTENCY)
            .execute()
            .await
            .map_err(|e| failed(&e))?;
        // Connecting lists LanceDB's manifest today; listing the tables as well keeps the
        // check at start should a later LanceDB connect lazily.
        db.table_names().execute().await.map_err(|e| failed(&e))?;
        Ok(Self { db })
    }

    /// The knowledge bases (a knowledge base's generated questions are a table of their
    /// own, named with a period, which knowledge-base names cannot have).
    pub async fn names(&self) -> Result<Vec<String>> {
        let mut names = self.db.table_names().execute().await?;
        names.retain(|n| !n.contains('.'));
        Ok(names)
    }

    /// Opens a knowledge base, if it exists.
    pub async fn open_kb(&self, name: &str) -> Result<Option<KnowledgeBase>> {
        check_name(name)?;
        if !self.names().await?.iter().any(|n| n == name) {
            return Ok(None);
        }
        let table = self.db.open_table(name).execute().await?;
        let dim = vector_dim(table.schema().await?.as_ref())?;
        Ok(Some(self.knowledge_base(name, table, dim)))
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
        Ok(self.knowledge_base(name, table, dim))
    }

    /// A table of small records beside the knowledge bases (see [`crate::records::Records`]); `name`
    /// must contain a period.
    pub fn records(&self, name: &str) -> crate::records::Records {
        crate::records::Records::new(self.db.clone(), name)
    }

    fn knowledge_base(&self, name: &str, table: Table, dim: usize) -> KnowledgeBase {
        let questions = Questions::new(self.db.clone(), name, dim, table.clone());
        KnowledgeBase { name: name.to_string(), table, dim, questions }
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

    /// The stored chunk `id`, if the knowledge base exists and holds it.
    pub async fn chunk(&self, id: &str) -> Result<Option<Chunk>> {
        match self.get().await? {
            Some(kb) => kb.chunk(id).await,
            None => Ok(None),
        }
    }
}

/// What went wrong reaching an object store, in words, with the cause chain after it.
/// The object-store errors carry the S3 error code only in their text, so the common
/// causes are told apart by it.
fn explain(error: &dyn std::error::Error) -> String {
    let mut chain = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !chain.contains(&text) {
            chain = format!("{chain}: {text}");
        }
        source = e.source();
    }
    let has = |words: &[&str]| words.iter().any(|w| chain.contains(w));
    let what = if has(&["NoSuchBucket"]) {
        "the bucket does not exist (create it, or correct the name in data_dir)"
    } else if has(&[
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
        "AccessDenied",
        "Forbidden",
    ]) {
        "the credentials were refused (check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN or AWS_PROFILE)"
    } else if has(&["credential", "Credential"]) {
        "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) in the environment"
    } else if has(&["error sending request", "Connection refused", "connect", "dns error", "timed out"]) {
        "the storage endpoint cannot be reached (check storage.endpoint, the network, and that the server runs)"
    } else {
        "the object store failed"
    };
    format!("{what}. The store said: {chain}")
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
        Field::new("page", DataType::UInt32, true),
        Field::new("section", DataType::Utf8, true),
        Field::new("text", DataType::Utf8, false),
        vector_field(dim),
        Field::new("ingested_at", DataType::Int64, false),
    ]))
}

/// The `vector` column of a table: `dim` floats per row.
pub(crate) fn vector_field(dim: usize) -> Field {
    Field::new(
        "vector",
        DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float32, true)), dim as i32),
        false,
    )
}

/// Rows of `dim` floats, concatenated in `flat`, as a `vector` column.
pub(crate) fn vector_array(flat: Vec<f32>, dim: usize) -> Result<FixedSizeListArray> {
    let item = Arc::new(Field::new("item", DataType::Float32, true));
    Ok(FixedSizeListArray::try_new(item, dim as i32, Arc::new(Float32Array::from(flat)), None)?)
}

fn vector_dim(schema: &Schema) -> Result<usize> {
    match schema.field_with_name("vector").map(|f| f.data_type().clone()) {
        Ok(DataType::FixedSizeList(_, n)) => Ok(n as usize),
        _ => Err(StoreError::Layout("no fixed-size `vector` column".into())),
    }
}

/// The words a Hebrew knowledge base's chunks are searched by ([`hebrew::search_words`]),
/// added when a knowledge base becomes Hebrew; tables of other languages never have it.
pub(crate) const SEARCH_TEXT: &str = "search_text";

/// Where a knowledge base's language is kept: its table's config, beside the data, so
/// every process that searches it reads the same.
const LANGUAGE_KEY: &str = "lore.language";

/// How a table's text is searched by words: its language, and so the column indexed and
/// the words a question becomes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct FullText {
    language: Language,
}

impl FullText {
    /// The column the full-text index is on.
    pub(crate) fn column(self) -> &'static str {
        match self.language {
            Language::English => "text",
            Language::Hebrew => SEARCH_TEXT,
        }
    }

    /// The index: LanceDB's default for English (as every table had before languages),
    /// for Hebrew a plain split of the words [`hebrew::search_words`] already made (its
    /// English stemmer and stop words would only touch the Latin words among them).
    fn index(self) -> FtsIndexBuilder {
        match self.language {
            Language::English => FtsIndexBuilder::default(),
            Language::Hebrew => {
                FtsIndexBuilder::default().base_tokenizer("whitespace".into()).stem(false).remove_stop_words(false)
            }
        }
    }

    /// Whether its words are a column of their own ([`SEARCH_TEXT`]).
    pub(crate) fn has_words(self) -> bool {
        self.language != Language::English
    }

    /// What the `search_text` column holds for `text` (nothing for English).
    pub(crate) fn words(self, text: &str) -> Option<String> {
        match self.language {
            Language::English => None,
            Language::Hebrew => Some(hebrew::search_words(text)),
        }
    }

    /// A question as a full-text query: its words made as the passages' were.
    pub(crate) fn query(self, question: &str) -> Result<FullTextSearchQuery> {
        Ok(match self.language {
            Language::English => FullTextSearchQuery::new(question.to_string()),
            Language::Hebrew => {
                let query = FullTextSearchQuery::new(hebrew::search_words(question));
                query.with_column(SEARCH_TEXT.to_string()).map_err(lancedb::Error::from)?
            }
        })
    }
}

/// The language stored with `table` (none in a table made before languages were kept).
pub(crate) async fn stored_language(table: &Table, name: &str) -> Result<Option<Language>> {
    let Some(native) = table.as_native() else { return Ok(None) };
    let Some(code) = native.manifest().await?.config.get(LANGUAGE_KEY).cloned() else { return Ok(None) };
    Language::from_code(&code).map(Some).ok_or_else(|| StoreError::UnknownLanguage { name: name.into(), code })
}

/// How `table` is searched by words: by its stored language, English when none is (or
/// when a Hebrew table lacks its words column, which only a write interrupted while the
/// language was being set leaves; the next ingest sets it again).
pub(crate) async fn full_text(table: &Table, name: &str) -> Result<FullText> {
    let language = stored_language(table, name).await?.unwrap_or_default();
    if language != Language::English && table.schema().await?.field_with_name(SEARCH_TEXT).is_err() {
        return Ok(FullText { language: Language::English });
    }
    Ok(FullText { language })
}

/// The columns a chunk's place is kept in, added (empty) to tables made before them.
const PLACE_COLUMNS: [&str; 2] = ["page", "section"];

/// Where a chunk sits in its source file; it changes when text above it changes, while
/// its id (source and text) stays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkPlace {
    pub position: u32,
    pub line_start: u32,
    pub line_end: u32,
    pub page: Option<u32>,
    pub section: Option<String>,
}

impl ChunkPlace {
    pub fn of(chunk: &Chunk) -> Self {
        Self {
            position: chunk.position,
            line_start: chunk.line_start,
            line_end: chunk.line_end,
            page: chunk.page,
            section: chunk.section.clone(),
        }
    }
}

/// Ids (or sources) per SQL statement: keeps filters a reasonable size.
pub(crate) const IDS_PER_STATEMENT: usize = 500;

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
    questions: Questions,
}

impl KnowledgeBase {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The language stored with it: `None` for a knowledge base ingested before languages
    /// were kept (searched as English, as it was then).
    pub async fn language(&self) -> Result<Option<Language>> {
        stored_language(&self.table, &self.name).await
    }

    /// Makes `language` the knowledge base's: stored with it, and, when its searches change
    /// (a table that was searched as another language and holds chunks), every chunk's
    /// words made again, the full-text index rebuilt and its generated questions dropped
    /// (the next ingest writes them again). Whether anything changed.
    pub async fn set_language(&self, language: Language) -> Result<bool> {
        let stored = self.language().await?;
        let searched_as = full_text(&self.table, &self.name).await?;
        let wanted = FullText { language };
        // Rows without their words: a re-index stopped part way (the language is stored
        // first, so the rows rewritten get its words); this call finishes it.
        let unfinished = wanted.has_words()
            && searched_as == wanted
            && self.table.count_rows(Some(format!("{SEARCH_TEXT} IS NULL"))).await? > 0;
        if stored == Some(language) && searched_as == wanted && !unfinished {
            return Ok(false);
        }
        if wanted.has_words() && self.table.schema().await?.field_with_name(SEARCH_TEXT).is_err() {
            let column = Arc::new(Schema::new(vec![Field::new(SEARCH_TEXT, DataType::Utf8, true)]));
            self.table.add_columns().transform(NewColumnTransform::AllNulls(column)).execute().await?;
        }
        if let Some(native) = self.table.as_native() {
            native.update_config([(LANGUAGE_KEY.to_string(), language.code().to_string())]).await?;
        }
        if (searched_as != wanted || unfinished) && self.count().await? > 0 {
            let ids: Vec<String> = self.chunk_ids().await?.into_iter().collect();
            // A group at a time: memory stays bounded by the group, not the knowledge base.
            for group in ids.chunks(IDS_PER_STATEMENT) {
                self.upsert(&self.chunks_by_id(group).await?).await?;
            }
            if let Some(old) = index_on(&self.table, searched_as.column()).await? {
                self.table.drop_index(&old).await?;
            }
            self.refresh_indexes(true).await?;
            self.questions.drop_all().await?;
        }
        Ok(true)
    }

    /// Its generated questions (none unless `generated_questions` is set).
    pub fn questions(&self) -> &Questions {
        &self.questions
    }

    pub async fn count(&self) -> Result<usize> {
        Ok(self.table.count_rows(None).await?)
    }

    /// The stored chunk `id`, if there is one. An id is a chunk id's hex digits (anything
    /// else finds nothing, and never reaches the query).
    pub async fn chunk(&self, id: &str) -> Result<Option<Chunk>> {
        if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        Ok(self.chunks_by_id(&[id.to_string()]).await?.into_iter().next().map(|(chunk, _)| chunk))
    }

    /// The table version; every write makes a new one.
    pub async fn version(&self) -> Result<u64> {
        Ok(self.table.version().await?)
    }

    /// Where each stored chunk sits, by source and then by chunk id.
    pub async fn stored_places(&self) -> Result<BTreeMap<String, BTreeMap<String, ChunkPlace>>> {
        let mut columns = vec!["id", "source", "position", "line_start", "line_end"];
        columns.extend(self.place_columns().await?);
        let batches: Vec<RecordBatch> =
            self.table.query().select(Select::columns(&columns)).execute().await?.try_collect().await?;
        let mut out: BTreeMap<String, BTreeMap<String, ChunkPlace>> = BTreeMap::new();
        for b in &batches {
            let (ids, sources) = (string_col(b, "id")?, string_col(b, "source")?);
            let (positions, starts, ends) =
                (u32_col(b, "position")?, u32_col(b, "line_start")?, u32_col(b, "line_end")?);
            for i in 0..b.num_rows() {
                let place = ChunkPlace {
                    position: positions.value(i),
                    line_start: starts.value(i),
                    line_end: ends.value(i),
                    page: optional_u32(b, "page", i),
                    section: optional_string(b, "section", i),
                };
                out.entry(sources.value(i).to_string()).or_default().insert(ids.value(i).to_string(), place);
            }
        }
        Ok(out)
    }

    /// The place columns this table has: none in a table made before they existed (its
    /// chunks are cited by lines until an ingest adds them).
    async fn place_columns(&self) -> Result<Vec<&'static str>> {
        let schema = self.table.schema().await?;
        Ok(PLACE_COLUMNS.into_iter().filter(|c| schema.field_with_name(c).is_ok()).collect())
    }

    /// What searches read of a chunk.
    async fn chunk_columns(&self) -> Result<Vec<&'static str>> {
        let mut columns = CHUNK_COLUMNS.to_vec();
        columns.extend(self.place_columns().await?);
        Ok(columns)
    }

    /// The stored vectors of `ids` (those that exist), by id.
    pub async fn stored_vectors(&self, ids: &[String]) -> Result<HashMap<String, Vec<f32>>> {
        let mut out = HashMap::new();
        for group in ids.chunks(IDS_PER_STATEMENT) {
            let batches: Vec<RecordBatch> = self
                .table
                .query()
                .only_if(format!("id IN ({})", sql_list(group)))
                .select(Select::columns(&["id", "vector"]))
                .execute()
                .await?
                .try_collect()
                .await?;
            out.extend(vectors(&batches, self.dim)?);
        }
        Ok(out)
    }

    /// Stores `rows`, replacing stored rows with the same id (a moved chunk gets its new
    /// place). One commit; nothing is written for no rows. Keyed on the id, so writing the
    /// same rows twice (a rerun after a crash) stores them once.
    pub async fn upsert(&self, rows: &[(Chunk, Vec<f32>)]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let present = self.place_columns().await?;
        if present.len() < PLACE_COLUMNS.len() {
            let missing: Vec<Field> = schema(self.dim)
                .fields()
                .iter()
                .filter(|f| PLACE_COLUMNS.contains(&f.name().as_str()) && !present.contains(&f.name().as_str()))
                .map(|f| f.as_ref().clone())
                .collect();
            let missing = Arc::new(Schema::new(missing));
            self.table.add_columns().transform(NewColumnTransform::AllNulls(missing)).execute().await?;
        }
        let full_text = full_text(&self.table, &self.name).await?;
        let batch = self.batch(rows, self.table.schema().await?, full_text)?;
        let reader: Box<dyn RecordBatchReader + Send> =
            Box::new(RecordBatchIterator::new(vec![Ok(batch.clone())], batch.schema()));
        let mut merge = self.table.merge_insert(&["id"]);
        merge.when_matched_update_all(None).when_not_matched_insert_all();
        merge.execute(reader).await?;
        Ok(())
    }

    /// Deletes the chunks `ids` and every chunk of `sources`; returns how many rows went.
    /// A few commits for long lists: each leaves a consistent table, and a rerun deletes
    /// what is left.
    pub async fn delete(&self, ids: &[String], sources: &[String]) -> Result<usize> {
        let before = self.count().await?;
        let by_id = ids.chunks(IDS_PER_STATEMENT).map(|g| format!("id IN ({})", sql_list(g)));
        let by_source = sources.chunks(IDS_PER_STATEMENT).map(|g| format!("source IN ({})", sql_list(g)));
        for filter in by_id.chain(by_source) {
            self.table.delete(filter.as_str()).await?;
        }
        let removed = before.saturating_sub(self.count().await?);
        if removed > 0 {
            self.delete_orphan_questions().await?;
        }
        Ok(removed)
    }

    /// Deletes generated questions whose chunk is no longer stored.
    async fn delete_orphan_questions(&self) -> Result<()> {
        let stored = self.questions.stored().await?;
        if stored.is_empty() {
            return Ok(());
        }
        let chunks = self.chunk_ids().await?;
        let orphans: Vec<String> = stored.into_keys().filter(|id| !chunks.contains(id)).collect();
        self.questions.delete(&orphans).await
    }

    /// Makes `sources` hold exactly `chunks` (which must all come from those sources):
    /// new chunks are written first, then the other chunks of those sources are deleted,
    /// so a crash in between loses nothing. A source with no chunks loses all of its rows.
    pub async fn replace_sources(&self, chunks: &[(Chunk, Vec<f32>)], sources: &[String]) -> Result<WriteSummary> {
        let stored = self.stored_places().await?;
        let existing: BTreeSet<&String> = sources.iter().filter_map(|s| stored.get(s)).flat_map(|m| m.keys()).collect();
        let incoming: BTreeSet<&String> = chunks.iter().map(|(c, _)| &c.id).collect();
        let new: Vec<(Chunk, Vec<f32>)> = chunks.iter().filter(|(c, _)| !existing.contains(&c.id)).cloned().collect();
        let stale: Vec<String> = existing.difference(&incoming).map(|id| id.to_string()).collect();
        self.upsert(&new).await?;
        let removed = self.delete(&stale, &[]).await?;
        let summary = WriteSummary { added: new.len(), removed };
        self.refresh_indexes(summary != WriteSummary::default()).await?;
        Ok(summary)
    }

    /// Whether vector search goes through an ANN index (see [`VECTOR_INDEX_MIN_ROWS`]).
    pub async fn has_vector_index(&self) -> Result<bool> {
        Ok(index_on(&self.table, "vector").await?.is_some())
    }

    /// Whether the full-text index exists and covers every row. Rows it misses are still
    /// found (LanceDB scans them), but slowly; an interrupted ingest leaves such rows.
    pub async fn fulltext_index_is_current(&self) -> Result<bool> {
        fulltext_index_is_current(&self.table, full_text(&self.table, &self.name).await?).await
    }

    /// Brings the indexes up to date after a write: rebuilt when `changed`, and also when
    /// one is missing or misses rows (an earlier run was killed before it got here).
    pub async fn refresh_indexes(&self, changed: bool) -> Result<()> {
        refresh_table_indexes(&self.table, changed, full_text(&self.table, &self.name).await?).await
    }

    /// Builds the full-text index if there is none, so full-text search works while the
    /// first ingest of a knowledge base is still running (rows added later are scanned).
    pub async fn ensure_fulltext_index(&self) -> Result<()> {
        ensure_fulltext_index(&self.table, full_text(&self.table, &self.name).await?).await
    }

    fn batch(&self, chunks: &[(Chunk, Vec<f32>)], table_schema: SchemaRef, full_text: FullText) -> Result<RecordBatch> {
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
        let vectors = vector_array(flat, self.dim)?;
        let col = |f: fn(&Chunk) -> &str| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(chunks.iter().map(|(c, _)| f(c))))
        };
        let num = |f: fn(&Chunk) -> u32| -> ArrayRef {
            Arc::new(UInt32Array::from_iter_values(chunks.iter().map(|(c, _)| f(c))))
        };
        let column = |name: &str| -> Result<ArrayRef> {
            Ok(match name {
                "id" => col(|c| &c.id),
                "source" => col(|c| &c.source),
                "position" => num(|c| c.position),
                "line_start" => num(|c| c.line_start),
                "line_end" => num(|c| c.line_end),
                "page" => Arc::new(chunks.iter().map(|(c, _)| c.page).collect::<UInt32Array>()),
                "section" => Arc::new(chunks.iter().map(|(c, _)| c.section.as_deref()).collect::<StringArray>()),
                "text" => col(|c| &c.text),
                SEARCH_TEXT => Arc::new(chunks.iter().map(|(c, _)| full_text.words(&c.text)).collect::<StringArray>()),
                "vector" => Arc::new(vectors.clone()),
                "ingested_at" => Arc::new(Int64Array::from_iter_values(chunks.iter().map(|_| now))),
                other => return Err(StoreError::Layout(format!("unknown column {other}"))),
            })
        };
        // In the table's own column order: a table that gained the place columns later
        // has them last.
        let columns = table_schema.fields().iter().map(|f| column(f.name())).collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new(table_schema, columns)?)
    }

    /// The `k` chunks nearest to `vector` by cosine similarity (exact scan without an
    /// index); with generated questions, a chunk near a question counts as near too (see
    /// `with_question_hits`).
    pub async fn search_vector(&self, vector: &[f32], k: usize) -> Result<Vec<Hit>> {
        if k == 0 {
            return Ok(vec![]);
        }
        let keys = self.questions.nearest(vector, k * QUESTIONS_PER_HIT).await?;
        let candidates = if keys.is_empty() { k } else { k * 2 };
        let hits = self.nearest_chunks(vector, candidates).await?;
        self.with_question_hits(hits, keys, vector, k).await
    }

    async fn nearest_chunks(&self, vector: &[f32], k: usize) -> Result<Vec<Hit>> {
        let batches: Vec<RecordBatch> = self
            .table
            .query()
            .nearest_to(vector)?
            .distance_type(DistanceType::Cosine)
            .select(Select::columns(&[&self.chunk_columns().await?[..], &["_distance"]].concat()))
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

    /// The `k` best chunks for `query` by BM25 over the full-text index (fused with the
    /// chunks of the best generated questions when there are some), each with its
    /// cosine similarity to `query_vector` (the question's embedding), so that abstention
    /// compares the same signal whichever retriever found a chunk.
    pub async fn search_fulltext(&self, query: &str, query_vector: &[f32], k: usize) -> Result<Vec<Hit>> {
        if k == 0 || query.trim().is_empty() || self.count().await? == 0 {
            return Ok(vec![]);
        }
        let full_text = full_text(&self.table, &self.name).await?;
        let keys = self.questions.fulltext(query, full_text, k * QUESTIONS_PER_HIT).await?;
        let candidates = if keys.is_empty() { k } else { k * 2 };
        let batches: Vec<RecordBatch> = self
            .table
            .query()
            .full_text_search(full_text.query(query)?)
            .select(Select::columns(&[&self.chunk_columns().await?[..], &["_score", "vector"]].concat()))
            .limit(candidates)
            .execute()
            .await?
            .try_collect()
            .await?;
        let mut hits = hits(&batches, "_score", |s| s)?;
        let vectors = vectors(&batches, self.dim)?;
        for h in &mut hits {
            h.similarity = vectors.get(&h.chunk.id).map(|v| cosine(query_vector, v));
            h.lexical = Some(h.score);
        }
        self.with_question_hits(hits, keys, query_vector, k).await
    }

    /// `hits` joined by the chunks of the questions found (`keys`: chunk id and score, best
    /// first), the best `k`: a chunk scores its own score or its best question's,
    /// whichever is higher — each generated question is one more key to its chunk, as in
    /// multi-vector retrieval. (Rank fusion and score sums were measured too: with the
    /// default 135M generator both lowered recall more; docs/EVAL.md.) A hit's similarity
    /// stays its own chunk's, so `min_score` keeps meaning question-to-passage similarity.
    async fn with_question_hits(
        &self,
        mut hits: Vec<Hit>,
        keys: Vec<(String, f32)>,
        query_vector: &[f32],
        k: usize,
    ) -> Result<Vec<Hit>> {
        let mut best: Vec<(String, f32)> = Vec::new();
        for (id, score) in keys {
            if !best.iter().any(|(b, _)| *b == id) {
                best.push((id, score));
            }
        }
        for hit in &mut hits {
            if let Some((_, score)) = best.iter().find(|(id, _)| *id == hit.chunk.id) {
                hit.score = hit.score.max(*score);
            }
        }
        // Scores are final before any fetch: only chunks of questions that make the best
        // `k` are read.
        let mut missing: Vec<&(String, f32)> =
            best.iter().filter(|(id, _)| !hits.iter().any(|h| h.chunk.id == *id)).collect();
        let mut scores: Vec<f32> = hits.iter().map(|h| h.score).chain(missing.iter().map(|(_, s)| *s)).collect();
        scores.sort_by(|a, b| b.total_cmp(a));
        if let Some(&kth) = scores.get(k.saturating_sub(1)) {
            missing.retain(|(_, s)| *s >= kth);
        }
        let missing: Vec<String> = missing.into_iter().map(|(id, _)| id.clone()).collect();
        // A question whose chunk is gone (deleted since) finds nothing.
        for (chunk, vector) in self.chunks_by_id(&missing).await? {
            let score = best.iter().find(|(id, _)| *id == chunk.id).map_or(0.0, |(_, s)| *s);
            hits.push(Hit { similarity: Some(cosine(query_vector, &vector)), chunk, score, lexical: None });
        }
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.chunk.id.cmp(&b.chunk.id)));
        hits.truncate(k);
        Ok(hits)
    }

    /// The stored chunks `ids` (those that exist) with their vectors.
    async fn chunks_by_id(&self, ids: &[String]) -> Result<Vec<(Chunk, Vec<f32>)>> {
        let mut out = Vec::new();
        let columns = [&self.chunk_columns().await?[..], &["vector"]].concat();
        for group in ids.chunks(IDS_PER_STATEMENT) {
            let batches: Vec<RecordBatch> = self
                .table
                .query()
                .only_if(format!("id IN ({})", sql_list(group)))
                .select(Select::columns(&columns))
                .execute()
                .await?
                .try_collect()
                .await?;
            let mut vectors = vectors(&batches, self.dim)?;
            for b in &batches {
                for i in 0..b.num_rows() {
                    let chunk = chunk_at(b, i)?;
                    let vector = vectors.remove(&chunk.id).unwrap_or_default();
                    out.push((chunk, vector));
                }
            }
        }
        Ok(out)
    }

    /// Every chunk id.
    async fn chunk_ids(&self) -> Result<BTreeSet<String>> {
        let batches: Vec<RecordBatch> =
            self.table.query().select(Select::columns(&["id"])).execute().await?.try_collect().await?;
        let mut out = BTreeSet::new();
        for b in &batches {
            let ids = string_col(b, "id")?;
            out.extend((0..b.num_rows()).map(|i| ids.value(i).to_string()));
        }
        Ok(out)
    }

    /// Every chunk, in source and position order (for inspection and tests).
    pub async fn all_chunks(&self) -> Result<Vec<Chunk>> {
        let batches: Vec<RecordBatch> = self
            .table
            .query()
            .select(Select::columns(&self.chunk_columns().await?))
            .execute()
            .await?
            .try_collect()
            .await?;
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
        let scores = f32_col(b, score_col)?;
        for i in 0..b.num_rows() {
            out.push(Hit { chunk: chunk_at(b, i)?, score: to_score(scores.value(i)), similarity: None, lexical: None });
        }
    }
    out.sort_by(|a, b| b.score.total_cmp(&a.score));
    Ok(out)
}

/// The `vector` column of search results, by chunk id.
fn vectors(batches: &[RecordBatch], dim: usize) -> Result<HashMap<String, Vec<f32>>> {
    let mut out = HashMap::new();
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
        page: optional_u32(b, "page", i),
        section: optional_string(b, "section", i),
        text: string_col(b, "text")?.value(i).to_string(),
    })
}

/// Row `i` of a nullable column that older tables lack.
fn optional_u32(b: &RecordBatch, name: &str, i: usize) -> Option<u32> {
    let column = b.column_by_name(name)?.as_any().downcast_ref::<UInt32Array>()?;
    column.is_valid(i).then(|| column.value(i))
}

fn optional_string(b: &RecordBatch, name: &str, i: usize) -> Option<String> {
    let column = b.column_by_name(name)?.as_any().downcast_ref::<StringArray>()?;
    column.is_valid(i).then(|| column.value(i).to_string())
}

pub(crate) fn string_col<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a StringArray> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .ok_or_else(|| StoreError::Layout(format!("no string column {name}")))
}

pub(crate) fn f32_col<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a Float32Array> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<Float32Array>())
        .ok_or_else(|| StoreError::Layout(format!("no f32 column {name}")))
}

pub(crate) fn u32_col<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a UInt32Array> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<UInt32Array>())
        .ok_or_else(|| StoreError::Layout(format!("no u32 column {name}")))
}

/// Brings a table's indexes up to date after a write: rebuilt when `changed`, and also
/// when one is missing or misses rows (an earlier run was killed before it got here).
pub(crate) async fn refresh_table_indexes(table: &Table, changed: bool, full_text: FullText) -> Result<()> {
    if changed || !fulltext_index_is_current(table, full_text).await? {
        refresh_fts_index(table, full_text).await?;
    }
    let rows = table.count_rows(None).await?;
    if rows >= VECTOR_INDEX_MIN_ROWS && (changed || !index_is_current(table, "vector").await?) {
        refresh_vector_index(table).await?;
    }
    Ok(())
}

/// Builds a table's full-text index if it has none (LanceDB refuses a full-text search
/// without one; rows added after it are scanned).
pub(crate) async fn ensure_fulltext_index(table: &Table, full_text: FullText) -> Result<()> {
    if index_on(table, full_text.column()).await?.is_none() {
        refresh_fts_index(table, full_text).await?;
    }
    Ok(())
}

async fn fulltext_index_is_current(table: &Table, full_text: FullText) -> Result<bool> {
    if index_on(table, full_text.column()).await?.is_none() {
        return Ok(table.count_rows(None).await? == 0);
    }
    index_is_current(table, full_text.column()).await
}

async fn index_is_current(table: &Table, column: &str) -> Result<bool> {
    let Some(name) = index_on(table, column).await? else { return Ok(false) };
    Ok(table.index_stats(&name).await?.is_some_and(|s| s.num_unindexed_rows == 0))
}

/// The name of the index on `column`, if there is one.
pub(crate) async fn index_on(table: &Table, column: &str) -> Result<Option<String>> {
    let indices = table.list_indices().await?;
    Ok(indices.into_iter().find(|i| i.columns.iter().any(|c| c == column)).map(|i| i.name))
}

/// Above [`VECTOR_INDEX_MIN_ROWS`] rows, vector search goes through an ANN index
/// (IVF-HNSW with scalar quantization, cosine); below, an exact scan is fast enough and
/// exact.
async fn refresh_vector_index(table: &Table) -> Result<()> {
    table
        .create_index(
            &["vector"],
            Index::IvfHnswSq(IvfHnswSqIndexBuilder::default().distance_type(DistanceType::Cosine)),
        )
        .replace(true)
        .execute()
        .await?;
    Ok(())
}

async fn refresh_fts_index(table: &Table, full_text: FullText) -> Result<()> {
    if table.count_rows(None).await? == 0 {
        return Ok(());
    }
    table.create_index(&[full_text.column()], Index::FTS(full_text.index())).replace(true).execute().await?;
    Ok(())
}

/// A SQL string literal (single quotes doubled).
pub(crate) fn sql_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Comma-separated SQL string literals, for `IN (...)`.
pub(crate) fn sql_list(items: &[String]) -> String {
    items.iter().map(|s| sql_string(s)).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use lore_core::testing::HashEmbedder;

    use super::*;
    use crate::questions::ChunkQuestions;

    fn rows(embedder: &HashEmbedder, source: &str, texts: &[&str]) -> Vec<(Chunk, Vec<f32>)> {
        let chunk = |(i, t): (usize, &&str)| Chunk::new(source, i as u32, i as u32 + 1, i as u32 + 1, t.to_string());
        texts.iter().enumerate().map(chunk).map(|c| (c.clone(), embedder.vector(&c.text))).collect()
    }

    async fn kb(dir: &Path, embedder: &HashEmbedder) -> KnowledgeBase {
        KbStore::open(dir).await.unwrap().open_or_create("kb", embedder.dim).await.unwrap()
    }

    #[tokio::test]
    async fn rows_written_after_the_index_are_found_and_refreshing_covers_them() {
        let dir = tempfile::tempdir().unwrap();
        let embedder = HashEmbedder::default();
        let kb = kb(dir.path(), &embedder).await;
        assert!(kb.fulltext_index_is_current().await.unwrap(), "an empty table needs no index");
        kb.upsert(&rows(&embedder, "a.md", &["otters float on their backs"])).await.unwrap();
        kb.ensure_fulltext_index().await.unwrap();
        assert!(kb.fulltext_index_is_current().await.unwrap());

        // As an ingest killed between two batches leaves it.
        kb.upsert(&rows(&embedder, "b.md", &["herons stand still in shallow water"])).await.unwrap();
        kb.ensure_fulltext_index().await.unwrap();
        assert!(!kb.fulltext_index_is_current().await.unwrap(), "the second batch is not indexed yet");
        let q = embedder.vector("herons");
        assert_eq!(kb.search_fulltext("herons", &q, 3).await.unwrap().len(), 1, "unindexed rows are scanned");

        kb.refresh_indexes(false).await.unwrap();
        assert!(kb.fulltext_index_is_current().await.unwrap(), "a stale index is rebuilt");
    }

    #[tokio::test]
    async fn a_hebrew_knowledge_base_finds_a_word_the_question_writes_with_a_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let embedder = HashEmbedder::default();
        let kb = kb(dir.path(), &embedder).await;
        let hebrew = "המודל עונה על שאלות בעברית ובאנגלית";
        kb.upsert(&rows(&embedder, "a.md", &[hebrew, "herons stand still in shallow water"])).await.unwrap();
        kb.refresh_indexes(true).await.unwrap();
        let search = |q: &'static str| {
            let kb = kb.clone();
            let v = embedder.vector(q);
            async move { kb.search_fulltext(q, &v, 2).await.unwrap().into_iter().map(|h| h.chunk.text).collect::<Vec<_>>() }
        };
        // A table from before languages: English words, the index on `text`, as it was.
        assert_eq!(kb.language().await.unwrap(), None);
        assert!(index_on(&kb.table, "text").await.unwrap().is_some());
        assert!(search("עברית").await.is_empty(), "LanceDB's words: \"בעברית\" is not \"עברית\"");

        assert!(kb.set_language(Language::Hebrew).await.unwrap());
        assert!(!kb.set_language(Language::Hebrew).await.unwrap(), "set once");
        assert_eq!(index_on(&kb.table, "text").await.unwrap(), None, "the English index is dropped");
        assert!(kb.fulltext_index_is_current().await.unwrap());
        assert_eq!(search("עברית").await, [hebrew]);
        assert_eq!(search("וכשהמודל עונה").await.first().map(String::as_str), Some(hebrew), "prefixes either side");
        assert_eq!(search("herons").await, ["herons stand still in shallow water"], "Latin words still");

        // A re-index stopped part way leaves rows without their words: the next call
        // (the next ingest's) finishes it.
        kb.table.update().column(SEARCH_TEXT, "NULL").execute().await.unwrap();
        kb.refresh_indexes(true).await.unwrap();
        assert!(search("עברית").await.is_empty(), "words lost");
        assert!(kb.set_language(Language::Hebrew).await.unwrap(), "finished");
        assert_eq!(search("עברית").await, [hebrew]);
        assert!(!kb.set_language(Language::Hebrew).await.unwrap(), "then nothing to do");

        // Kept through later writes, and read by another process opening it.
        kb.upsert(&rows(&embedder, "b.md", &["הכלב נובח"])).await.unwrap();
        kb.refresh_indexes(true).await.unwrap();
        let reopened = KbStore::open(dir.path()).await.unwrap().open_kb("kb").await.unwrap().unwrap();
        assert_eq!(reopened.language().await.unwrap(), Some(Language::Hebrew));
        assert_eq!(search("לכלבים").await, Vec::<String>::new(), "no suffixes: כלבים is not כלב");
        assert_eq!(search("וכשהכלב").await, ["הכלב נובח"]);

        // Generated questions are searched the same way.
        let chunk = kb.all_chunks().await.unwrap().into_iter().find(|c| c.text == hebrew).unwrap();
        let asked = "באילו שפות מדברים?";
        let keys = ChunkQuestions { chunk_id: chunk.id, questions: vec![(asked.into(), embedder.vector(asked))] };
        kb.questions().replace(1, &[keys]).await.unwrap();
        assert_eq!(search("שפות").await, [hebrew]);

        // And back: English words again, on `text`.
        assert!(kb.set_language(Language::English).await.unwrap());
        assert!(search("עברית").await.is_empty());
        assert_eq!(search("herons").await, ["herons stand still in shallow water"]);
        assert!(kb.questions().all().await.unwrap().is_empty(), "questions made for Hebrew are dropped");
    }

    #[tokio::test]
    async fn upserting_twice_stores_once_and_updates_places() {
        let dir = tempfile::tempdir().unwrap();
        let embedder = HashEmbedder::default();
        let kb = kb(dir.path(), &embedder).await;
        let first = rows(&embedder, "a.md", &["one", "two"]);
        kb.upsert(&first).await.unwrap();
        kb.upsert(&first).await.unwrap();
        assert_eq!(kb.count().await.unwrap(), 2);

        let mut moved = first[1].clone();
        moved.0.line_start = 7;
        moved.0.line_end = 9;
        kb.upsert(std::slice::from_ref(&moved)).await.unwrap();
        let places = kb.stored_places().await.unwrap();
        assert_eq!(
            places["a.md"][&moved.0.id],
            ChunkPlace { position: 1, line_start: 7, line_end: 9, page: None, section: None }
        );
        let vectors = kb.stored_vectors(&[moved.0.id.clone(), "nope".into()]).await.unwrap();
        assert_eq!(vectors.len(), 1);
        assert_eq!(vectors[&moved.0.id], moved.1);

        let one = &first[0].0;
        assert_eq!(kb.chunk(&one.id).await.unwrap().map(|c| c.text), Some("one".to_string()), "a chunk by its id");
        assert_eq!(kb.chunk("00ff").await.unwrap(), None);
        assert_eq!(kb.chunk("' OR 1=1 --").await.unwrap(), None, "not an id: never queried");

        kb.upsert(&rows(&embedder, "it's.md", &["three"])).await.unwrap();
        let removed = kb.delete(&[first[0].0.id.clone()], &["it's.md".to_string()]).await.unwrap();
        assert_eq!(removed, 2);
        assert_eq!(kb.all_chunks().await.unwrap().iter().map(|c| c.text.as_str()).collect::<Vec<_>>(), ["two"]);
    }

    #[tokio::test]
    async fn generated_questions_find_their_chunk_and_go_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let embedder = HashEmbedder::default();
        let kb = kb(dir.path(), &embedder).await;
        let otters = rows(&embedder, "a.md", &["otters float on their backs"]);
        let herons = rows(&embedder, "b.md", &["herons stand still in shallow water"]);
        kb.upsert(&[otters.clone(), herons.clone()].concat()).await.unwrap();
        kb.refresh_indexes(true).await.unwrap();
        let asked = "which bird waits motionless";
        let q = embedder.vector(asked);
        let found = |hits: Vec<Hit>| hits.first().map(|h| h.chunk.text.clone());
        assert_eq!(kb.search_fulltext(asked, &q, 1).await.unwrap().len(), 0, "no word in common");

        let heron_id = herons[0].0.id.clone();
        let question = "Which bird waits motionless in a pond?";
        let keys = ChunkQuestions {
            chunk_id: heron_id.clone(),
            questions: vec![(question.into(), embedder.vector(question))],
        };
        kb.questions().replace(3, &[keys]).await.unwrap();
        let by_words = kb.search_fulltext(asked, &q, 2).await.unwrap();
        assert_eq!(found(by_words).as_deref(), Some("herons stand still in shallow water"), "searchable at once");
        kb.questions().refresh_indexes(true).await.unwrap();
        let by_vector = kb.search_vector(&q, 2).await.unwrap();
        assert_eq!(found(by_vector.clone()).as_deref(), Some("herons stand still in shallow water"));
        assert!(by_vector[0].similarity.unwrap() < 0.2, "the similarity stays the chunk's own");
        let by_words = kb.search_fulltext(asked, &q, 2).await.unwrap();
        assert_eq!(found(by_words).as_deref(), Some("herons stand still in shallow water"));
        let stored = kb.questions().stored().await.unwrap();
        assert_eq!(stored[&heron_id], crate::questions::Stored { wanted: 3, kept: 1 });

        kb.delete(&[], &["b.md".to_string()]).await.unwrap();
        assert!(kb.questions().all().await.unwrap().is_empty(), "a deleted chunk's questions go with it");
        assert!(kb.search_vector(&q, 2).await.unwrap().iter().all(|h| h.chunk.source == "a.md"));
        assert!(kb.questions().drop_all().await.unwrap());
        assert!(!kb.questions().drop_all().await.unwrap());
        assert_eq!(KbStore::open(dir.path()).await.unwrap().names().await.unwrap(), ["kb"]);
    }
}
