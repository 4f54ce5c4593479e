//! The MLflow REST protocol (`/api/2.0/mlflow/...`) as the mlflow 3.x client speaks it.
//!
//! Requests arrive either as JSON bodies (POST/PATCH/DELETE) or as query strings (GET), where every
//! value is a string and a repeated key is a list. The deserializers in [`flex`] accept both forms, so
//! one request type serves both. Required fields are `Option`s: the tracker reports a missing one
//! with MLflow's own message rather than a serde error.

use serde::{Deserialize, Serialize};

/// Lenient deserializers for proto3-over-JSON values.
pub mod flex {
    use serde::de::{self, Deserializer};
    use serde::{Deserialize, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrString {
        Int(i64),
        Float(f64),
        Str(String),
        Bool(bool),
    }

    /// An optional int64 sent as a JSON number or a string (proto3 JSON and query strings).
    pub fn opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        match Option::<NumOrString>::deserialize(d)? {
            None => Ok(None),
            Some(NumOrString::Int(i)) => Ok(Some(i)),
            Some(NumOrString::Float(f)) if f.fract() == 0.0 && f.abs() < 9.2e18 => Ok(Some(f as i64)),
            Some(NumOrString::Str(s)) if s.is_empty() => Ok(None),
            Some(NumOrString::Str(s)) => s
                .trim()
                .parse::<i64>()
                .map(Some)
                .map_err(|_| de::Error::custom(format!("expected an integer, got '{s}'"))),
            Some(_) => Err(de::Error::custom("expected an integer")),
        }
    }

    /// An optional double sent as a JSON number or as `"NaN"`, `"Infinity"`, `"-Infinity"` or a
    /// numeric string.
    pub fn opt_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        match Option::<NumOrString>::deserialize(d)? {
            None => Ok(None),
            Some(NumOrString::Int(i)) => Ok(Some(i as f64)),
            Some(NumOrString::Float(f)) => Ok(Some(f)),
            Some(NumOrString::Str(s)) => parse_f64(&s).map(Some).ok_or_else(|| de::Error::custom(format!("expected a number, got '{s}'"))),
            Some(NumOrString::Bool(_)) => Err(de::Error::custom("expected a number")),
        }
    }

    /// Parses a double the way proto3 JSON writes one.
    pub fn parse_f64(s: &str) -> Option<f64> {
        match s.trim() {
            "NaN" | "nan" => Some(f64::NAN),
            "Infinity" | "inf" | "+Infinity" => Some(f64::INFINITY),
            "-Infinity" | "-inf" => Some(f64::NEG_INFINITY),
            other => other.parse::<f64>().ok(),
        }
    }

    /// An optional bool sent as a JSON bool or as `"true"`/`"false"`.
    pub fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
        match Option::<NumOrString>::deserialize(d)? {
            None => Ok(None),
            Some(NumOrString::Bool(b)) => Ok(Some(b)),
            Some(NumOrString::Str(s)) => match s.to_ascii_lowercase().as_str() {
                "true" => Ok(Some(true)),
                "false" | "" => Ok(Some(false)),
                _ => Err(de::Error::custom(format!("expected a boolean, got '{s}'"))),
            },
            Some(_) => Err(de::Error::custom("expected a boolean")),
        }
    }

    /// An optional string; numbers are accepted and written out, as protobuf's parser does for ids
    /// that clients send unquoted (`"experiment_id": 1`).
    pub fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        match Option::<NumOrString>::deserialize(d)? {
            None => Ok(None),
            Some(NumOrString::Str(s)) => Ok(Some(s)),
            Some(NumOrString::Int(i)) => Ok(Some(i.to_string())),
            Some(NumOrString::Float(f)) => Ok(Some(f.to_string())),
            Some(NumOrString::Bool(b)) => Ok(Some(b.to_string())),
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        Many(Vec<String>),
        One(String),
    }

    /// A list of strings; a query string with a single occurrence of the key gives one string.
    pub fn vec_string<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        match Option::<OneOrMany>::deserialize(d)? {
            None => Ok(Vec::new()),
            Some(OneOrMany::Many(v)) => Ok(v),
            Some(OneOrMany::One(s)) => Ok(vec![s]),
        }
    }

    /// Writes a double as MLflow does: NaN and infinities as proto3 JSON strings.
    pub fn ser_f64<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_nan() {
            s.serialize_str("NaN")
        } else if *v == f64::INFINITY {
            s.serialize_str("Infinity")
        } else if *v == f64::NEG_INFINITY {
            s.serialize_str("-Infinity")
        } else {
            s.serialize_f64(*v)
        }
    }
}

