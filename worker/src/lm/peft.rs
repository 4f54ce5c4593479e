//! LoRA adapters in PEFT's format, so `peft.PeftModel.from_pretrained(base, folder)` loads what we
//! train and we load what PEFT trains: `adapter_config.json` and `adapter_model.safetensors` with
//! keys `base_model.model.model.layers.{i}.{self_attn|mlp}.{proj}.lora_A.weight` (`[r, in]`) and
//! `...lora_B.weight` (`[out, r]`).
//!
//! Our adapters hold `A: [in, r]` and `B: [r, out]` (burn's layout), the transposes of PEFT's.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::Param;
use burn::prelude::*;
use serde_json::json;

use super::hf::{read_safetensors, transpose, write_safetensors, HfError};
use super::model::{hf_group, CausalLm, LoraConfig};

/// The file names PEFT uses.
pub const CONFIG_FILE: &str = "adapter_config.json";
/// The weights file PEFT uses.
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// The PEFT key of one adapter matrix (`which` is `A` or `B`).
pub(crate) fn key(layer: usize, projection: &str, which: &str) -> String {
    format!("base_model.model.model.layers.{layer}.{}.{projection}.lora_{which}.weight", hf_group(projection))
}

/// The `adapter_config.json` PEFT writes for this LoRA.
pub fn adapter_config_json(lora: &LoraConfig, base_model: &str) -> serde_json::Value {
    json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": lora.rank,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        "use_rslora": lora.use_rslora,
        "target_modules": lora.target_modules,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "modules_to_save": null,
        "layers_to_transform": null,
        "layers_pattern": null,
        "rank_pattern": {},
        "alpha_pattern": {},
        "use_dora": false,
        "revision": null,
    })
}

/// The adapter tensors by PEFT key, in PEFT's layout.
pub fn adapter_tensors<B: Backend>(model: &CausalLm<B>) -> BTreeMap<String, (Vec<f32>, Vec<usize>)> {
    let mut out = BTreeMap::new();
    for (layer, projection, lora) in model.adapters() {
        for (which, t) in [("A", lora.a.val()), ("B", lora.b.val())] {
            let [rows, cols] = t.dims();
            let data: Vec<f32> = t.into_data().convert::<f32>().to_vec().expect("f32 data");
            out.insert(key(layer, projection, which), (transpose(&data, rows, cols), vec![cols, rows]));
        }
    }
    out
}

/// Writes the model's adapters to `folder` in PEFT's format.
pub fn save_adapter<B: Backend>(folder: &Path, model: &CausalLm<B>, lora: &LoraConfig, base_model: &str) -> Result<(), HfError> {
    std::fs::create_dir_all(folder).map_err(|source| HfError::Io { path: folder.to_owned(), source })?;
    let config_path = folder.join(CONFIG_FILE);
    let text = serde_json::to_string_pretty(&adapter_config_json(lora, base_model)).expect("json");
    std::fs::write(&config_path, text).map_err(|source| HfError::Io { path: config_path, source })?;
    let metadata = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    write_safetensors(&folder.join(WEIGHTS_FILE), &adapter_tensors(model), Some(metadata))
}

/// Reads `adapter_config.json`: rank, alpha, dropout, rsLoRA and targets.
pub fn read_adapter_config(folder: &Path) -> Result<LoraConfig, HfError> {
    let path = folder.join(CONFIG_FILE);
    let bad = |message: String| HfError::Safetensors { path: path.clone(), message };
    let text = std::fs::read_to_string(&path).map_err(|source| HfError::Io { path: path.clone(), source })?;
    let raw: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if raw.get("peft_type").and_then(|v| v.as_str()) != Some("LORA") {
        return Err(bad("`peft_type` must be \"LORA\"".into()));
    }
    let rank = raw.get("r").and_then(|v| v.as_u64()).ok_or_else(|| bad("`r` must be a positive integer".into()))? as usize;
    let alpha = raw.get("lora_alpha").and_then(|v| v.as_f64()).ok_or_else(|| bad("`lora_alpha` must be a number".into()))?;
    let targets = match raw.get("target_modules") {
        Some(serde_json::Value::Array(items)) => items.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
        Some(serde_json::Value::String(one)) => vec![one.clone()],
        _ => return Err(bad("`target_modules` must be a list of projection names".into())),
    };
    let lora = LoraConfig {
        rank,
        alpha,
        dropout: raw.get("lora_dropout").and_then(|v| v.as_f64()).unwrap_or(0.0),
        use_rslora: raw.get("use_rslora").and_then(|v| v.as_bool()).unwrap_or(false),
        target_modules: targets,
    };
    lora.validate().map_err(bad)?;
    for unsupported in ["use_dora"] {
        if raw.get(unsupported).and_then(|v| v.as_bool()) == Some(true) {
            return Err(bad(format!("`{unsupported}` adapters are not supported")));
        }
    }
    Ok(lora)
}

/// Adds the adapter saved in `folder` (PEFT format) to `model`; every tensor must fit.
pub fn load_adapter<B: Backend>(folder: &Path, model: CausalLm<B>) -> Result<(LoraConfig, CausalLm<B>), HfError> {
    let lora = read_adapter_config(folder)?;
    let weights_path = folder.join(WEIGHTS_FILE);
    let mut tensors = read_safetensors(&weights_path)?;
    let mut model = model.add_lora(&lora, 0);
    let bad = |message: String| HfError::Weights { folder: folder.to_owned(), message };
    for (layer, projection, adapter) in model.adapters_mut() {
        for which in ["A", "B"] {
            let name = key(layer, projection, which);
            let (data, shape) = tensors.remove(&name).ok_or_else(|| bad(format!("missing tensor `{name}`")))?;
            let param = if which == "A" { &mut adapter.a } else { &mut adapter.b };
            let [rows, cols] = param.val().dims();
            if shape != [cols, rows] {
                return Err(bad(format!("tensor `{name}` has shape {shape:?}, expected {:?}", [cols, rows])));
            }
            let device = param.val().device();
            let value = Tensor::<B, 2>::from_data(TensorData::new(transpose(&data, cols, rows), [rows, cols]), &device);
            *param = Param::from_tensor(value);
        }
    }
    if !tensors.is_empty() {
        let names: Vec<&String> = tensors.keys().take(5).collect();
        return Err(bad(format!("{} tensors match no target layer, e.g. {names:?}", tensors.len())));
    }
    Ok((lora, model))
}
