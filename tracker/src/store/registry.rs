//! Registered models, versions, tags, aliases and stages (work in progress).
