//! The store writer (being written).