/// A `{key, value}` pair: experiment, run, model and version tags, and params.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    /// The key.
    #[serde(default, deserialize_with = "flex::opt_string")]
    pub key: Option<String>,
    /// The value.
    #[serde(default, deserialize_with = "flex::opt_string")]
    pub value: Option<String>,
}

/// A tag or param as the server returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
}

/// An experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Experiment {
    /// Numeric id, as a string.
    pub experiment_id: String,
    /// Unique name.
    pub name: String,
    /// `mlflow-artifacts:/<id>` unless the creator chose another.
    pub artifact_location: String,
    /// `active` or `deleted`.
    pub lifecycle_stage: String,
    /// Milliseconds since the epoch.
    pub last_update_time: i64,
    /// Milliseconds since the epoch.
    pub creation_time: i64,
    /// Experiment tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
}

/// A run's metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// 32 hex characters.
    pub run_id: String,
    /// The same id, under its legacy name.
    pub run_uuid: String,
    /// Display name.
    pub run_name: String,
    /// Owning experiment, as a string.
    pub experiment_id: String,
    /// Who started the run.
    pub user_id: String,
    /// RUNNING, SCHEDULED, FINISHED, FAILED or KILLED.
    pub status: String,
    /// Milliseconds since the epoch.
    pub start_time: i64,
    /// Milliseconds since the epoch, once the run ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<i64>,
    /// `mlflow-artifacts:/<exp>/<run>/artifacts`.
    pub artifact_uri: String,
    /// `active` or `deleted`.
    pub lifecycle_stage: String,
}

/// One metric point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// Metric name.
    pub key: String,
    /// Value; NaN is written as `"NaN"`.
    #[serde(serialize_with = "flex::ser_f64", deserialize_with = "de_f64")]
    pub value: f64,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    /// Training step.
    pub step: i64,
    /// Dataset the value was computed on, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_name: Option<String>,
    /// Digest of that dataset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_digest: Option<String>,
    /// Logged model the value belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
    /// The run, where a response mixes runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
}

fn de_f64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    flex::opt_f64(d)?.ok_or_else(|| serde::de::Error::custom("missing number"))
}

/// A metric point as a client sends it in `log-batch`: every field may be missing or stringly typed.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct MetricInput {
    /// Metric name.
    #[serde(default, deserialize_with = "flex::opt_string")]
    pub key: Option<String>,
    /// Value.
    #[serde(default, deserialize_with = "flex::opt_f64")]
    pub value: Option<f64>,
    /// Milliseconds since the epoch.
    #[serde(default, deserialize_with = "flex::opt_i64")]
    pub timestamp: Option<i64>,
    /// Step, 0 when absent.
    #[serde(default, deserialize_with = "flex::opt_i64")]
    pub step: Option<i64>,
    /// Optional dataset name.
    #[serde(default, deserialize_with = "flex::opt_string")]
    pub dataset_name: Option<String>,
    /// Optional dataset digest.
    #[serde(default, deserialize_with = "flex::opt_string")]
    pub dataset_digest: Option<String>,
    /// Optional logged model id.
    #[serde(default, deserialize_with = "flex::opt_string")]
    pub model_id: Option<String>,
}

/// Params, tags and latest metrics of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunData {
    /// The latest point of every metric key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<Metric>,
    /// Params.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<Tag>,
    /// Tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
}

/// A dataset as logged by `mlflow.log_input`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Dataset {
    /// Dataset name.
    #[serde(default)]
    pub name: String,
    /// Content digest.
    #[serde(default)]
    pub digest: String,
    /// Source kind, e.g. `local` or `http`.
    #[serde(default)]
    pub source_type: String,
    /// Source description (a JSON string).
    #[serde(default)]
    pub source: String,
    /// Schema (a JSON string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Profile (a JSON string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

/// A dataset used by a run, with tags such as `mlflow.data.context`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DatasetInput {
    /// Input tags.
    #[serde(default)]
    pub tags: Vec<Tag>,
    /// The dataset.
    #[serde(default)]
    pub dataset: Dataset,
}

/// A logged model that a run took as input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInput {
    /// `m-<32 hex>`.
    pub model_id: String,
}

/// A logged model that a run produced, at a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelOutput {
    /// `m-<32 hex>`.
    #[serde(default, deserialize_with = "flex::opt_string")]
    pub model_id: Option<String>,
    /// Step at which the model was produced.
    #[serde(default, deserialize_with = "flex::opt_i64")]
    pub step: Option<i64>,
}

/// A run's inputs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunInputs {
    /// Datasets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dataset_inputs: Vec<DatasetInput>,
    /// Logged models taken as input.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub model_inputs: Vec<ModelInput>,
}

/// A run's outputs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunOutputs {
    /// Logged models produced by the run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub model_outputs: Vec<ModelOutput>,
}

