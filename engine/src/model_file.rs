//! Checks on a model file before llama.cpp sees it: llama.cpp aborts or returns a bare
//! null on files it cannot run, so say what is wrong in words first.

use std::path::Path;

use llama_cpp_2::gguf::GgufContext;

#[derive(Debug, thiserror::Error)]
pub enum ModelFileError {
    #[error("model file {0} does not exist")]
    Missing(String),
    #[error("{0} is not a GGUF model file (convert it with llama.cpp's convert_hf_to_gguf.py)")]
    NotGguf(String),
    #[error("{path} is a GPT-J model: llama.cpp has no GPT-J implementation, so lore cannot run it. Use a GPT-NeoX-class model instead (Pythia, GPT-NeoX-20B, RedPajama-INCITE) or a Llama-family model")]
    GptJ { path: String },
    #[error("{path} is not a LoRA adapter ({what}): `adapters` take the GGUF that llama.cpp's convert_lora_to_gguf.py writes")]
    NotAnAdapter { path: String, what: String },
    #[error("the LoRA adapter {path} was made for a `{adapter}` model, and the generator is `{model}`")]
    AdapterArchitecture { path: String, adapter: String, model: String },
}

/// The `general.architecture` of a GGUF file.
pub fn architecture(path: &Path) -> Result<String, ModelFileError> {
    Ok(open(path)?.1)
}

/// The GGUF metadata of `path` and its architecture, or what is wrong with the file.
fn open(path: &Path) -> Result<(GgufContext, String), ModelFileError> {
    let shown = path.display().to_string();
    if !path.is_file() {
        return Err(ModelFileError::Missing(shown));
    }
    let mut magic = [0u8; 4];
    let ok = std::fs::File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic)).is_ok();
    if !ok || &magic != b"GGUF" {
        return Err(ModelFileError::NotGguf(shown));
    }
    let ctx = GgufContext::from_file(path).ok_or_else(|| ModelFileError::NotGguf(shown.clone()))?;
    let arch = string_value(&ctx, "general.architecture").ok_or(ModelFileError::NotGguf(shown))?;
    Ok((ctx, arch))
}

/// A metadata value as text, if the key is there.
fn string_value(ctx: &GgufContext, key: &str) -> Option<String> {
    let idx = ctx.find_key(key);
    (idx >= 0).then(|| ctx.val_str(idx).unwrap_or("unknown").to_string())
}

/// Checks that `path` is a LoRA adapter for a model of architecture `model_arch`.
pub fn check_adapter(path: &Path, model_arch: &str) -> Result<(), ModelFileError> {
    let (ctx, adapter_arch) = open(path)?;
    let shown = path.display().to_string();
    let value = |key: &str| string_value(&ctx, key);
    let general_type = value("general.type").unwrap_or_else(|| "model".into());
    if general_type != "adapter" {
        return Err(ModelFileError::NotAnAdapter { path: shown, what: format!("its general.type is {general_type}") });
    }
    let adapter_type = value("adapter.type").unwrap_or_default();
    if adapter_type != "lora" {
        return Err(ModelFileError::NotAnAdapter { path: shown, what: format!("an adapter of type {adapter_type:?}") });
    }
    if adapter_arch != model_arch {
        return Err(ModelFileError::AdapterArchitecture {
            path: shown,
            adapter: adapter_arch,
            model: model_arch.to_string(),
        });
    }
    Ok(())
}

/// Returns the architecture if llama.cpp can run it.
pub fn check(path: &Path) -> Result<String, ModelFileError> {
    let arch = architecture(path)?;
    if arch == "gptj" {
        return Err(ModelFileError::GptJ { path: path.display().to_string() });
    }
    Ok(arch)
}

/// The languages a GGUF says its model was trained on (`general.languages`, ISO 639-1
/// codes, written by llama.cpp's converter from the model card); `None` when it does not
/// say. llama.cpp keeps no array-valued metadata once a model is loaded and `GgufContext`
/// reads no arrays, so the header is walked here; only files llama.cpp has accepted get
/// here, and every length is still checked against the file.
pub(crate) fn languages(path: &Path) -> Option<Vec<String>> {
    let file = std::fs::File::open(path).ok()?;
    let mut header = Header { r: std::io::BufReader::new(file) };
    header.languages().ok().flatten()
}

/// A GGUF file's header (v2 and v3: little-endian, 64-bit counts), read key by key.
struct Header<R> {
    r: R,
}

/// GGUF value types (gguf.h).
const GGUF_STRING: u32 = 8;
const GGUF_ARRAY: u32 = 9;
/// Longer strings are not language codes or keys: such a file is not read further.
const MAX_STRING: u64 = 1 << 20;

impl<R: std::io::Read + std::io::Seek> Header<R> {
    fn languages(&mut self) -> std::io::Result<Option<Vec<String>>> {
        let mut magic = [0u8; 4];
        self.r.read_exact(&mut magic)?;
        let version = self.u32()?;
        if &magic != b"GGUF" || version < 2 {
            return Ok(None);
        }
        let _tensors = self.u64()?;
        let kvs = self.u64()?;
        for _ in 0..kvs {
            let key = self.string()?;
            let kind = self.u32()?;
            if key == "general.languages" && kind == GGUF_ARRAY {
                if self.u32()? != GGUF_STRING {
                    return Ok(None);
                }
                let n = self.u64()?;
                let mut codes = Vec::new();
                for _ in 0..n {
                    codes.push(self.string()?);
                }
                return Ok(Some(codes));
            }
            self.skip(kind)?;
        }
        Ok(None)
    }

