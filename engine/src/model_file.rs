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
