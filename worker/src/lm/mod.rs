//! The Korean LoRA trainer on burn: a Llama/Qwen2 decoder with LoRA ([`model`]), Hugging Face
//! folders ([`hf`]), PEFT adapters ([`peft`]), tokenizers ([`tokenizer`]), the optimizer
//! ([`optim`]), the training loop with checkpoints ([`training`]), evaluation ([`eval`]) and
//! generation ([`generate`]).
//!
//! burn stays inside this module: the agent and the CLI see configs, paths and metrics.

pub mod base;
pub mod eval;
pub mod generate;
pub mod hf;
pub mod model;
pub mod optim;
pub mod peft;
pub mod tokenizer;
pub mod training;
pub mod trial;

/// The CPU backend used by tests, the demo and CPU workers.
pub type CpuBackend = burn::backend::Flex;
/// [`CpuBackend`] with autodiff, for training.
pub type CpuTrainBackend = burn::backend::Autodiff<CpuBackend>;

/// The backend `worker train`, `worker generate` and the `korean-lora` trainer run on: CUDA
/// (device 0) when built with `--features cuda`, the CPU otherwise.
#[cfg(feature = "cuda")]
pub type Backend = burn::backend::Cuda;
/// The backend `worker train`, `worker generate` and the `korean-lora` trainer run on: CUDA
/// (device 0) when built with `--features cuda`, the CPU otherwise.
#[cfg(not(feature = "cuda"))]
pub type Backend = CpuBackend;
/// [`Backend`] with autodiff, for training.
pub type TrainBackend = burn::backend::Autodiff<Backend>;
