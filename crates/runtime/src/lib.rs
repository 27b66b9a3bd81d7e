//! godwit-runtime: being built (see ARCHITECTURE.md).
