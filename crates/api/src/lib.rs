//! godwit-api: being built (see ARCHITECTURE.md).