    fn u32(&mut self) -> std::io::Result<u32> {
        let mut b = [0u8; 4];
        self.r.read_exact(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self) -> std::io::Result<u64> {
        let mut b = [0u8; 8];
        self.r.read_exact(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn string(&mut self) -> std::io::Result<String> {
        let n = self.u64()?;
        if n > MAX_STRING {
            return Err(std::io::Error::other("string too long"));
        }
        let mut b = vec![0u8; n as usize];
        self.r.read_exact(&mut b)?;
        Ok(String::from_utf8_lossy(&b).into_owned())
    }

    /// Steps over a value of type `kind`.
    fn skip(&mut self, kind: u32) -> std::io::Result<()> {
        match kind {
            GGUF_STRING => self.skip_string(),
            GGUF_ARRAY => {
                let element = self.u32()?;
                let n = self.u64()?;
                match element {
                    GGUF_STRING => (0..n).try_for_each(|_| self.skip_string()),
                    GGUF_ARRAY => Err(std::io::Error::other("nested arrays")),
                    _ => self.skip_bytes(n.checked_mul(scalar_size(element)?).ok_or_else(too_long)?),
                }
            }
            _ => self.skip_bytes(scalar_size(kind)?),
        }
    }

    fn skip_string(&mut self) -> std::io::Result<()> {
        let n = self.u64()?;
        self.skip_bytes(n)
    }

    fn skip_bytes(&mut self, n: u64) -> std::io::Result<()> {
        let n = i64::try_from(n).map_err(|_| too_long())?;
        // Seeking past the end is allowed: the next read there fails.
        self.r.seek_relative(n)
    }
}

fn too_long() -> std::io::Error {
    std::io::Error::other("value too long")
}

/// Bytes of a scalar GGUF value.
fn scalar_size(kind: u32) -> std::io::Result<u64> {
    Ok(match kind {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        10..=12 => 8,
        _ => return Err(std::io::Error::other("unknown value type")),
    })
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    /// A GGUF v3 header with these key/value pairs (already encoded) and no tensors.
    fn gguf(kvs: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        b.extend((kvs.len() as u64).to_le_bytes());
        for (key, value) in kvs {
            b.extend(string(key));
            b.extend(value);
        }
        b
    }

    fn string(s: &str) -> Vec<u8> {
        let mut b = (s.len() as u64).to_le_bytes().to_vec();
        b.extend(s.as_bytes());
        b
    }

    fn string_value(s: &str) -> Vec<u8> {
        let mut b = GGUF_STRING.to_le_bytes().to_vec();
        b.extend(string(s));
        b
    }

    fn array(element: u32, n: u64, items: &[u8]) -> Vec<u8> {
        let mut b = GGUF_ARRAY.to_le_bytes().to_vec();
        b.extend(element.to_le_bytes());
        b.extend(n.to_le_bytes());
        b.extend(items);
        b
    }

    fn read(bytes: Vec<u8>) -> Option<Vec<String>> {
        Header { r: Cursor::new(bytes) }.languages().ok().flatten()
    }

    #[test]
    fn languages_are_found_after_values_of_every_kind() {
        let scores: Vec<u8> = [1.0f32, 2.0, 3.0].iter().flat_map(|f| f.to_le_bytes()).collect();
        let tokens: Vec<u8> = ["<s>", "▁שלום"].iter().flat_map(|t| string(t)).collect();
        let languages: Vec<u8> = ["en", "he"].iter().flat_map(|t| string(t)).collect();
        let file = gguf(&[
            ("general.architecture", string_value("bert")),
            ("bert.block_count", [4u32.to_le_bytes().as_slice(), &2u32.to_le_bytes()].concat()),
            ("general.flag", [7u32.to_le_bytes().as_slice(), &[1]].concat()),
            ("tokenizer.ggml.scores", array(6, 3, &scores)),
            ("tokenizer.ggml.tokens", array(GGUF_STRING, 2, &tokens)),
            ("general.languages", array(GGUF_STRING, 2, &languages)),
        ]);
        assert_eq!(read(file), Some(vec!["en".to_string(), "he".to_string()]));
    }

    #[test]
    fn no_languages_key_or_a_damaged_header_says_nothing() {
        assert_eq!(read(gguf(&[("general.architecture", string_value("llama"))])), None);
        assert_eq!(read(b"GGML and more".to_vec()), None);
        // A string claiming more bytes than the file has, and an array as long as can be.
        let huge = [GGUF_STRING.to_le_bytes().as_slice(), &u64::MAX.to_le_bytes()].concat();
        assert_eq!(read(gguf(&[("general.name", huge)])), None);
        let long = array(GGUF_STRING, u64::MAX, &string("x"));
        assert_eq!(read(gguf(&[("tokenizer.ggml.tokens", long)])), None);
        let wide = array(12, u64::MAX / 4, &[]);
        assert_eq!(read(gguf(&[("tokenizer.ggml.scores", wide)])), None);
        let cut = gguf(&[("general.languages", array(GGUF_STRING, 2, &string("en")))]);
        assert_eq!(read(cut), None, "one of two codes, then the end of the file");
    }
}
