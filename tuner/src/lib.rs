//! Pure hyperparameter search (work in progress).
