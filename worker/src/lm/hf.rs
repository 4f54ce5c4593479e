//! Hugging Face model folders: `config.json`, `model.safetensors` or shards with
//! `model.safetensors.index.json`, and `tokenizer.json`. Reads f32, bf16 and f16 weights (kept as
//! f32 for training); writes f32.
//!
//! HF stores linear weights `[out, in]`; the model holds them `[in, out]`, so they are transposed
//! here and nowhere else.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use super::model::{hf_group, hf_shapes, CausalLm, ConfigError, ModelConfig, NamedWeights};

/// Why a model folder could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum HfError {
    /// A file that could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A bad `config.json`.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// A safetensors file that does not parse, or holds a dtype we do not read.
    #[error("{path}: {message}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// Weights that do not fit the config.
    #[error("{folder}: {message}")]
    Weights {
        /// The model folder.
        folder: PathBuf,
        /// What does not fit.
        message: String,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, HfError> {
    std::fs::read(path).map_err(|source| HfError::Io { path: path.to_owned(), source })
}

/// Whether HF stores this tensor transposed relative to burn (`[out, in]` linear weights).
fn is_linear_weight(name: &str) -> bool {
    name.ends_with("_proj.weight") || name == "lm_head.weight"
}

/// A tensor as f32 values, whatever its stored dtype.
pub(crate) fn to_f32(view: &TensorView<'_>) -> Result<Vec<f32>, String> {
    let bytes = view.data();
    Ok(match view.dtype() {
        Dtype::F32 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::BF16 => bytes.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::F16 => bytes.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::F64 => bytes.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32).collect(),
        other => return Err(format!("dtype {other:?} is not supported (f32, bf16, f16, f64)")),
    })
}

/// Transposes a row-major `[rows, cols]` matrix.
pub(crate) fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}

/// Tensors by name: f32 values and shape.
pub(crate) type Tensors = BTreeMap<String, (Vec<f32>, Vec<usize>)>;

/// Every tensor of one safetensors file, as f32 with its HF shape.
pub(crate) fn read_safetensors(path: &Path) -> Result<Tensors, HfError> {
    let bytes = read(path)?;
    let bad = |message: String| HfError::Safetensors { path: path.to_owned(), message };
    let file = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let mut out = BTreeMap::new();
    for (name, view) in file.tensors() {
        let data = to_f32(&view).map_err(|m| bad(format!("`{name}`: {m}")))?;
        out.insert(name, (data, view.shape().to_vec()));
    }
    Ok(out)
}

/// Writes f32 tensors (HF shapes) to a safetensors file, with `metadata` in its header.
pub(crate) fn write_safetensors(path: &Path, tensors: &Tensors, metadata: Option<std::collections::HashMap<String, String>>) -> Result<(), HfError> {
    let bytes: BTreeMap<&String, (Vec<u8>, &Vec<usize>)> = tensors.iter().map(|(k, (data, shape))| (k, (data.iter().flat_map(|v| v.to_le_bytes()).collect(), shape))).collect();
    let views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .map(|(k, (data, shape))| ((*k).clone(), TensorView::new(Dtype::F32, (*shape).clone(), data).expect("sizes computed from the shape should match")))
        .collect();
    safetensors::serialize_to_file(views, metadata, path).map_err(|e| HfError::Safetensors { path: path.to_owned(), message: e.to_string() })
}

/// The weight files of a folder: `model.safetensors`, or the shards its index names.
fn weight_files(folder: &Path) -> Result<Vec<PathBuf>, HfError> {
    let single = folder.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    let index_path = folder.join("model.safetensors.index.json");
    if !index_path.exists() {
        return Err(HfError::Weights { folder: folder.to_owned(), message: "no model.safetensors or model.safetensors.index.json".into() });
    }
    let index: serde_json::Value = serde_json::from_slice(&read(&index_path)?)
        .map_err(|e| HfError::Safetensors { path: index_path.clone(), message: e.to_string() })?;
    let map = index.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| HfError::Safetensors { path: index_path.clone(), message: "no `weight_map` object".into() })?;
    let mut files: Vec<String> = map.values().filter_map(|v| v.as_str().map(str::to_owned)).collect();
    files.sort();
    files.dedup();
    Ok(files.into_iter().map(|f| folder.join(f)).collect())
}

