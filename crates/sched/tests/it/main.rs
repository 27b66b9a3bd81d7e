//! Integration tests for godwit-sched: properties of `place` over generated clusters.

mod props;