/// A run with everything logged to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// Metadata.
    pub info: RunInfo,
    /// Params, tags, latest metrics.
    pub data: RunData,
    /// Datasets and models used.
    pub inputs: RunInputs,
    /// Models produced.
    pub outputs: RunOutputs,
}

/// An entry of an artifact listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileInfo {
    /// Path relative to the listed folder.
    pub path: String,
    /// Whether this is a folder.
    pub is_dir: bool,
    /// Size in bytes; absent for folders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_size: Option<i64>,
}

/// Fields of every tracking request, GET or POST. Each endpoint reads the ones it needs; the
/// tracker checks required ones itself so the message matches MLflow's.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Request {
    /// Experiment id.
    #[serde(default, deserialize_with = "flex::opt_string")]
    pub experiment_id: Option<String>,
    /// Experiment ids (search).
    #[serde(default, deserialize_with = "flex::vec_string")]
    pub experiment_ids: Vec<String>,
    /// Experiment name (get-by-name).
    #[serde(default, deserialize_with = "flex::opt_string")]
    pub experiment_name: Option<String>,
    /// Name (experiments/create, logged models, registry): a JSON string, never a number, as in
    /// MLflow's proto.
    #[serde(default)]
    pub name: Option<String>,
    /// New name (experiments/update, registry rename).
    #[serde(default, deserialize_with = "flex::opt_string")]
    pub new_name: Option<String>,
    /// Artifact location (experiments/create).
    #[serde(default, deserialize_with = "flex::opt_string")]
    pub artifact_location: Option<String>,
    /// Run id.
    #[serde(default, deserialize_with = "flex::opt_string")]
    pub run_id: Option<String>,
    /// Run id, legacy name.
    #[serde(default, deserialize_with = "flex::opt_string")]
    pub run_uuid: Option<String>,
    /// Run name.
    #[serde(default, deserialize_with = "flex::opt_string")]
    pub run_name: Option<String>,
    /// User (runs/create).
    #[serde(default, deserialize_with = "flex::opt_string")]
    pub user_id: Option<String>,
    /// Run status (runs/update).
    #[serde(default, deserialize_with = "flex::opt_string")]
    pub status: Option<String>,
    /// Start time in ms.
    #[serde(default, deserialize_with = "flex::opt_i64")]
    pub start_time: Option<i64>,
    /// End time in ms.
    #[serde(default, deserialize_with = "flex::opt_i64")]
    pub end_time: Option<i64>,
    /// Key (log-metric, log-parameter, set-tag, delete-tag).
    #[serde(default, deserialize_with = "flex::opt_string")]
    pub key: Option<String>,
    /// Value as a string (log-parameter, set-tag). log-metric reads [`Request::metric_value`].
    #[serde(default)]
    pub value: Option<serde_json::Value>,
    /// Timestamp in ms (log-metric).
    #[serde(default, deserialize_with = "flex::opt_i64")]
    pub timestamp: Option<i64>,
    /// Step (log-metric).
    #[serde(default, deserialize_with = "flex::opt_i64")]
    pub step: Option<i64>,
    /// Logged model id (log-metric, logged models).
    #[serde(default, deserialize_with = "flex::opt_string")]
    pub model_id: Option<String>,
    /// Dataset name (log-metric).
    #[serde(default, deserialize_with = "flex::opt_string")]
    pub dataset_name: Option<String>,
    /// Dataset digest (log-metric).
    #[serde(default, deserialize_with = "flex::opt_string")]
    pub dataset_digest: Option<String>,
    /// Tags (create calls, log-batch, logged-model tags).
    #[serde(default)]
    pub tags: Option<Vec<KeyValue>>,
    /// Params (log-batch, logged models).
    #[serde(default)]
    pub params: Option<Vec<KeyValue>>,
    /// Metrics (log-batch).
    #[serde(default)]
    pub metrics: Option<Vec<MetricInput>>,
    /// Datasets (log-inputs).
    #[serde(default)]
    pub datasets: Option<Vec<DatasetInput>>,
    /// Models (log-inputs, outputs).
    #[serde(default)]
    pub models: Option<Vec<ModelOutput>>,
    /// Metric key (get-history).
    #[serde(default, deserialize_with = "flex::opt_string")]
    pub metric_key: Option<String>,
    /// Search filter.
    #[serde(default, deserialize_with = "flex::opt_string")]
    pub filter: Option<String>,
    /// Search filter, as the registry endpoints name it.
    #[serde(default, deserialize_with = "flex::opt_string")]
    pub filter_string: Option<String>,
    /// Page size.
    #[serde(default, deserialize_with = "flex::opt_i64")]
    pub max_results: Option<i64>,
    /// Sort keys.
    #[serde(default, deserialize_with = "flex::vec_string")]
    pub order_by: Vec<String>,
    /// Opaque paging token.
    #[serde(default, deserialize_with = "flex::opt_string")]
    pub page_token: Option<String>,
    /// ACTIVE_ONLY, DELETED_ONLY or ALL (runs/search).
    #[serde(default, deserialize_with = "flex::opt_string")]
    pub run_view_type: Option<String>,
    /// ACTIVE_ONLY, DELETED_ONLY or ALL (experiments/search).
    #[serde(default, deserialize_with = "flex::opt_string")]
    pub view_type: Option<String>,
    /// Source run (logged models).
    #[serde(default, deserialize_with = "flex::opt_string")]
    pub source_run_id: Option<String>,
    /// Model type (logged models).
    #[serde(default, deserialize_with = "flex::opt_string")]
    pub model_type: Option<String>,
    /// Registry: version number.
    #[serde(default, deserialize_with = "flex::opt_string")]
    pub version: Option<String>,
    /// Registry: alias.
    #[serde(default, deserialize_with = "flex::opt_string")]
    pub alias: Option<String>,
    /// Registry: stage.
    #[serde(default, deserialize_with = "flex::opt_string")]
    pub stage: Option<String>,
    /// Registry: stages (get-latest-versions).
    #[serde(default, deserialize_with = "flex::vec_string")]
    pub stages: Vec<String>,
    /// Registry: archive other versions in the target stage.
    #[serde(default, deserialize_with = "flex::opt_bool")]
    pub archive_existing_versions: Option<bool>,
    /// Registry: description.
    #[serde(default, deserialize_with = "flex::opt_string")]
    pub description: Option<String>,
    /// Registry: source URI of a version.
    #[serde(default, deserialize_with = "flex::opt_string")]
    pub source: Option<String>,
    /// Registry: link to the source run.
    #[serde(default, deserialize_with = "flex::opt_string")]
    pub run_link: Option<String>,
}