/// Reads `config.json` of a model folder.
pub fn read_config(folder: &Path) -> Result<ModelConfig, HfError> {
    let path = folder.join("config.json");
    let text = String::from_utf8_lossy(&read(&path)?).into_owned();
    Ok(ModelConfig::from_hf_json(&text)?)
}

/// Loads a base model from a Hugging Face folder; every tensor must be used and present.
pub fn load_model<B: Backend>(folder: &Path, device: &B::Device) -> Result<(ModelConfig, CausalLm<B>), HfError> {
    let config = read_config(folder)?;
    let mut weights = NamedWeights::new();
    for file in weight_files(folder)? {
        for (name, (data, shape)) in read_safetensors(&file)? {
            let (data, shape) = if is_linear_weight(&name) && shape.len() == 2 { (transpose(&data, shape[0], shape[1]), vec![shape[1], shape[0]]) } else { (data, shape) };
            weights.insert(name, (data, shape));
        }
    }
    let model = CausalLm::from_weights(&config, &mut weights, device).map_err(|message| HfError::Weights { folder: folder.to_owned(), message })?;
    // Rotary inverse frequencies are recomputed, never read.
    weights.retain(|name, _| !name.ends_with("rotary_emb.inv_freq"));
    if !weights.is_empty() {
        let names: Vec<&String> = weights.keys().take(5).collect();
        return Err(HfError::Weights { folder: folder.to_owned(), message: format!("{} unused tensors, e.g. {names:?}", weights.len()) });
    }
    Ok((config, model))
}

/// The model's weights by HF name and in HF layout, adapters merged into their layers.
pub fn merged_weights<B: Backend>(config: &ModelConfig, model: &CausalLm<B>) -> BTreeMap<String, (Vec<f32>, Vec<usize>)> {
    let values = |t: Tensor<B, 2>| -> (Vec<f32>, [usize; 2]) { (t.clone().into_data().convert::<f32>().to_vec().expect("f32 data"), t.dims()) };
    let vector = |t: Tensor<B, 1>| -> Vec<f32> { t.into_data().convert::<f32>().to_vec().expect("f32 data") };
    let mut out = BTreeMap::new();
    let put_linear = |out: &mut BTreeMap<String, (Vec<f32>, Vec<usize>)>, name: String, t: Tensor<B, 2>| {
        let (data, [rows, cols]) = values(t);
        out.insert(name, (transpose(&data, rows, cols), vec![cols, rows]));
    };
    let embed = model.embed_tokens.val();
    let dims = embed.dims();
    out.insert("model.embed_tokens.weight".into(), (values(embed).0, dims.to_vec()));
    for (i, layer) in model.layers.iter().enumerate() {
        let p = format!("model.layers.{i}");
        for (name, linear) in layer.projections() {
            let group = hf_group(name);
            put_linear(&mut out, format!("{p}.{group}.{name}.weight"), linear.merged_weight());
            if let Some(bias) = &linear.bias {
                let b = vector(bias.val());
                let len = b.len();
                out.insert(format!("{p}.{group}.{name}.bias"), (b, vec![len]));
            }
        }
        for (name, norm) in [("input_layernorm", &layer.input_layernorm), ("post_attention_layernorm", &layer.post_attention_layernorm)] {
            let w = vector(norm.weight.val());
            let len = w.len();
            out.insert(format!("{p}.{name}.weight"), (w, vec![len]));
        }
    }
    let w = vector(model.norm.weight.val());
    let len = w.len();
    out.insert("model.norm.weight".into(), (w, vec![len]));
    if let Some(head) = &model.lm_head {
        put_linear(&mut out, "lm_head.weight".into(), head.val());
    }
    debug_assert_eq!(out.len(), hf_shapes(config).len());
    out
}

/// Writes the model (adapters merged) as a Hugging Face folder: `config.json` and `model.safetensors`.
pub fn save_model<B: Backend>(folder: &Path, config: &ModelConfig, model: &CausalLm<B>) -> Result<(), HfError> {
    std::fs::create_dir_all(folder).map_err(|source| HfError::Io { path: folder.to_owned(), source })?;
    let config_path = folder.join("config.json");
    std::fs::write(&config_path, config.to_hf_json()).map_err(|source| HfError::Io { path: config_path, source })?;
    let metadata = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    write_safetensors(&folder.join("model.safetensors"), &merged_weights(config, model), Some(metadata))
}
