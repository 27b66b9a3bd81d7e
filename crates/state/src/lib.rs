//! godwit-state: being built (see ARCHITECTURE.md).
