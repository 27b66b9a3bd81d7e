//! godwit-sched: being built (see ARCHITECTURE.md).
