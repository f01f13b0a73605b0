//! Failure handling on the real broker: poison rows, dead letters, head-of-line blocking.
