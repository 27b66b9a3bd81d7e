//! godwit-image: being built (see ARCHITECTURE.md).