/// A logged model's metadata (MLflow 3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedModelInfo {
    /// `m-<32 hex>`.
    pub model_id: String,
    /// Owning experiment.
    pub experiment_id: String,
    /// Model name within the run (`name=` of `log_model`).
    pub name: String,
    /// Milliseconds since the epoch.
    pub creation_timestamp_ms: i64,
    /// Milliseconds since the epoch.
    pub last_updated_timestamp_ms: i64,
    /// `mlflow-artifacts:/<exp>/models/<model_id>/artifacts`.
    pub artifact_uri: String,
    /// LOGGED_MODEL_PENDING, LOGGED_MODEL_READY or LOGGED_MODEL_UPLOAD_FAILED.
    pub status: String,
    /// Free-form model type.
    pub model_type: String,
    /// The run that logged it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_run_id: Option<String>,
    /// Model tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
}

/// A logged model's params and the metrics logged against it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoggedModelData {
    /// Params.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<Tag>,
    /// Metrics logged with this `model_id`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<Metric>,
}

/// A logged model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedModel {
    /// Metadata.
    pub info: LoggedModelInfo,
    /// Params and metrics.
    pub data: LoggedModelData,
}

/// An alias of a registered model and the version it points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisteredModelAlias {
    /// The alias, such as `champion`.
    pub alias: String,
    /// The version number, as a string.
    pub version: String,
}

/// A registered model of the model registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisteredModel {
    /// Unique name.
    pub name: String,
    /// Creation time in ms.
    pub creation_timestamp: i64,
    /// Last change in ms.
    pub last_updated_timestamp: i64,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Who created it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user_id: String,
    /// The newest version in each stage.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latest_versions: Vec<ModelVersion>,
    /// Tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
    /// Aliases and their versions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<RegisteredModelAlias>,
}

/// A version of a registered model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelVersion {
    /// The registered model's name.
    pub name: String,
    /// Version number, as a string.
    pub version: String,
    /// Creation time in ms.
    pub creation_timestamp: i64,
    /// Last change in ms.
    pub last_updated_timestamp: i64,
    /// Who created it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user_id: String,
    /// Legacy stage: None, Staging, Production or Archived.
    pub current_stage: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Where the model's files are (`runs:/<id>/path`, `models:/m-<id>`, or an artifact URI).
    pub source: String,
    /// The run that produced it.
    #[serde(default)]
    pub run_id: String,
    /// Always READY: versions are registered synchronously.
    pub status: String,
    /// Link to the run.
    #[serde(default)]
    pub run_link: String,
    /// Tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
    /// Aliases pointing at this version.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// The logged model it was registered from (MLflow 3).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub model_id: String,
}
