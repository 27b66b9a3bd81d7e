//! godwit-agent: being built (see ARCHITECTURE.md).
